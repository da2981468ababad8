"""Training figures: train-step throughput per arch and strategy (with achieved FLOP/s), precision
and XLA, the frozen-base feature cache, and ResNet-50 in Keras vs PyTorch under CPU settings.

The train step is hcdtf's: ``hcdtf.models.build_classifier`` (random weights) compiled with
``hcdtf.training.train.compile_model`` (Adam, binary cross-entropy, AUC and accuracy metrics, ``jit_compile``
from the config), called with ``train_on_batch`` on one in-memory batch of synthetic patches
(uint8 [B, 96, 96, 3]), so no input pipeline is involved. The first call traces (and with XLA
compiles) the step; it is reported as ``first_step_s`` and never timed as throughput.

The frameworks figure runs each TensorFlow setting that must be fixed before TensorFlow starts
(``TF_ENABLE_ONEDNN_OPTS``, ``tf.config.threading``) in its own worker process
(``python -m benchmarks.training --worker SPEC``); the driver starts the workers one after the
other, lets each build and warm up its models, then asks them in turn for one repetition each, so
all settings are measured side by side under the same machine load.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import subprocess
import sys
import tempfile
import time

from benchmarks import common

ARCH_DEFAULTS = ("ResNet18", "ResNet34", "ResNet50")


# ----------------------------------------------------------------------------- train step
class TrainStep:
    """One compiled hcdtf classifier and one in-memory batch; calling it runs ``steps`` steps."""

    def __init__(self, arch: str, strategy: str = "fine_tune", precision: str = "float32",
                 jit: bool = False, batch: int = 32, seed: int = 0):
        self.arch, self.strategy, self.precision, self.jit, self.batch = arch, strategy, precision, jit, batch
        self.seed = seed
        self.steps = 1
        self.first_step_s = self.step_s = None
        self.model = None

    @property
    def label(self) -> str:
        return f"{self.arch}/{self.strategy}/{self.precision}/xla_{'on' if self.jit else 'off'}/b{self.batch}"

    def build(self) -> "TrainStep":
        import keras
        import numpy as np
        import tensorflow as tf

        from hcdtf import models, synthetic
        from hcdtf.training import train
        from hcdtf.config import load_config

        cfg = load_config([], [f"train.jit_compile='{self.jit}'", f"train.batch_size={self.batch}",
                               f"train.precision={self.precision}", "train.schedule=constant",
                               f"deterministic={'false' if self.jit else 'true'}"])
        keras.mixed_precision.set_global_policy(self.precision)
        try:
            with self._determinism():
                self.model = models.build_classifier(self.arch, weights=None, transfer=self.strategy)
                train.compile_model(self.model, cfg, steps_per_epoch=100)
        finally:
            keras.mixed_precision.set_global_policy("float32")
        self.xla = bool(self.model.jit_compile)
        if self.xla != self.jit:
            raise RuntimeError(f"{self.label}: Keras compiled with jit_compile={self.model.jit_compile}")
        images, labels, _ = synthetic.generate_arrays(self.batch, seed=self.seed)
        self.x = tf.constant(images)
        self.y = tf.constant(labels.astype(np.float32))
        self.flops_forward = int(models.flops_per_image(self.model))
        self.params_trainable = int(sum(int(np.prod(w.shape)) for w in self.model.trainable_weights))
        return self

    @contextlib.contextmanager
    def _determinism(self):
        """Op determinism off while an XLA variant is built, traced or run, as
        `--set deterministic=false` would have it for the whole process: Keras compiles without
        XLA while determinism is on, and TensorFlow has no deterministic XLA MaxPool gradient."""
        from tensorflow.python.framework import config as tf_config

        was_on = tf_config.is_op_determinism_enabled()
        if self.jit and was_on:
            tf_config.disable_op_determinism()
        try:
            yield
        finally:
            if self.jit and was_on:
                tf_config.enable_op_determinism()

    def warm(self, target_seconds: float) -> "TrainStep":
        with self._determinism():
            return self._warm(target_seconds)

    def _warm(self, target_seconds: float) -> "TrainStep":
        t = time.perf_counter()
        self.model.train_on_batch(self.x, self.y)
        self.first_step_s = time.perf_counter() - t
        t = time.perf_counter()
        self.model.train_on_batch(self.x, self.y)
        self.step_s = time.perf_counter() - t
        self.steps = common.steps_for(self.step_s, target_seconds)
        return self

    def __call__(self) -> int:
        with self._determinism():
            for _ in range(self.steps):
                self.model.train_on_batch(self.x, self.y)
        return self.steps * self.batch

    @property
    def flops_multiplier(self) -> float:
        # Training with a trainable base: forward + backward (gradients w.r.t. activations and
        # weights, each ~ one forward) = 3x forward. Frozen base: its forward only (the head's
        # forward/backward is 2 x 2048 FLOPs, negligible).
        return 3.0 if self.strategy == "fine_tune" else 1.0

    def info(self) -> dict:
        return {"first_step_s": round(self.first_step_s, 2), "warm_step_s": round(self.step_s, 3), "xla": self.xla,
                "steps_per_rep": self.steps, "batch": self.batch, "flops_forward_per_image": self.flops_forward,
                "params_trainable": self.params_trainable}


def get_trainer(session, arch: str, strategy: str = "fine_tune", precision: str = "float32",
                jit: bool = False, batch: int | None = None) -> TrainStep:
    """Built and warmed trainers are kept while figures share them (the ResNet18 float32 step is
    the reference of three figures), so they are not traced again."""
    batch = batch or session.batch_size
    key = ("train", arch, strategy, precision, jit, batch)
    if key not in session.cache:
        t = TrainStep(arch, strategy, precision, jit, batch, seed=session.seed)
        session.log(f"  building and warming up {t.label}")
        session.cache[key] = t.build().warm(session.rep_seconds)
        session.log(f"    first step {t.first_step_s:.1f} s, then {t.step_s:.2f} s/step")
    return session.cache[key]


def release_trainers(session, keep=()) -> None:
    keep = set(keep)
    for key in [k for k in session.cache if k[0] == "train" and k not in keep]:
        del session.cache[key]
    gc.collect()


def _ref_key(session, arch="ResNet18", batch=None):
    return ("train", arch, "fine_tune", "float32", False, batch or session.batch_size)


# ----------------------------------------------------------------------------- figure: training
def figure_training(session) -> dict:
    peak = session.machine.get("peak_gflops_fp32") if not session.machine.get("gpus") else None
    cores = session.machine["cores"]
    log = common.LoadLog()
    trainers = {f"{a}/{s}": get_trainer(session, a, s) for a in session.archs for s in ("fine_tune", "freeze_base")}
    runs = common.interleaved(trainers, session.reps, log)
    results, ratios = {}, {}
    for name, t in trainers.items():
        r = runs[name]
        train_flops = t.flops_multiplier * t.flops_forward
        med, med_cpu = r.stats()["median"], r.stats()["per_cpu_s"]["median"]
        achieved = [rate * train_flops / 1e9 for rate in r.rates]
        results[name] = r.stats(
            **t.info(),
            flops_per_image_counted=train_flops,
            flops_multiplier=t.flops_multiplier,
            achieved_gflops=common.summarize(achieved),
            achieved_gflops_per_cpu_s=common.summarize(rate * train_flops / 1e9 for rate in r.cpu_rates),
            fraction_of_peak=round(med * train_flops / 1e9 / peak, 4) if (peak and med) else None,
            # Load-independent efficiency: FLOP/s per CPU-second the process got, against one core's peak.
            fraction_of_core_peak_per_cpu_s=(round(med_cpu * train_flops / 1e9 / (peak / cores), 4)
                                             if (peak and med_cpu) else None),
        )
    for a in session.archs:
        ratios[f"{a}: freeze_base / fine_tune images/s"] = common.rate_ratio(
            runs[f"{a}/freeze_base"], runs[f"{a}/fine_tune"])
    release_trainers(session, keep=[_ref_key(session), _ref_key(session, "ResNet50")])
    return {
        "description": "Training images/s on one in-memory batch (train_on_batch, no input pipeline), per "
                       "arch and strategy; achieved FLOP/s = images/s x FLOPs counted per image (3x the "
                       "forward FLOPs with a trainable base, 1x for a frozen base + the tiny head) against "
                       "the machine's peak estimate (machine.peak_gflops_fp32).",
        "unit": "images/s",
        "peak_gflops_fp32": peak,
        "load_avg": log.to_dict(),
        "results": results,
        "ratios": ratios,
    }


# ----------------------------------------------------------------------------- figure: precision
def precision_combos(quick: bool, xla_mixed: bool, xla_in_quick: bool) -> list[tuple[str, bool]]:
    """(policy, jit_compile) pairs of the precision figure. mixed_bfloat16 is emulated on CPUs
    without AVX-512 BF16/AMX (~8x slower than float32 here), so it is left out of --quick; XLA
    compilation costs about a minute per variant on 2 cores, so --quick has no XLA (unless --xla)
    and the mixed-precision XLA pairs need --xla-mixed."""
    from hcdtf import precision

    if quick:
        combos = [("float32", False), ("mixed_float16", False)]
        if precision.cpu_features()["native_bf16"]:  # native there: the figure that decides `auto`
            combos.append(("mixed_bfloat16", False))
        return combos + ([("float32", True)] if xla_in_quick else [])
    combos = [("float32", False), ("mixed_float16", False), ("mixed_bfloat16", False), ("float32", True)]
    if xla_mixed:
        combos += [("mixed_float16", True), ("mixed_bfloat16", True)]
    return combos


def precision_archs() -> list[str]:
    """ResNet18 everywhere; ResNet50 too on CPUs with native bfloat16, where `--precision auto`
    picks mixed_bfloat16 when it pays (the issue's figure: ResNet-50 per CPU-second)."""
    from hcdtf import precision

    return ["ResNet18", "ResNet50"] if precision.cpu_features()["native_bf16"] else ["ResNet18"]


def figure_precision(session) -> dict:
    combos = precision_combos(session.quick, session.xla_mixed, session.xla_in_quick)
    batch = session.precision_batch
    log = common.LoadLog()
    trainers = {}
    archs = precision_archs()
    for arch in archs:
        for precision, jit in combos:
            if arch != "ResNet18" and (jit or precision == "mixed_float16"):
                continue  # the larger net: only the float32 / bfloat16 pair that `auto` decides on
            name = f"{precision}/xla_{'on' if jit else 'off'}" + ("" if arch == "ResNet18" else f"/{arch}")
            try:
                trainers[name] = get_trainer(session, arch, "fine_tune", precision, jit, batch)
            except Exception as e:  # noqa: BLE001 - a variant the platform lacks is reported, not fatal
                trainers[name] = e
    ok = {k: v for k, v in trainers.items() if not isinstance(v, Exception)}
    runs = common.interleaved(ok, session.reps, log)
    results = {k: runs[k].stats(**ok[k].info()) for k in ok}
    results.update({k: {"error": f"{type(v).__name__}: {v}"[:500]} for k, v in trainers.items() if k not in ok})
    ratios = {}
    for k in ok:
        arch_suffix = k.split("/", 2)[2] if k.count("/") == 2 else ""
        ref = "float32/xla_off" + (f"/{arch_suffix}" if arch_suffix else "")
        if k != ref and ref in runs:
            ratios[f"{k} / {ref}"] = common.rate_ratio(runs[k], runs[ref])
    release_trainers(session, keep=[_ref_key(session)])
    return {
        "batch": batch,
        "archs": archs,
        "description": "Fine-tuning train step (in-memory batch) in float32, mixed_float16 and mixed_bfloat16 "
                       "Keras policies, with XLA off and on (compile(jit_compile=...)): ResNet18, and on CPUs with "
                       "native bfloat16 ResNet50 in float32 and mixed_bfloat16 (names ending /ResNet50); ratios "
                       "> 1 mean faster than float32 without XLA (per_cpu_s: per CPU-second, the comparable "
                       "figure under load). first_step_s includes tracing and the XLA compilation.",
        "device": "GPU: " + ", ".join(session.machine["gpus"]) if session.machine.get("gpus") else "CPU",
        "unit": "images/s",
        "load_avg": log.to_dict(),
        "results": results,
        "ratios": ratios,
    }


# ----------------------------------------------------------------------------- figure: feature cache
def _features(extractor, cfg, split, batch):
    """What hcdtf.training.train does to fill its feature cache (pooled base features of a split)."""
    from hcdtf.training import train

    return train.compute_features(extractor, cfg, split, batch)


def figure_feature_cache(session) -> dict:
    import statistics

    import numpy as np
    import tensorflow as tf

    from hcdtf.data import pipeline as data
    from hcdtf import models
    from hcdtf.training import train

    arch = "ResNet18"
    b = session.batch_size
    n_avail = session.workspace.splits()["train"]
    n = min(n_avail, session.feature_cache_examples)
    cfg = session.workspace.config(
        "data.augment=false", f"data.max_train_examples={n}", f"train.batch_size={b}", f"model.arch={arch}",
        "model.transfer=freeze_base", "model.weights=none", "train.schedule=constant")
    steps = math.ceil(n / b)
    log = common.LoadLog()
    model = models.build_classifier(arch, weights=None, transfer="freeze_base")
    train.compile_model(model, cfg, steps)

    def through_base(take=None):
        ds = data.make_dataset(cfg.data, cfg.data.train_split, b, training=True, seed=len(log.per_rep_1min))
        if take:
            ds = ds.take(take)
        model.fit(ds, epochs=1, verbose=0, shuffle=False)
        return n if not take else take * b

    t = time.perf_counter()
    through_base(take=2)
    warm_through = time.perf_counter() - t

    extractor, head = models.feature_extractor(model), models.head_model(model)
    t, c = time.perf_counter(), common.cpu_seconds()
    f_train, y_train = _features(extractor, cfg, cfg.data.train_split, b)
    extract_s, extract_cpu = time.perf_counter() - t, common.cpu_seconds() - c
    train.compile_model(head, cfg, steps)

    def head_epoch():
        ds = (tf.data.Dataset.from_tensor_slices((f_train, y_train))
              .shuffle(len(f_train), seed=session.seed, reshuffle_each_iteration=True).batch(b))
        head.fit(ds, epochs=1, verbose=0, shuffle=False)
        return len(f_train)

    tiles = 8
    f_big, y_big = np.tile(f_train, (tiles, 1)), np.tile(y_train, tiles)

    def head_epoch_x8():  # the same features 8 times: separates fit()'s fixed cost from the per-patch cost
        ds = (tf.data.Dataset.from_tensor_slices((f_big, y_big))
              .shuffle(len(f_big), seed=session.seed, reshuffle_each_iteration=True).batch(b))
        head.fit(ds, epochs=1, verbose=0, shuffle=False)
        return len(f_big)

    # The same head compiled with steps_per_execution: Keras runs that many steps per call of its
    # compiled function, which removes most of the ~5 ms per-step overhead of fit().
    import keras

    spe = 16
    head_spe = models.head_model(model)
    head_spe.compile(optimizer=train.make_optimizer(cfg, steps), loss=keras.losses.BinaryCrossentropy(),
                     metrics=[keras.metrics.AUC(name="auc", num_thresholds=1000),
                              keras.metrics.BinaryAccuracy(name="accuracy")],
                     steps_per_execution=spe)

    def head_epoch_x8_spe():
        ds = (tf.data.Dataset.from_tensor_slices((f_big, y_big))
              .shuffle(len(f_big), seed=session.seed, reshuffle_each_iteration=True).batch(b))
        head_spe.fit(ds, epochs=1, verbose=0, shuffle=False)
        return len(f_big)

    t = time.perf_counter()
    head_epoch()
    head_epoch_x8()
    head_epoch_x8_spe()
    warm_head = time.perf_counter() - t
    runs = common.interleaved({"through_frozen_base": through_base, "cached_features": head_epoch,
                               "cached_features_x8": head_epoch_x8,
                               f"cached_features_x8_steps_per_execution_{spe}": head_epoch_x8_spe},
                              session.reps, log)
    epochs = cfg.train.epochs
    med = {k: statistics.median(v.seconds) for k, v in runs.items()}
    amortized = (epochs * med["through_frozen_base"]) / (extract_s + epochs * med["cached_features"])
    ratio = {**common.paired_ratio(runs["through_frozen_base"].seconds, runs["cached_features"].seconds),
             "per_cpu_s": common.paired_ratio(runs["through_frozen_base"].cpu, runs["cached_features"].cpu)}
    # Head epoch time = fixed + per_patch * N, from the N and 8N epochs; projected to the Kaggle
    # training split (80% of 220,025 patches) against the measured through-the-base rate.
    per_patch = max((med["cached_features_x8"] - med["cached_features"]) / ((tiles - 1) * n), 0.0)
    fixed = max(med["cached_features"] - per_patch * n, 0.0)
    n_kaggle = 176_020
    projected = (n_kaggle * med["through_frozen_base"] / n) / (fixed + per_patch * n_kaggle)
    return {
        "description": "Frozen-base training from epoch 2 on: one epoch of head-only training on cached "
                       "pooled features (what hcdtf.training.train does with train.feature_cache=true, augmentation "
                       "off) against one epoch of training through the frozen base (model.fit on the tf.data "
                       f"pipeline). Both epochs cover the same {n} training patches, batch {b}; epoch times "
                       "include Keras fit() overhead (cached_features_x8: the cached features 8 times over, to "
                       "separate that fixed cost from the per-patch cost). The one-off feature extraction "
                       "(epoch 1) is reported separately, with the speed-up over train.epochs epochs including "
                       "it, and the epoch-time ratio projected to the 176,020-patch Kaggle training split. "
                       f"cached_features_x8_steps_per_execution_{spe}: the same head compiled with "
                       f"steps_per_execution={spe} (not what hcdtf does today).",
        "arch": arch,
        "examples": n,
        "batch": b,
        "unit": "patches/s",
        "load_avg": log.to_dict(),
        "results": {k: v.stats() for k, v in runs.items()},
        "feature_extraction": {"seconds": round(extract_s, 3), "patches_per_s": round(n / extract_s, 2),
                               "patches_per_cpu_s": round(n / extract_cpu, 2) if extract_cpu > 0 else None,
                               "feature_size": int(f_train.shape[1])},
        "head_epoch_model": {"fixed_seconds": round(fixed, 4), "seconds_per_patch": float(f"{per_patch:.4g}")},
        "warm_up_seconds": {"through_frozen_base_2_steps": round(warm_through, 2), "cached_features_epochs": round(warm_head, 2)},
        "ratios": {
            "epoch time: through frozen base / cached features": ratio,
            f"{epochs} epochs incl. feature extraction: through / cached (medians)": round(amortized, 3),
            f"projected epoch time ratio at {n_kaggle} patches": round(projected, 1),
            f"head epoch x8: steps_per_execution={spe} / default (patches/s)": common.rate_ratio(
                runs[f"cached_features_x8_steps_per_execution_{spe}"], runs["cached_features_x8"]),
        },
        "targets": {"feature_cache_ge_20x": common.target(
            ratio["median"], 20.0, f"epoch-2+ speed-up of the feature cache, measured on {n} patches")},
    }


# ----------------------------------------------------------------------------- frameworks (workers)
def _keras_net(arch: str, data_format: str, fused_bn: bool = True, size: int = 96):
    """The network without hcdtf's uint8 preprocessing layer (inputs are float32 already), in the
    given data format: keras.applications ResNet50 (v1) or hcdtf's ResNet18/34 base, global average
    pooling, dropout 0.2, Dense(1, sigmoid) -- the same head as hcdtf.models.build_classifier.
    ``fused_bn`` swaps in ``FusedBatchNormalization`` as build_classifier does; False keeps Keras'
    own BatchNormalization. ``size``: the input's side (96, the patches'; smaller only for smoke runs)."""
    import keras

    from hcdtf import models

    keras.config.set_image_data_format(data_format)
    try:
        shape = (size, size, 3) if data_format == "channels_last" else (3, size, size)
        base = models.get_arch(arch).constructor()(include_top=False, weights=None, input_shape=shape)
        if fused_bn:
            base = models.fuse_batch_norm(base)
        x = keras.layers.GlobalAveragePooling2D()(base.output)
        x = keras.layers.Dropout(0.2)(x)
        out = keras.layers.Dense(1, activation="sigmoid", dtype="float32")(x)
        return keras.Model(base.input, out)
    finally:
        keras.config.set_image_data_format("channels_last")


def _torch_net(arch: str):
    """The same networks in PyTorch: torchvision-layout ResNet18/34 (bias-free convs, BN eps 1e-5),
    or keras.applications' ResNet50 v1 (stride on the first 1x1 conv of a block, convs with bias,
    BN eps 1.001e-5); global average pooling, dropout 0.2, one logit."""
    import torch.nn as nn

    class Basic(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.down = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                         if stride != 1 or cin != cout else None)
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            s = x if self.down is None else self.down(x)
            y = self.relu(self.b1(self.c1(x)))
            return self.relu(self.b2(self.c2(y)) + s)

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, stride, project):
            super().__init__()
            eps, cout = 1.001e-5, 4 * width
            self.c1 = nn.Conv2d(cin, width, 1, stride)
            self.b1 = nn.BatchNorm2d(width, eps=eps)
            self.c2 = nn.Conv2d(width, width, 3, 1, 1)
            self.b2 = nn.BatchNorm2d(width, eps=eps)
            self.c3 = nn.Conv2d(width, cout, 1)
            self.b3 = nn.BatchNorm2d(cout, eps=eps)
            self.down = nn.Sequential(nn.Conv2d(cin, cout, 1, stride), nn.BatchNorm2d(cout, eps=eps)) if project else None
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            s = x if self.down is None else self.down(x)
            y = self.relu(self.b1(self.c1(x)))
            y = self.relu(self.b2(self.c2(y)))
            return self.relu(self.b3(self.c3(y)) + s)

    bottleneck = arch in ("ResNet50", "ResNet101", "ResNet152")
    blocks = {"ResNet18": (2, 2, 2, 2), "ResNet34": (3, 4, 6, 3), "ResNet50": (3, 4, 6, 3),
              "ResNet101": (3, 4, 23, 3), "ResNet152": (3, 8, 36, 3)}[arch]
    eps = 1.001e-5 if bottleneck else 1e-5
    layers = [nn.Conv2d(3, 64, 7, 2, 3, bias=bottleneck), nn.BatchNorm2d(64, eps=eps), nn.ReLU(inplace=True),
              nn.MaxPool2d(3, 2, 1)]
    cin = 64
    for stage, (width, n) in enumerate(zip((64, 128, 256, 512), blocks)):
        for i in range(n):
            stride = 2 if (i == 0 and stage > 0) else 1
            if bottleneck:
                layers.append(Bottleneck(cin, width, stride, project=(i == 0)))
                cin = 4 * width
            else:
                layers.append(Basic(cin, width, stride))
                cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(cin, 1)]
    return nn.Sequential(*layers)


class _KerasVariant:
    def __init__(self, arch, batch, jit=False, data_format="channels_last", fused_bn=True, seed=0):
        import keras
        import numpy as np
        import tensorflow as tf

        self.batch = batch
        self.model = _keras_net(arch, data_format, fused_bn)
        self.model.compile(optimizer=keras.optimizers.Adam(1e-4), loss=keras.losses.BinaryCrossentropy(),
                           jit_compile=jit)
        rng = np.random.default_rng(seed)
        shape = (batch, 96, 96, 3) if data_format == "channels_last" else (batch, 3, 96, 96)
        self.x = tf.constant(rng.normal(size=shape).astype(np.float32))
        self.y = tf.constant(rng.integers(0, 2, (batch, 1)).astype(np.float32))
        self.params_trainable = int(sum(int(np.prod(w.shape)) for w in self.model.trainable_weights))
        self.xla = bool(self.model.jit_compile)  # False under op determinism, whatever was asked

    def step(self):
        self.model.train_on_batch(self.x, self.y)


class _TorchVariant:
    def __init__(self, arch, batch, channels_last=False, seed=0):
        import torch

        torch.manual_seed(seed)
        self.batch = batch
        self.model = _torch_net(arch).train()
        self.x = torch.randn(batch, 3, 96, 96)
        self.y = torch.randint(0, 2, (batch, 1)).float()
        if channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
            self.x = self.x.contiguous(memory_format=torch.channels_last)
        self.opt = torch.optim.Adam(self.model.parameters(), 1e-4)
        self.loss = torch.nn.BCEWithLogitsLoss()
        self.params_trainable = int(sum(p.numel() for p in self.model.parameters() if p.requires_grad))

    def step(self):
        self.opt.zero_grad(set_to_none=True)
        self.loss(self.model(self.x), self.y).backward()
        self.opt.step()


def worker_main(spec: dict) -> None:
    """A worker process: builds its variants, warms them up, then answers ``run`` requests on
    stdin with one timed repetition (JSON on stdout) until ``quit``."""
    out = sys.stdout
    sys.stdout = sys.stderr  # library chatter must not corrupt the protocol

    def send(obj):
        out.write(json.dumps(obj) + "\n")
        out.flush()

    framework = spec["framework"]
    versions = {}
    if framework == "keras":
        import tensorflow as tf

        th = spec.get("threads") or {}
        if "intra" in th:
            tf.config.threading.set_intra_op_parallelism_threads(th["intra"])
        if "inter" in th:
            tf.config.threading.set_inter_op_parallelism_threads(th["inter"])
        if spec.get("determinism", True):
            tf.config.experimental.enable_op_determinism()  # as hcdtf.runtime.set_seed does
        import keras

        keras.utils.set_random_seed(0)
        from hcdtf import runtime

        versions = {"tensorflow": tf.__version__, "keras": keras.__version__,
                    "onednn_opts": os.environ.get("TF_ENABLE_ONEDNN_OPTS", "unset (TensorFlow's default)"),
                    "onednn_enabled": runtime.onednn_enabled(),
                    "intra_op_threads": tf.config.threading.get_intra_op_parallelism_threads(),
                    "inter_op_threads": tf.config.threading.get_inter_op_parallelism_threads()}
        make = lambda v: _KerasVariant(spec["arch"], v["batch"], v.get("jit", False),  # noqa: E731
                                       v.get("data_format", "channels_last"), v.get("fused_bn", True))
    else:
        import torch

        if spec.get("threads", {}).get("intra"):
            torch.set_num_threads(spec["threads"]["intra"])
        versions = {"torch": torch.__version__, "threads": torch.get_num_threads(),
                    "mkldnn": bool(torch.backends.mkldnn.is_available())}
        make = lambda v: _TorchVariant(spec["arch"], v["batch"], v.get("channels_last", False))  # noqa: E731

    variants, ready = {}, {}
    for name, v in spec["variants"].items():
        try:
            t = time.perf_counter()
            var = make(v)
            build_s = time.perf_counter() - t
            t = time.perf_counter()
            var.step()
            first = time.perf_counter() - t
            t = time.perf_counter()
            var.step()
            second = time.perf_counter() - t
            var.steps = common.steps_for(second, spec.get("rep_seconds", 3.0))
            variants[name] = var
            ready[name] = {"build_s": round(build_s, 2), "first_step_s": round(first, 2),
                           "warm_step_s": round(second, 3), "steps_per_rep": var.steps, "batch": var.batch,
                           "params_trainable": var.params_trainable, **({"xla": var.xla} if framework == "keras" else {})}
        except Exception as e:  # noqa: BLE001 - e.g. a data format the CPU kernels lack
            ready[name] = {"error": f"{type(e).__name__}: {e}"[:800]}
    send({"ready": ready, "versions": versions, "rss_mb": common.vm_hwm_mb()})
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd.get("cmd") != "run":
            break
        var = variants[cmd["variant"]]
        t, c = time.perf_counter(), common.cpu_seconds()
        for _ in range(var.steps):
            var.step()
        send({"items": var.steps * var.batch, "seconds": time.perf_counter() - t, "cpu": common.cpu_seconds() - c})


class Worker:
    def __init__(self, name: str, spec: dict, env: dict | None = None):
        self.name, self.spec, self.env = name, spec, dict(env or {})
        full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
        full_env["PYTHONPATH"] = os.pathsep.join([str(common.REPO), full_env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
        # stderr goes to a file: a full pipe would block a chatty worker (TensorFlow, XLA).
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.training", "--worker", json.dumps(spec)],
            cwd=common.REPO, env=full_env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
            text=True, bufsize=1)
        self.ready = None

    def _read(self):
        line = self.proc.stdout.readline()
        if not line:
            self.stderr.seek(0)
            err = self.stderr.read()[-2000:]
            raise RuntimeError(f"worker {self.name} exited (rc={self.proc.wait()}): {err}")
        return json.loads(line)

    def wait_ready(self) -> dict:
        self.ready = self._read()
        return self.ready

    def run(self, variant: str) -> dict:
        self.proc.stdin.write(json.dumps({"cmd": "run", "variant": variant}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        try:
            if self.proc.poll() is None:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=60)
        except (OSError, subprocess.TimeoutExpired, ValueError):
            self.proc.kill()
            self.proc.wait()
        self.stderr.close()


def _have_torch() -> bool:
    import importlib.util

    return importlib.util.find_spec("torch") is not None


def frameworks_plan(arch: str, batch: int, rep_seconds: float, quick: bool, cores: int,
                    gpu: bool = False) -> list[tuple[str, dict, dict]]:
    """(worker name, spec, extra environment) for every worker of the frameworks figure. Each
    setting that TensorFlow or PyTorch reads once at start-up gets its own process; the others
    (XLA, batch size, data format) are variants inside one process."""
    base = {"arch": arch, "rep_seconds": rep_seconds}
    onednn, eigen = {"TF_ENABLE_ONEDNN_OPTS": "1"}, {"TF_ENABLE_ONEDNN_OPTS": "0"}

    def keras(name, variants, env, **extra):
        return (name, {**base, "framework": "keras", "variants": variants, **extra}, env)

    # hcdtf's defaults: oneDNN kernels (hcdtf.runtime.prefer_onednn), fused BatchNorm
    # (build_classifier), op determinism on (set_seed).
    default = {"hcdtf_default": {"batch": batch}, "keras_batchnorm": {"batch": batch, "fused_bn": False}}
    if not quick:
        default[f"hcdtf_batch{batch // 2}"] = {"batch": batch // 2}
        default[f"hcdtf_batch{2 * batch}"] = {"batch": 2 * batch}
    plan = [keras("hcdtf", default, onednn)]
    if gpu and arch not in ("ResNet18", "ResNet34"):  # hcdtf's ResNet18/34 are channels_last only
        plan[0][1]["variants"]["hcdtf_channels_first"] = {"batch": batch, "data_format": "channels_first"}
    # TensorFlow's own default on CPUs without AVX-512 VNNI/BF16 or AMX: Eigen kernels.
    plan.append(keras("eigen", {"eigen_fused_bn": {"batch": batch},
                                "eigen_keras_batchnorm": {"batch": batch, "fused_bn": False}}, eigen))
    if not quick:
        plan += [
            # Keras ignores jit_compile while op determinism is on: XLA runs without it.
            keras("xla", {"hcdtf_xla_no_op_determinism": {"batch": batch, "jit": True}}, onednn,
                  determinism=False),
            keras("inter_op_1", {"hcdtf_intra_op_all_inter_op_1": {"batch": batch}}, onednn,
                  threads={"intra": cores, "inter": 1}),
            keras("no_determinism", {"hcdtf_no_op_determinism": {"batch": batch}}, onednn, determinism=False),
        ]
    if _have_torch():
        tv = {"torch_default": {"batch": batch}}
        if not quick:
            tv["torch_channels_last"] = {"batch": batch, "channels_last": True}
        plan.append(("torch", {**base, "framework": "torch", "variants": tv}, {}))
        # OpenMP threads spin while waiting by default; when another process holds a core the
        # spinning thread starves the one doing the work. PASSIVE makes them sleep.
        plan.append(("torch_omp_passive", {**base, "framework": "torch",
                                           "variants": {"torch_omp_passive": {"batch": batch}}},
                     {"OMP_WAIT_POLICY": "PASSIVE"}))
    return plan


def channels_first_probe() -> dict:
    """Whether TensorFlow can train a channels_first convolution on this device, in a second:
    one Conv2D train step on a (2, 3, 16, 16) batch (the full ResNet-50 would trace for a minute
    before failing the same way)."""
    import keras
    import numpy as np

    keras.config.set_image_data_format("channels_first")
    try:
        m = keras.Sequential([keras.Input((3, 16, 16)), keras.layers.Conv2D(4, 3),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1)])
        m.compile(optimizer="sgd", loss="mse")
        m.train_on_batch(np.zeros((2, 3, 16, 16), np.float32), np.zeros((2, 1), np.float32))
        return {"supported": True}
    except Exception as e:  # noqa: BLE001
        msg = str(e)
        key = next((line.strip() for line in msg.splitlines() if "NHWC" in line or "only supports" in line), "")
        return {"supported": False, "error": f"{type(e).__name__}: {key or msg[:300]}"}
    finally:
        keras.config.set_image_data_format("channels_last")


def _mem_available_gb() -> float | None:
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def figure_frameworks(session) -> dict:
    arch = "ResNet18" if session.quick else "ResNet50"
    b = session.batch_size
    gpu = bool(session.machine.get("gpus"))
    plan = frameworks_plan(arch, b, session.rep_seconds, session.quick, common.cores(), gpu)
    log = common.LoadLog()
    workers, ready, versions, errors = [], {}, {}, {}
    lanes = max(1, min(2, common.cores()))  # tracing is mostly one Python thread: warm two at a time

    def start(item):
        name, spec, env = item
        mem = _mem_available_gb()
        if mem is not None and mem < 3.0:
            raise RuntimeError(f"not started: only {mem:.1f} GB of memory available")
        session.log(f"  starting worker {name} ({', '.join(spec['variants'])})")
        w = Worker(name, spec, env)
        try:
            return w, w.wait_ready()
        except Exception:
            w.close()
            raise

    import concurrent.futures

    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=lanes) as pool:
            futures = {pool.submit(start, item): item[0] for item in plan}
            for fut in concurrent.futures.as_completed(futures):
                try:
                    w, info = fut.result()
                except Exception as e:  # noqa: BLE001
                    errors[futures[fut]] = str(e)[:1000]
                    continue
                workers.append(w)
                versions[w.name] = {**info["versions"], "env": dict(w.env), "rss_mb": info["rss_mb"]}
        order = {name: i for i, (name, _, _) in enumerate(plan)}
        workers.sort(key=lambda w: order[w.name])  # repetitions always visit workers in plan order
        for w in workers:
            for v, r in w.ready["ready"].items():
                ready[v] = (w, r)
        # Steps per repetition come from a warm step that may have shared the CPU with another
        # worker's warm-up: that only makes repetitions shorter, never changes the rates.
        calls = {v: (lambda w=w, v=v: w.run(v)) for v, (w, r) in ready.items() if "error" not in r}
        runs = {v: common.Runs() for v in calls}
        for _ in range(session.reps):
            log.rep()
            for v, call in calls.items():
                res = call()
                runs[v].add(res["items"], res["seconds"], res["cpu"])
    finally:
        for w in workers:
            w.close()
    results = {}
    for v, (w, r) in ready.items():
        results[v] = runs[v].stats(**r, worker=w.name) if v in runs else {**r, "worker": w.name}
    if not gpu and arch not in ("ResNet18", "ResNet34"):
        results["hcdtf_channels_first"] = {
            "probe": channels_first_probe(),
            "note": "TensorFlow's CPU kernels train NHWC only (Conv2DBackpropFilter rejects NCHW); "
                    "measured on a GPU only"}
    ref = "hcdtf_default"
    ratios = {f"{v} / {ref}": common.rate_ratio(runs[v], runs[ref]) for v in runs if v != ref and ref in runs}
    out = {
        "description": f"{arch} training images/s (float32, batch {b} unless the variant says otherwise, Adam, "
                       "one in-memory batch) in Keras under CPU settings, and the same network in PyTorch, "
                       "measured side by side: one worker process per setting that must be fixed at start-up "
                       "(TF_ENABLE_ONEDNN_OPTS, tf.config.threading, op determinism, OMP_WAIT_POLICY), "
                       "BatchNorm (fused as hcdtf builds it, or Keras' own) and batch size within a worker, "
                       "repetitions taken in turn across all workers. The Keras network is the hcdtf "
                       "classifier's base + head on float32 input (no uint8 preprocessing layer), so both "
                       "frameworks run the same net (params_trainable equal).",
        "arch": arch,
        "unit": "images/s",
        "load_avg": log.to_dict(),
        "workers": versions,
        "results": results,
        "ratios": ratios,
    }
    if not _have_torch():
        out["torch"] = "not installed: pip install torch (CPU wheel) for the side-by-side PyTorch figure"
    if errors:
        out["errors"] = errors
    return out


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        worker_main(json.loads(sys.argv[2]))
    else:
        print("usage: python -m benchmarks.training --worker SPEC_JSON  (run by `python -m benchmarks`)",
              file=sys.stderr)
        sys.exit(2)
