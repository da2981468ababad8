"""`hcdtf explain`: Grad-CAM heat maps of where a trained ResNet looks for tumour.

Grad-CAM (Selvaraju et al., ICCV 2017, "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization"): the feature maps A^k of the last convolutional stage are weighted
by the spatial mean of d(logit)/dA^k, summed over channels and passed through a ReLU, so the map
shows the regions whose features raise the tumour logit. We take the last layer with a 4-D output
of the nested ``base`` model (``conv5_block*_out`` for our ResNets: 3x3 for a 96x96 patch, which
is why the maps are coarse), differentiate the logit (``head_logit``, before the sigmoid, which
saturates), scale each map to [0, 1] by its maximum and resize it bilinearly to the patch size.
A map that is zero everywhere means no region raises the logit.

One PNG per patch: the patch, the heat map over it with the PCam label region (the centre 32x32
pixels) outlined, and the score in the title. ``explain.csv`` lists id, probability, logit, file.
"""

from __future__ import annotations

import csv
import os
import pathlib
from typing import Callable, Iterable

import numpy as np

from hcdtf.atomic import atomic_open
from hcdtf.inference.predict import ModelPathError, is_inside, list_images, read_patch

OVERLAY_ALPHA = 0.45


def last_conv_layer(base):
    """The last layer of ``base`` whose output is 4-D (batch, height, width, channels)."""
    for layer in reversed(base.layers):
        shape = getattr(layer.output, "shape", None)
        if shape is not None and len(shape) == 4:
            return layer
    raise ValueError(f"model {base.name!r} has no layer with a 4-D output to explain")


def gradcam_model(model):
    """A model ``uint8 images -> (last conv stage features, logit)`` sharing ``model``'s weights.

    The classifier nests its ResNet as one layer (``base``), whose inner tensors are not reachable
    from the outer graph, so the forward pass is rebuilt: preprocess -> base up to its last 4-D
    layer (and its output) -> the head's pool, dropout and logit layers."""
    import keras

    from hcdtf.models.classifier import BASE_NAME, HEAD_DROPOUT, HEAD_LOGIT, HEAD_POOL

    try:
        base = model.get_layer(BASE_NAME)
        preprocess = model.get_layer("preprocess")
        pool, dropout, logit_layer = (model.get_layer(n) for n in (HEAD_POOL, HEAD_DROPOUT, HEAD_LOGIT))
    except ValueError as e:
        raise ValueError(f"model {model.name!r} is not an hcdtf classifier ({e})") from None
    target = last_conv_layer(base)
    inner = keras.Model(base.inputs, [target.output, base.outputs[0]], name=f"{base.name}_gradcam")
    images = keras.Input(shape=tuple(model.input.shape[1:]), dtype="uint8", name="image")
    features, base_out = inner(preprocess(images))
    logit = logit_layer(dropout(pool(base_out)))
    return keras.Model(images, [features, logit], name=f"{model.name}_gradcam"), target.name


def grad_cam(grad_model, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(heat maps float32 [B, H, W] in [0, 1] at the images' size, logits float64 [B])."""
    import tensorflow as tf

    x = tf.constant(images, tf.uint8)
    with tf.GradientTape() as tape:
        features, logit = grad_model(x, training=False)
        features = tf.cast(features, tf.float32)  # mixed-precision models compute in float16
        tape.watch(features)
        total = tf.reduce_sum(tf.cast(logit, tf.float32))  # each logit depends on its own image only
    grads = tape.gradient(total, features)
    weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)  # [B, 1, 1, C]
    cam = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1))  # [B, h, w]
    peak = tf.reduce_max(cam, axis=(1, 2), keepdims=True)
    cam = tf.math.divide_no_nan(cam, peak)
    cam = tf.image.resize(cam[..., None], images.shape[1:3], method="bilinear")[..., 0]
    heat = np.clip(cam.numpy(), 0.0, 1.0).astype(np.float32)
    return heat, np.asarray(logit, np.float64).reshape(-1)


def save_overlay(path: pathlib.Path, image: np.ndarray, heat: np.ndarray, title: str) -> None:
    """PNG: the patch | the patch with the heat map (jet) and the centre 32x32 region outlined."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    fig = Figure(figsize=(6.4, 3.6), dpi=100)
    FigureCanvasAgg(fig)
    left, right = fig.subplots(1, 2)
    left.imshow(image)
    left.set_title("patch", fontsize=9)
    right.imshow(image)
    shown = right.imshow(heat, cmap="jet", alpha=OVERLAY_ALPHA, vmin=0.0, vmax=1.0)
    h, w = image.shape[:2]
    right.add_patch(Rectangle((w / 2 - 16 - 0.5, h / 2 - 16 - 0.5), 32, 32, fill=False, ec="white", lw=1, ls="--"))
    right.set_title("Grad-CAM (centre 32x32 dashed)", fontsize=9)
    for ax in (left, right):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.colorbar(shown, ax=right, fraction=0.046, pad=0.04)
    fig.suptitle(title, fontsize=10)
    with atomic_open(path, "wb") as f:
        fig.savefig(f, format="png", bbox_inches="tight")


def explain(
    run_dir: str | os.PathLike,
    images: Iterable[str | os.PathLike],
    out_dir: str | os.PathLike,
    max_images: int | None = 32,
    batch_size: int = 16,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Writes a Grad-CAM PNG per patch into ``out_dir`` (at most ``max_images`` patches, in order)
    and returns one record per patch: id, probability, logit, file, heat (the map)."""
    from hcdtf.rundir import RunDir

    run = RunDir(run_dir)
    out = pathlib.Path(out_dir)
    images = [pathlib.Path(p) for p in images]
    if (run.path / "saved_model.pb").is_file():
        raise ModelPathError(f"{run.path} is an exported SavedModel; explain needs the run directory it came "
                             "from (model.keras), whose layers Grad-CAM reads")
    if not run.is_run():
        raise ModelPathError(f"RUN_DIR {str(run.path)!r} is not an hcdtf run directory (no config.yaml)")
    if run.kind() == "baseline":
        raise ModelPathError(f"{run.path} is a logistic-regression baseline run; Grad-CAM explains CNN runs")
    for p in images:
        folder = p if p.is_dir() else p.parent
        if is_inside(out, folder):
            raise ValueError(f"--out {str(out)!r} is inside the image directory {str(folder)!r}; explain "
                             "never writes there: choose another directory")
    files = list_images(images)
    if max_images is not None and len(files) > max_images:
        log(f"explaining the first {max_images} of {len(files)} patches (--max)")
        files = files[:max_images]
    patches = [read_patch(f) for f in files]  # every file is checked before any work
    from hcdtf.inference import loading

    model = loading.load_model(run)
    grad_model, layer = gradcam_model(model)
    out.mkdir(parents=True, exist_ok=True)
    log(f"Grad-CAM of {len(files)} patches on layer base/{layer} of {run.path}")
    records = []
    for i in range(0, len(files), batch_size):
        batch = np.stack(patches[i:i + batch_size])
        heat, logits = grad_cam(grad_model, batch)
        for f, image, h, z in zip(files[i:i + batch_size], batch, heat, logits):
            prob = float(1.0 / (1.0 + np.exp(-np.clip(z, -50, 50))))
            png = out / f"{f.stem}_gradcam.png"
            save_overlay(png, image, h, f"{f.stem}: P(tumour) = {prob:.3f} (logit {z:+.2f})")
            records.append({"id": f.stem, "probability": prob, "logit": float(z), "file": str(png), "heat": h})
    with atomic_open(out / "explain.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "probability", "logit", "file"])
        for r in records:
            w.writerow([r["id"], f"{r['probability']:.6f}", f"{r['logit']:.6f}", pathlib.Path(r["file"]).name])
    log(f"wrote {len(records)} Grad-CAM images and explain.csv to {out}")
    return records

