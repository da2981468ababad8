"""Synthetic stand-in for the Kaggle Histopathologic Cancer Detection data: H&E lymph-node
patches from a small generative model of the tissue, written in the Kaggle layout.

The real data (96x96 RGB crops of H&E-stained lymph-node sections at 10x, from
PCam/Camelyon16) cannot be downloaded here, so the quick start and the tests use this
sample; it goes through the same TFDS builder as the real files.

Public API (everything else in the subpackage is internal):

* :func:`write_sample` writes a sample in the Kaggle layout (:mod:`.kaggle`) and returns a
  :class:`SampleInfo`;
* :func:`generate_arrays` gives the same patches as arrays, with their labels and tumour masks;
* :func:`generate_patch` draws one patch with a given label from a random stream, and returns
  it with its tumour mask (what a whole-slide generator builds on);
* :func:`make_id` draws a Kaggle-style id; ``PATCH_SIZE`` and ``CENTRE`` (the centre region of
  the label rule).

The model (one module per part): the tumour and the label rule (:mod:`.tumour`), the tissue
around it, one function per component (:mod:`.tissue`), Beer-Lambert optics with stain
variation, blur and sensor noise (:mod:`.optics`); built from pre-rendered lookup tables
(:mod:`.tables`, :mod:`.textures`, :mod:`.stamps`, :mod:`.carpets`) so that a patch is a few
hundred whole-array operations and nothing is evaluated per object on the whole image.

Only the tumour cells give the label away: which background tissue a patch shows, and its
colour and brightness, are drawn independently of the label, so pixel statistics are a weak
classifier and a small CNN a strong one (as on the real data; figures in README.md).

Determinism: patch ``i`` of split ``s`` (0 = train, 1 = test) is drawn from its own stream
``numpy.random.SeedSequence(seed, spawn_key=(s, i))``, so a sample depends only on ``seed``
(not on ``workers`` or chunking), and the arrays of :func:`generate_arrays` are
pixel-identical to the files of :func:`write_sample`.
"""

from hcdtf.synthetic.geometry import CENTRE, PATCH_SIZE
from hcdtf.synthetic.kaggle import SampleInfo, write_sample
from hcdtf.synthetic.patch import generate_patch
from hcdtf.synthetic.streams import generate_arrays, make_id

__all__ = [
    "PATCH_SIZE",
    "CENTRE",
    "SampleInfo",
    "generate_patch",
    "make_id",
    "generate_arrays",
    "write_sample",
]
