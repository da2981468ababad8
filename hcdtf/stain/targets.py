"""Stain targets fitted to a run's own training data: ``data.stain_target: train``.

With ``data.stain_normalize: macenko|reinhard`` and ``data.stain_target: train``, the target is
fitted when the model is built to the first ``TRAIN_TARGET_PATCHES`` patches of the training split
as the run reads it (its centres only, with ``data.centres``; no augmentation), all pixels together
as one image (torchstain's ``fit``). It is a function of the build and the config, so a resumed run
fits the same target; it is saved inside the model like a target file's.
"""

from __future__ import annotations

import dataclasses

TRAIN_TARGET = "train"  # the value of data.stain_target that asks for this
TRAIN_TARGET_PATCHES = 256


def fit_training_target(data_cfg, method: str, n: int = TRAIN_TARGET_PATCHES) -> dict:
    """The ``method`` target fitted to the first ``n`` training patches of ``data_cfg``."""
    import numpy as np

    from hcdtf.data import pipeline
    from hcdtf.models import stain

    cfg = dataclasses.replace(data_cfg, augment=False, cache=False)
    images = []
    ds = pipeline.make_dataset(cfg, cfg.train_split, batch_size=64, training=False)
    for x, _ in ds.as_numpy_iterator():
        images.append(x)
        if sum(len(b) for b in images) >= n:
            break
    if not images:
        raise stain.TargetError(f"data.stain_target=train: the training split {cfg.train_split!r} is empty")
    batch = np.concatenate(images)[:n]
    target = stain.fit_target(list(batch), method)
    target["fitted_to"] = f"first {len(batch)} patches of the training split"
    return target
