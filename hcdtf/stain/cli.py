"""``hcdtf stain fit|apply``: fit a stain normalisation target to images, and look at what it does.

``fit`` writes the target JSON (:mod:`hcdtf.models.stain`); ``apply`` writes each image normalised
by the same Keras layer that goes into models, as ``<out>/<name>.png`` (rounded to uint8),
atomically, and says how many images were left unchanged (too little tissue). Registered by
:mod:`hcdtf.cli` from ``COMMANDS``; nothing here imports TensorFlow until a command runs.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable

import click
import numpy as np

from hcdtf.clitools import CONTEXT, friendly, quiet
from hcdtf.models import stain_params  # the vocabulary and defaults; no Keras at start-up

BATCH = 64


class StainInputError(ValueError):
    """An input image or the output directory is unusable (one line for the user)."""


def read_rgb(path: pathlib.Path) -> np.ndarray:
    """An 8-bit RGB image of any size as uint8 [H, W, 3]; StainInputError naming the file otherwise."""
    from PIL import Image, UnidentifiedImageError

    from tfds_builder.hcd.bitdepth import not_8bit  # Pillow opens 16-bit RGB as "RGB"

    try:
        with Image.open(path) as im:
            mode, wide = im.mode, not_8bit(im)
            array = None if wide or mode != "RGB" else np.asarray(im)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise StainInputError(f"{path}: cannot be read as an image ({e})") from None
    if wide:
        raise StainInputError(f"{path}: expected an 8-bit RGB image, got {wide}")
    if array is None:
        raise StainInputError(f"{path}: expected an 8-bit RGB image, got Pillow mode {mode}")
    if array.shape[0] < 1 or array.shape[1] < 1:
        raise StainInputError(f"{path}: the image is empty")
    return array


def _files(images) -> list[pathlib.Path]:
    from hcdtf.inference.predict import ImageError, list_images

    try:
        return list_images(images, what="IMAGES")
    except ImageError as e:
        raise StainInputError(str(e)) from None


def fit_files(images, method: str, out, io: float, alpha: float, beta: float, min_tissue: float,
              log: Callable[[str], None] = print) -> dict:
    """Fits a target to all pixels of ``images`` (files or directories) and writes it to ``out``."""
    from hcdtf import atomic
    from hcdtf.models import stain

    files = _files(images)
    arrays = [read_rgb(f) for f in files]
    target = stain.fit_target(arrays, method, io=io, alpha=alpha, beta=beta, min_tissue=min_tissue)
    target["images"] = [f.name for f in files][:1000]
    out = pathlib.Path(out)
    if out.is_dir():
        raise StainInputError(f"--out {out} is a directory; give the target file's name, e.g. {out}/target.json")
    atomic.write_json(out, target)
    log(f"{method} target fitted to {len(files)} image(s) ({sum(a.shape[0] * a.shape[1] for a in arrays):,} "
        f"pixels): {out}")
    return target


def apply_files(images, target, out_dir, log: Callable[[str], None] = print) -> dict:
    """Normalises ``images`` to ``target`` (a target file) into ``out_dir``/<stem>.png.

    Returns ``{"written": n, "unchanged": [names]}`` (unchanged: too little tissue or degenerate
    statistics, written as they were)."""
    import tensorflow as tf
    from PIL import Image

    from hcdtf import atomic
    from hcdtf.models import stain

    layer = stain.layer_from_target(stain.read_target(target), return_fallback=True)
    files = _files(images)
    out_dir = pathlib.Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise StainInputError(f"--out {out_dir} is a file; give a directory")
    resolved = out_dir.resolve()
    for f in files:
        if f.resolve().parent == resolved and f.suffix.lower() == ".png":
            raise StainInputError(f"--out {out_dir} holds the input {f.name}, which would be overwritten; "
                                  "choose another directory")
    out_dir.mkdir(parents=True, exist_ok=True)

    @tf.function(reduce_retracing=True)
    def normalise(batch):
        return layer(batch)

    unchanged: list[str] = []
    by_shape: dict[tuple, list[pathlib.Path]] = {}
    arrays = {}
    for f in files:
        arrays[f] = read_rgb(f)
        by_shape.setdefault(arrays[f].shape, []).append(f)
        if len(by_shape[arrays[f].shape]) == BATCH:
            unchanged += _write_batch(normalise, by_shape.pop(arrays[f].shape), arrays, out_dir, Image, atomic)
    for group in by_shape.values():
        unchanged += _write_batch(normalise, group, arrays, out_dir, Image, atomic)
    log(f"{len(files)} image(s) normalised to {target} ({layer.name} {type(layer).__name__}) in {out_dir}; "
        f"{len(unchanged)} left unchanged (too little tissue)" + (f": {', '.join(unchanged[:10])}"
                                                                  + (" ..." if len(unchanged) > 10 else "")
                                                                  if unchanged else ""))
    return {"written": len(files), "unchanged": unchanged}


def _write_batch(normalise, group, arrays, out_dir, Image, atomic) -> list[str]:
    out, fell_back = normalise(np.stack([arrays.pop(f) for f in group]))
    out = np.clip(np.rint(out.numpy()), 0, 255).astype(np.uint8)
    for f, image in zip(group, out):
        with atomic.atomic_output(out_dir / f"{f.stem}.png") as tmp:
            Image.fromarray(image).save(tmp, format="PNG")
    return [f.name for f, fb in zip(group, fell_back.numpy()) if fb]


@click.group("stain", context_settings=CONTEXT)
def stain_group():
    """Stain normalisation (Macenko, Reinhard): fit a target, look at its effect.

    Train with it: --set data.stain_normalize=macenko --set data.stain_target=target.json
    (the layer is then part of the model and of every format it is exported to).
    """


@stain_group.command("fit", context_settings=CONTEXT)
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--method", type=click.Choice(stain_params.METHODS), default="macenko", show_default=True,
              help="Normalisation the target is for.")
@click.option("--out", required=True, type=click.Path(), help="Target file (JSON) to write.")
@click.option("--io", default=stain_params.DEFAULT_IO, show_default=True, type=click.FloatRange(min=1),
              help="Macenko: transmitted light intensity.")
@click.option("--alpha", default=stain_params.DEFAULT_ALPHA, show_default=True, type=click.FloatRange(0, 50, max_open=True),
              help="Macenko: angle percentile (%).")
@click.option("--beta", default=stain_params.DEFAULT_BETA, show_default=True, type=click.FloatRange(min=0),
              help="Macenko: optical density below which a pixel is background.")
@click.option("--min-tissue", default=stain_params.DEFAULT_MIN_TISSUE, show_default=True, type=click.FloatRange(0, 1),
              help="Images with a smaller tissue fraction are left unchanged when the target is applied.")
@friendly  # StainInputError and TargetError are ValueErrors: exit code 2
def fit_cmd(images, method, out, io, alpha, beta, min_tissue):
    """Fit a stain target to IMAGES (files or directories of .png/.tif; all pixels together).

    Example: hcdtf stain fit reference/ --method macenko --out target.json
    """
    fit_files(images, method, out, io, alpha, beta, min_tissue, log=click.echo)


@stain_group.command("apply", context_settings=CONTEXT)
@click.argument("images", nargs=-1, required=True, type=click.Path())
@click.option("--target", required=True, type=click.Path(dir_okay=False), help="Target file from stain fit.")
@click.option("--out", required=True, type=click.Path(file_okay=False),
              help="Directory for the normalised images (<name>.png).")
@friendly  # StainInputError and TargetError are ValueErrors: exit code 2
def apply_cmd(images, target, out):
    """Normalise IMAGES to --target and write them as PNG (same names) into --out.

    Example: hcdtf stain apply kaggle/test --target target.json --out normalised/
    """
    quiet()
    apply_files(images, target, out, log=click.echo)


COMMANDS = [stain_group]
