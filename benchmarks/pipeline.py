"""Input pipeline alone against the train step alone: is training input-bound?

The pipeline is ``hcdtf.data.pipeline.make_dataset(cfg.data, "train", B, training=True)`` over the built
``hcd/kaggle`` TFDS data set (TFRecord reading, PNG decoding, shuffling, batching, prefetch),
iterated to the end of an epoch with nothing consuming the batches. Four variants:

* ``read``:                 no augmentation, no cache (decode every PNG every epoch)
* ``read_cache``:           no augmentation, ``data.cache=true`` (decoded patches kept in memory;
                            measured from the second epoch on, the first fills the cache)
* ``read_augment``:         augmentation, no cache -- hcdtf's training default
* ``read_cache_augment``:   augmentation on cached patches

The train step is hcdtf's ResNet fine-tuning step on one in-memory batch (see
``benchmarks.training``), measured in the same rounds. The ratio pipeline / train step says how
many times faster the pipeline delivers patches than training consumes them; because both run on
the same cores, its inverse is roughly the share of the CPU that the pipeline takes away from
training. Target: ``read_augment`` >= 5x ResNet18 training.
"""

from __future__ import annotations

import time

from benchmarks import common, training

VARIANTS = {
    "read": ("data.augment=false", "data.cache=false"),
    "read_cache": ("data.augment=false", "data.cache=true"),
    "read_augment": ("data.augment=true", "data.cache=false"),
    "read_cache_augment": ("data.augment=true", "data.cache=true"),
}
TARGET_VARIANT = "read_augment"


def figure_pipeline(session) -> dict:
    from hcdtf.data import pipeline as data

    b = session.batch_size
    n_train = session.workspace.splits()["train"]
    log = common.LoadLog()

    class Epochs:
        """``epochs`` whole epochs of one pipeline (as many as fill about rep_seconds / 2)."""

        def __init__(self, ds):
            self.ds, self.epochs = ds, 1

        def __call__(self):
            n = 0
            for _ in range(self.epochs):
                for x, _ in self.ds:
                    n += int(x.shape[0])
            return n

    variants, epochs = {}, {}
    for name, overrides in VARIANTS.items():
        cfg = session.workspace.config(*overrides, f"train.batch_size={b}")
        run = Epochs(data.make_dataset(cfg.data, cfg.data.train_split, b, training=True, seed=session.seed))
        run()  # warm-up epoch: fills the cache, lets tf.data autotune settle
        t = time.perf_counter()
        run()
        run.epochs = epochs[name] = common.steps_for(time.perf_counter() - t, session.rep_seconds / 2, max_steps=50)
        variants[name] = run
    archs = ["ResNet18"] if session.quick else [a for a in session.archs if a in ("ResNet18", "ResNet50")] or ["ResNet18"]
    if "ResNet18" not in archs:
        archs.insert(0, "ResNet18")
    trainers = {f"train_step/{a}": training.get_trainer(session, a) for a in archs}
    runs = common.interleaved({**variants, **trainers}, session.reps, log)

    results = {k: runs[k].stats() for k in variants}
    results.update({k: runs[k].stats(**trainers[k].info()) for k in trainers})
    ratios = {}
    for v in variants:
        for k in trainers:
            ratios[f"{v} / {k}"] = common.rate_ratio(runs[v], runs[k])
    ref = ratios[f"{TARGET_VARIANT} / train_step/ResNet18"]
    training.release_trainers(session, keep=[training._ref_key(session), training._ref_key(session, batch=session.precision_batch)])
    return {
        "description": "Input pipeline alone (hcdtf.data.pipeline.make_dataset over the built TFDS data set, training=True, "
                       "iterated with nothing consuming the batches) against the fine-tuning train step alone on "
                       "an in-memory batch, measured in the same rounds. ratio = pipeline patches/s / train "
                       "images/s; >= 5 means the pipeline needs at most ~1/5 of the CPU that training needs.",
        "unit": "patches/s",
        "examples_per_epoch": n_train,
        "epochs_per_rep": epochs,
        "batch": b,
        "load_avg": log.to_dict(),
        "results": results,
        "ratios": ratios,
        "targets": {"pipeline_ge_5x_resnet18_training": common.target(
            ref["median"], 5.0, f"{TARGET_VARIANT} patches/s / ResNet18 fine-tuning images/s")},
    }
