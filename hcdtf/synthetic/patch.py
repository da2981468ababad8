"""One synthetic H&E patch and its tumour mask (:func:`generate_patch`), composed from the
tumour, the tissue components and the optics."""

from __future__ import annotations

import math

import numpy as np

import hcdtf.synthetic.carpets as carpets
import hcdtf.synthetic.stamps as stamps
import hcdtf.synthetic.textures as textures
import hcdtf.synthetic.tissue as tissue
import hcdtf.synthetic.tumour as tumour
from hcdtf.synthetic.draws import Draws
from hcdtf.synthetic.geometry import CENTRE, PATCH_SIZE
from hcdtf.synthetic.optics import Stain, render


def generate_patch(rng: np.random.Generator, label: int, centre=None) -> tuple[np.ndarray, np.ndarray]:
    """Draw one synthetic H&E patch with the given label.

    Args:
        rng: the patch's own random stream; the patch is a function of it alone (the lookup
            tables every patch shares are fixed), so the same stream state gives the same
            patch in any process. The call advances `rng` by an amount that depends on what
            the patch contains.
        label: 1 for a patch with tumour cells in its centre 32x32 region, 0 for one without
            (about 30% of the negatives have tumour cells outside it).
        centre: None (the reference look) or a :class:`hcdtf.synthetic.centres.CentreLook`: how
            the patch's hospital stains and scans it (the same stream gives the same tissue).

    Returns:
        ``(image, tumour_mask)``: ``image`` is uint8 (96, 96, 3) RGB; ``tumour_mask`` is bool
        (96, 96), True on the pixels of tumour cells (cell bodies covering more than half the
        pixel). The PCam rule ``label == tumour_mask[32:64, 32:64].any()`` holds exactly, and
        a negative's tumour pixels lie more than ``tumour.NEG_MARGIN`` px from that region.

    Raises:
        ValueError: `label` is not 0 or 1.
    """
    label = int(label)
    if label not in (0, 1):
        raise ValueError(f"label must be 0 or 1, got {label}")
    d = Draws(rng)
    # The tumour first: the other tissue is laid out around it.
    cancer = tumour.place(d, label)
    where = tissue.layout(d, cancer)
    stain = Stain()
    fine = tissue.background(d, stain, where.histiocytes)
    fibre_angle = d.uni(0, math.pi)  # (drawn with or without stroma: the draw order is part of the output)
    if where.stroma is not None:
        tissue.collagen(d, stain, where.stroma, fine, fibre_angle)
    if where.fat is not None:
        tissue.adipocytes(d, stain, where.fat)
    vessel = tissue.vessel(d, stain, cancer)
    if where.edge is not None:
        tissue.clear_glass(stain, where.edge)
    if cancer is not None:
        tumour.paint(d, stain, cancer, fine)
    free = tissue.room_for_nuclei(vessel, cancer)
    tissue.lymphoid(d, stain, where, free)
    if where.histiocytes is not None:
        tissue.histiocyte_nuclei(d, stain, where, free)
    if where.stroma is not None:
        tissue.fibroblasts(d, stain, where, free, fibre_angle)
    if vessel is not None:
        tissue.endothelium(d, stain, vessel)
    tissue.chromatin(d, stain)
    image = render(d, stain, centre)
    if cancer is None:
        return image, np.zeros((PATCH_SIZE, PATCH_SIZE), bool)
    if bool(cancer.mask[CENTRE, CENTRE].any()) != bool(label):  # construction guarantees this
        raise AssertionError("synthetic patch violates the PCam centre rule")
    return image, cancer.mask


def warm_up() -> None:
    """Build every lookup table a patch may use now, rather than on first use: a forked
    worker then inherits them instead of building its own."""
    textures.warm_up()
    stamps.warm_up()
    carpets.warm_up()
    tumour.warm_up()
