"""`hcdtf predict`: score a directory of patches and write a Kaggle submission (``id,label``).

The model is anything :mod:`hcdtf.inference.backends` reads: a run directory, a ``.keras`` file, an exported
SavedModel (called through its ``serving_default`` signature exactly as TF Serving would; an export
base directory means its latest version), or an ONNX, OpenVINO (float32 or int8) or LiteRT export;
``backend`` picks the runtime when the path alone does not say. :mod:`hcdtf.inference.beam` runs the
same scoring as an Apache Beam pipeline.
Patches are ``.tif``/``.tiff``/``.png`` files, each a 96x96 RGB uint8 image; the id is the file
name without its extension, rows are sorted by id, ``label`` is the tumour probability (what the
competition's ROC AUC wants, not a 0/1 decision).

Images are read and scored in batches (decoding runs in a few threads while the model works), so
memory does not grow with the number of files: the Kaggle test set has 57,458. The submission is
written to a temporary file beside ``--out`` and renamed when complete; nothing is ever written
into the image directory.
"""

from __future__ import annotations

import concurrent.futures
import os
import pathlib
import time
from typing import Callable, Iterable, Iterator

import numpy as np

from hcdtf.inference.backends import ModelPathError  # noqa: F401  (re-exported: explain and the CLI use it)

IMAGE_SIZE = 96
IMAGE_SUFFIXES = (".tif", ".tiff", ".png")


class ImageError(ValueError):
    """An input image is missing, unreadable or not a 96x96 RGB uint8 patch."""


# --------------------------------------------------------------------------- images
def list_images(paths: Iterable[str | os.PathLike], what: str = "--images") -> list[pathlib.Path]:
    """The patch files named by ``paths`` (files, or directories read non-recursively), sorted by
    id within each directory; an error if there are none or two share an id."""
    files: list[pathlib.Path] = []
    for item in paths:
        p = pathlib.Path(item)
        if p.is_dir():
            # A symlink that leads nowhere (a loop, a missing target) is listed too: reading it then
            # names it, instead of the patch silently missing from the submission.
            found = sorted((f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES
                            and (f.is_file() or (f.is_symlink() and not f.is_dir()))),
                           key=lambda f: (f.stem, f.name))
            if not found:
                raise ImageError(f"{what} {str(p)!r}: no .tif, .tiff or .png files in this directory")
            files.extend(found)
        elif p.is_file():
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                raise ImageError(f"{what} {str(p)!r}: not a .tif, .tiff or .png file")
            files.append(p)
        else:
            raise ImageError(f"{what} {str(p)!r} does not exist")
    if not files:
        raise ImageError(f"{what}: no images given")
    seen: dict[str, pathlib.Path] = {}
    for f in files:
        if f.stem in seen and seen[f.stem].resolve() != f.resolve():
            raise ImageError(f"two images have the id {f.stem!r}: {seen[f.stem]} and {f}; ids must be unique")
        seen[f.stem] = f
    return files


def read_patch(path: str | os.PathLike, data: bytes | None = None) -> np.ndarray:
    """One patch as uint8 [96, 96, 3] (from ``data``, the file's bytes, when given); an
    :class:`ImageError` naming the file otherwise."""
    import io

    from PIL import Image, UnidentifiedImageError

    from tfds_builder.hcd import bitdepth

    try:
        with Image.open(io.BytesIO(data) if data is not None else path) as im:
            mode = im.mode
            wide = mode == "RGB" and bitdepth.not_8bit(im)  # 16-bit RGB opens as "RGB": the header tells
            array = None if wide else np.asarray(im)
    except (OSError, UnidentifiedImageError, ValueError) as e:
        raise ImageError(f"{path}: cannot be read as an image ({e})") from None
    if wide:
        raise ImageError(f"{path}: expected an 8-bit RGB patch, got {wide}")
    if array.shape != (IMAGE_SIZE, IMAGE_SIZE, 3) or array.dtype != np.uint8:
        raise ImageError(
            f"{path}: expected a {IMAGE_SIZE}x{IMAGE_SIZE} RGB patch (uint8, shape "
            f"({IMAGE_SIZE}, {IMAGE_SIZE}, 3)), got shape {tuple(array.shape)} dtype {array.dtype} "
            f"(Pillow mode {mode})"
        )
    return array


def read_batches(files: list[pathlib.Path], batch_size: int, threads: int = 4) -> Iterator[tuple[list, np.ndarray]]:
    """(files, uint8 [B,96,96,3]) batches; the next batch is decoded while the caller works."""
    with concurrent.futures.ThreadPoolExecutor(max_workers=threads) as pool:
        def load(chunk):
            return chunk, np.stack(list(pool.map(read_patch, chunk)))

        chunks = [files[i:i + batch_size] for i in range(0, len(files), batch_size)]
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as ahead:
            pending = ahead.submit(load, chunks[0]) if chunks else None
            for k in range(len(chunks)):
                chunk, images = pending.result()
                pending = ahead.submit(load, chunks[k + 1]) if k + 1 < len(chunks) else None
                yield chunk, images


# --------------------------------------------------------------------------- models
def load_scorer(model_path: str | os.PathLike, log: Callable[[str], None] = print, backend: str | None = None):
    """(score, description): ``score(uint8 [B,96,96,3]) -> float64 [B]`` tumour probabilities, for
    any model ``hcdtf.inference.backends`` reads (``backend=None``: detected from the path)."""
    from hcdtf.inference import backends

    scorer = backends.load(model_path, backend, log)
    return scorer, scorer.description


# --------------------------------------------------------------------------- entry point
def is_inside(path: pathlib.Path, directory: pathlib.Path) -> bool:
    try:
        path.resolve().relative_to(directory.resolve())
        return True
    except ValueError:
        return False


def format_row(patch_id: str, probability: float) -> str:
    """One submission line (``id,label``), as both the local and the Beam path write it."""
    return f"{patch_id},{probability:.8g}\n"


def check_out(out: pathlib.Path, images_dir: pathlib.Path) -> None:
    """``--out`` is a writable file path outside the image directory, or one clear error."""
    if is_inside(out, images_dir):
        raise ValueError(f"--out {str(out)!r} is inside the image directory {str(images_dir)!r}; "
                         "predict never writes there: choose a path outside it")
    if out.is_dir():
        raise ValueError(f"--out {str(out)!r} is a directory; give a file name, e.g. submission.csv")
    parent = out.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--out {str(out)!r}: cannot create {str(parent)!r}: {e.strerror}") from None
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(f"--out {str(out)!r}: the directory {str(parent)!r} is not writable; choose another path")


def predict(
    model_path: str | os.PathLike,
    images_dir: str | os.PathLike,
    out: str | os.PathLike,
    batch_size: int = 256,
    log: Callable[[str], None] = print,
    backend: str | None = None,
) -> dict:
    """Scores every patch in ``images_dir`` and writes ``out`` (``id,label``); returns a summary."""
    images_dir = pathlib.Path(images_dir)
    out = pathlib.Path(out)
    if batch_size < 1:
        raise ValueError(f"--batch-size must be >= 1, got {batch_size}")
    if not images_dir.is_dir():
        raise ImageError(f"--images {str(images_dir)!r} is not a directory")
    check_out(out, images_dir)
    files = list_images([images_dir])
    score, description = load_scorer(model_path, log, backend=backend)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    t0 = time.time()
    n = 0
    log(f"scoring {len(files)} patches from {images_dir} with {description}")
    try:
        with open(tmp, "w", newline="") as f:
            f.write("id,label\n")
            for batch_no, (chunk, images) in enumerate(read_batches(files, batch_size)):
                probs = score(images)
                f.writelines(format_row(p.stem, s) for p, s in zip(chunk, probs))
                n += len(chunk)
                if (batch_no + 1) % 20 == 0:
                    log(f"  {n}/{len(files)} ({n / (time.time() - t0):.0f} patches/s)")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    seconds = time.time() - t0
    log(f"wrote {n} predictions to {out} in {seconds:.1f} s ({n / max(seconds, 1e-9):.0f} patches/s)")
    return {"out": str(out), "n": n, "model": description, "seconds": round(seconds, 3)}
