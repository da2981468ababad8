"""One patch file: reading and checking a 96x96 RGB uint8 TIFF, encoding it as PNG, and the pixel
hashes the audit records.

Speed (the checks read every one of 277k files before anything is written): an uncompressed RGB
TIFF, which is how Kaggle ships them, is checked from its header and the file size alone; any
other file is decoded to say what is wrong with it. Writing decodes each TIFF once for both the
PNG and the hashes. Pillow is imported lazily: only the kaggle config needs it.
"""

from __future__ import annotations

import io
import os

import numpy as np

from . import bitdepth, duplicates
from .errors import BadInputError

IMAGE_SHAPE = (96, 96, 3)


def read_tif(path: str) -> np.ndarray:
    """Reads a 96x96 RGB uint8 patch. Raises BadInputError naming the file otherwise."""
    return _read_checked(path, lambda im: np.asarray(im))


def check_tif(path: str) -> None:
    """Raises the BadInputError that :func:`read_tif` would, more cheaply: an uncompressed RGB
    TIFF (the Kaggle files) whose header is fine and whose pixel bytes all lie inside the file
    cannot fail to decode, so only its header is read; anything else is decoded."""
    _read_checked(path, lambda im: None if _raw_rgb_complete(path, im) else np.asarray(im))


def problem_kind(error: BadInputError) -> str:
    """The kind of problem (as counted in the metadata) a read_tif/check_tif error reports."""
    text = str(error)
    if "not a readable" in text:
        return "corrupt_image"
    if "expected 8-bit" in text:
        return "not_uint8_rgb"
    return "wrong_shape"


def hashes(image: np.ndarray) -> tuple[bytes, int, bool]:
    """(pixel digest, dHash, low detail) of one patch (duplicates.py)."""
    digests, dhash, low = duplicates.image_hashes(image)
    return digests[0], int(dhash[0]), bool(low[0])


def tif_to_png(path: str, level: int) -> tuple[bytes, tuple[bytes, int, bool]]:
    """read_tif + encode_png (same pixels, one decode), and the pixels' hashes."""
    buffer = io.BytesIO()

    def save(im):
        im.load()
        _check_mode_shape(path, im.mode, (im.size[1], im.size[0], 3), np.uint8)
        im.save(buffer, format="png", compress_level=level)
        return np.asarray(im)

    pixels = _read_checked(path, save, check=False)
    return buffer.getvalue(), hashes(pixels)


def encode_png(image: np.ndarray, level: int) -> bytes:
    """Losslessly encodes a uint8 RGB patch as PNG (what the `image` feature stores) at zlib
    ``level``."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="png", compress_level=level)
    return buffer.getvalue()


def _read_checked(path: str, fn, check: bool = True):
    from PIL import Image

    try:
        with Image.open(path) as im:
            mode = im.mode
            wide = mode == "RGB" and bitdepth.not_8bit(im)  # 16-bit RGB opens as "RGB": the header tells
            if wide:
                raise BadInputError(f"{path}: expected 8-bit RGB (uint8), got {wide}")
            if mode != "RGB":  # e.g. L, I;16, F, RGBA: decoded only to say what it is
                array = np.asarray(im)
                _check_mode_shape(path, mode, array.shape, array.dtype)
            result = fn(im)
    except BadInputError:
        raise
    except FileNotFoundError:
        raise BadInputError(f"{path}: file not found") from None
    except Exception as e:  # Pillow raises many types for corrupt files
        raise BadInputError(f"{path}: not a readable TIFF image ({type(e).__name__}: {e})") from None
    if check:
        shape = result.shape if isinstance(result, np.ndarray) else (im.size[1], im.size[0], 3)
        _check_mode_shape(path, mode, shape, result.dtype if isinstance(result, np.ndarray) else np.uint8)
    return result


def _check_mode_shape(path: str, mode: str, shape: tuple, dtype) -> None:
    if np.dtype(dtype) != np.uint8 or mode != "RGB":
        raise BadInputError(f"{path}: expected 8-bit RGB (uint8), got mode {mode!r} dtype {np.dtype(dtype)}")
    if tuple(shape) != IMAGE_SHAPE:
        raise BadInputError(f"{path}: expected a 96x96x3 image, got shape {tuple(shape)}")


def _raw_rgb_complete(path: str, im) -> bool:
    """True if ``im`` is an uncompressed 8-bit RGB TIFF whose strips all lie inside the file."""
    if im.format != "TIFF" or im.mode != "RGB" or not im.tile:
        return False
    file_size = os.path.getsize(path)
    for tile in im.tile:
        codec, (x0, y0, x1, y1), offset, args = tuple(tile)[:4]
        if codec != "raw" or not args or args[0] != "RGB":
            return False
        stride = abs(args[1]) if len(args) > 1 and args[1] else (x1 - x0) * 3
        if offset + stride * (y1 - y0) > file_size:
            return False  # truncated: decoding says so
    return True
