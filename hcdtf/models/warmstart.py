"""`weights=<file>`: which kind of weights file it is, and one line when it is none we take.

Two kinds of file are accepted besides `"imagenet"` and `None`:

* weights of the base network alone: what `hcdtf weights import` writes for ResNet18/34, or a
  `keras.applications` `*_notop.h5` for ResNet50/101/152 (loaded by the base's constructor);
* a whole classifier of the same architecture, i.e. a run's `checkpoints/best.weights.h5`
  (a Keras 3 `.weights.h5` of `build_classifier`'s model): a warm start from another run. It
  is loaded into the built classifier (base and head); its transfer strategy, `trainable_from`
  and dropout rate may differ, since none of them changes the variables.

Anything else (not HDF5, a checkpoint of another architecture, a file whose variables do not
fit) is a `WeightsFileError` (a `ValueError`) with one line naming the file and the kinds above,
instead of h5py's or Keras's multi-kilobyte message.
"""

from __future__ import annotations

import os

ACCEPTED = (
    "--weights (model.weights) takes imagenet, none, a base-network weights file (`hcdtf weights "
    "import` output for ResNet18/34, a keras.applications *_notop.h5 for ResNet50/101/152) or a "
    "run's checkpoints/best.weights.h5 of the same --arch (warm start)"
)


class WeightsFileError(ValueError):
    """A `weights=<file>` that cannot be used for the model being built (one line)."""


def _first_line(error: BaseException, limit: int = 160) -> str:
    text = str(error).strip().splitlines()
    line = text[0] if text else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def classifier_checkpoint(path, arch: str) -> str | None:
    """The checkpoint's model name if ``path`` holds a whole hcdtf classifier built for ``arch``;
    None if it is some other HDF5 file (base weights, for the constructor to try); a
    `WeightsFileError` if it is missing, not HDF5, or a classifier of another architecture."""
    import h5py

    from hcdtf.models.registry import BASE_NAME, HEAD_LOGIT

    shown = os.fspath(path)
    if os.path.isdir(shown):
        raise WeightsFileError(f"weights {shown!r} is a directory; {ACCEPTED}")
    if not os.path.isfile(shown):
        raise WeightsFileError(f"weights file {shown!r} does not exist; {ACCEPTED}")
    try:
        with h5py.File(shown, "r") as f:
            layers = f.get("layers")
            if not isinstance(layers, h5py.Group):
                return None  # the legacy keras.applications layout: base weights
            names = set()
            for child in layers.values():
                group = child.get("vars") if isinstance(child, h5py.Group) else None
                if group is not None and "name" in group.attrs:
                    names.add(str(group.attrs["name"]))
            if not {BASE_NAME, HEAD_LOGIT} <= names:
                return None
            top = f.get("vars")
            model_name = str(top.attrs.get("name", "")) if isinstance(top, h5py.Group) else ""
    except OSError as e:  # h5py: "file signature not found", truncated files, ...
        raise WeightsFileError(f"weights file {shown!r} is not an HDF5 weights file ({_first_line(e)}); "
                               f"{ACCEPTED}") from None
    from hcdtf.models.registry import ARCHS

    saved_arch = model_name.split("_", 1)[0]
    saved_arch = next((a for a in ARCHS if a.lower() == saved_arch.lower()), saved_arch)
    if saved_arch and saved_arch.lower() != arch.lower():
        raise WeightsFileError(
            f"weights file {shown!r} is a checkpoint of a {saved_arch} classifier (model {model_name!r}), "
            f"not of a {arch}: use --arch with its architecture, or another file; {ACCEPTED}")
    return model_name or "classifier"


def load_checkpoint(model, path, arch: str) -> None:
    """Loads a whole-classifier checkpoint into ``model`` (built with no weights), or one line."""
    try:
        model.load_weights(os.fspath(path))
    except Exception as e:  # noqa: BLE001 - Keras lists every layer; the user needs one line
        raise WeightsFileError(
            f"weights file {os.fspath(path)!r}: its variables do not fit a {arch} classifier "
            f"({_first_line(e)}); {ACCEPTED}") from None


def base_weights_error(path, arch: str, error: BaseException) -> WeightsFileError:
    """The one line for a file the base's constructor could not load."""
    return WeightsFileError(
        f"weights file {os.fspath(path)!r} does not hold weights of the {arch} base ({_first_line(error)}); "
        f"{ACCEPTED}")
