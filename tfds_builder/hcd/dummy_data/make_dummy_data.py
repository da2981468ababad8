"""Regenerates the tiny fake raw files that `hcd_dataset_builder_test.py` builds from.

    python tfds_builder/hcd/dummy_data/make_dummy_data.py

Deterministic: the same bytes on every run (fixed seeds, no timestamps in the HDF5 or gzip
headers). The files have the real formats, only fewer and simpler patches:

* ``kaggle/``: ``train/<40-hex id>.tif`` (20 patches, 10 per label), ``train_labels.csv``
  (``id,label``) and ``test/<id>.tif`` (3 unlabelled patches). 96x96 RGB uint8 TIFFs, deflate-
  compressed (the real ones are uncompressed; Pillow reads both) to keep the repository small.
  With the default 80/10/10 split: train 16, validation 2, test 2, kaggle_test 3.
* ``pcam/``: ``camelyonpatch_level_2_split_{train,valid,test}_{x,y}.h5`` with datasets ``x``
  (N x 96 x 96 x 3 uint8) and ``y`` (N x 1 x 1 x 1 uint8), as in the PatchCamelyon release.
  train (8 patches) is stored gzipped (``.h5.gz``, as downloaded), valid and test (4 each)
  decompressed, so the test covers both.

Patches are blocky colour fields (12x12 upsampled 8x), which compress to a few hundred bytes.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import pathlib
import shutil

import h5py
import numpy as np
from PIL import Image

HERE = pathlib.Path(__file__).resolve().parent
SEED = 20181126  # any fixed number


def _patch(rng: np.random.Generator, label: int) -> np.ndarray:
    """A 96x96x3 uint8 patch: pink background, purple blocks; tumour patches get a pale centre."""
    small = np.empty((12, 12, 3), np.float64)
    small[:] = (235, 180, 215)  # eosin pink
    nuclei = rng.random((12, 12)) < 0.35
    small[nuclei] = (90, 50, 140)  # haematoxylin purple
    if label:
        small[4:8, 4:8] = (170, 120, 190)  # larger, paler nuclei in the centre 32x32
    small += rng.integers(-12, 13, size=(12, 12, 1))
    image = np.kron(np.clip(small, 0, 255), np.ones((8, 8, 1)))
    return image.astype(np.uint8)


def _clean(path: pathlib.Path) -> None:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)


def make_kaggle(out: pathlib.Path, n_per_label: int = 10, n_test: int = 3) -> None:
    _clean(out)
    (out / "train").mkdir()
    (out / "test").mkdir()
    rng = np.random.default_rng(SEED)
    rows = []
    for k in range(2 * n_per_label):
        label = k % 2
        id_ = hashlib.sha1(f"hcd-dummy-train-{k}".encode()).hexdigest()
        Image.fromarray(_patch(rng, label)).save(out / "train" / f"{id_}.tif", compression="tiff_adobe_deflate")
        rows.append(f"{id_},{label}\n")
    with open(out / "train_labels.csv", "w", newline="") as f:
        f.write("id,label\n")
        f.writelines(rows)
    for k in range(n_test):
        id_ = hashlib.sha1(f"hcd-dummy-test-{k}".encode()).hexdigest()
        Image.fromarray(_patch(rng, k % 2)).save(out / "test" / f"{id_}.tif", compression="tiff_adobe_deflate")


def write_pcam_split(out: pathlib.Path, name: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    """Writes ``camelyonpatch_level_2_split_<name>_{x,y}.h5`` (or ``.h5.gz``) like the PCam release."""
    for key, array in (("x", images), ("y", labels.reshape(-1, 1, 1, 1).astype(np.uint8))):
        stem = f"camelyonpatch_level_2_split_{name}_{key}.h5"
        buffer = io.BytesIO()
        with h5py.File(buffer, "w", track_order=False) as f:
            f.create_dataset(key, data=array, compression="gzip", chunks=(1,) + array.shape[1:], track_times=False)
        data = buffer.getvalue()
        if gz:
            with open(out / (stem + ".gz"), "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as f:
                f.write(data)
        else:
            (out / stem).write_bytes(data)


def make_pcam(out: pathlib.Path, counts=(("train", 8, True), ("valid", 4, False), ("test", 4, False))) -> None:
    _clean(out)
    rng = np.random.default_rng(SEED + 1)
    for name, n, gz in counts:
        labels = np.arange(n) % 2
        images = np.stack([_patch(rng, int(l)) for l in labels])
        write_pcam_split(out, name, images, labels, gz)


def main() -> None:
    make_kaggle(HERE / "kaggle")
    make_pcam(HERE / "pcam")
    total = sum(p.stat().st_size for p in HERE.rglob("*") if p.is_file() and p.suffix != ".py")
    print(f"dummy data written to {HERE} ({total / 1024:.0f} KiB)")


if __name__ == "__main__":
    main()
