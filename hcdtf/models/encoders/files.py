"""The converted encoder file: one self-describing HDF5 file per encoder, and where it lives.

`hcdtf weights import` writes it; `--weights pretrained`, `hcdtf embed` and the classifier
read it. Layout::

    /               attrs: format = "hcdtf-encoder", version = 1,
                           config = JSON (architecture, preprocessing, embedding rule:
                           `convert.CONFIG_KEYS`), licence, source_path
    /weights/<name> float32 arrays, transformers Dinov2 names (see `convert`)

Default place: `$KERAS_HOME/models/hcdtf_<name>.encoder.h5` (the directory where the
ImageNet weights are looked for, `hcdtf.models.weights.keras_cache_dir`). Nothing is ever
downloaded implicitly. No TensorFlow here.
"""

import json
import pathlib

import numpy as np

from hcdtf.models import weights as weights_lib
from hcdtf.models.encoders import convert
from hcdtf.models.encoders import specs as specs_lib

FORMAT = "hcdtf-encoder"
VERSION = 1
SUFFIX = ".encoder.h5"


def slug(name):
    return "".join(c if c.isalnum() else "_" for c in str(name).lower())


def default_name(name):
    """The converted file's name for published encoder `name`, e.g. `hcdtf_uni.encoder.h5`."""
    return f"hcdtf_{slug(specs_lib.canonical_encoder(name))}{SUFFIX}"


def default_path(name, directory=None):
    """Where `--weights pretrained` looks for encoder `name`'s converted file: in `directory`
    (`model.encoder_dir`) if given, else in `$KERAS_HOME/models`."""
    base = pathlib.Path(directory).expanduser() if directory else weights_lib.keras_cache_dir()
    return base / default_name(name)


def write(path, config, weights, source=None):
    """Writes the file atomically; returns its path."""
    import h5py

    from hcdtf.atomic import atomic_output

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["format"] = FORMAT
            f.attrs["version"] = VERSION
            f.attrs["config"] = json.dumps(config, sort_keys=True)
            if specs_lib.is_encoder(config["name"]):
                f.attrs["licence"] = specs_lib.get_encoder(config["name"]).licence
            if source is not None:
                f.attrs["source_path"] = str(source)
            group = f.create_group("weights")
            for key in sorted(weights):
                group.create_dataset(key, data=np.asarray(weights[key], np.float32))
    return path


def is_encoder_file(path):
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT
    except (OSError, ValueError):
        return False


def read_config(path):
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT:
                raise convert.ConversionError(f"{path}: not an hcdtf encoder file "
                                              "(write one with `hcdtf weights import`)")
            version = int(f.attrs.get("version", 0))
            if version > VERSION:
                raise convert.ConversionError(f"{path}: encoder file version {version} is newer "
                                              f"than this hcdtf reads ({VERSION})")
            return json.loads(f.attrs["config"])
    except OSError as e:
        raise convert.ConversionError(f"{path}: cannot read ({e})")


def read(path):
    """`(config, weights)` from an encoder file."""
    import h5py

    config = read_config(path)
    with h5py.File(path, "r") as f:
        weights = {k: np.asarray(v) for k, v in f["weights"].items()}
    return config, weights


def import_checkpoint(src, arch=None, out=None):
    """Converts a hub folder / safetensors file and writes the encoder file: to `out` (a file,
    or an existing folder: then under its default name there, where `model.encoder_dir=<folder>`
    finds it), or (when the encoder is a published one) where `--weights pretrained` looks.
    Returns the path."""
    config, weights = convert.read_checkpoint(src, arch)
    if out is not None and pathlib.Path(out).is_dir():
        if not specs_lib.is_encoder(config["name"]):
            raise convert.ConversionError(
                f"{src}: not one of the published encoders, so it has no default name: give --out "
                "a file name, or --arch")
        out = pathlib.Path(out) / default_name(config["name"])
    if out is None:
        if not specs_lib.is_encoder(config["name"]):
            raise convert.ConversionError(
                f"{src}: not one of the published encoders, so it has no default place: "
                f"give --arch ({', '.join(specs_lib.ENCODERS)}) or --out")
        out = default_path(config["name"])
    return write(out, config, weights, source=pathlib.Path(src).resolve())


def pretrained_path(name, directory=None):
    """The converted file for published encoder `name` (in `directory`, else
    `$KERAS_HOME/models`), or `WeightsUnavailableError` saying how to get it."""
    spec = specs_lib.get_encoder(name)
    path = default_path(spec.name, directory)
    if path.is_file():
        return path
    where = "model.encoder_dir" if directory else "in $KERAS_HOME/models, default ~/.keras/models"
    raise weights_lib.WeightsUnavailableError(
        f"Weights for {spec.name} are not available: expected {path} ({where}). Nothing is "
        f"downloaded implicitly. To create it, "
        f"{spec.access_hint()}. Or train from random initialisation with `--weights none`.",
        path=path, url=f"https://huggingface.co/{spec.hub_id}", hint=spec.access_hint())


HUB_FILES = ("config.json", "model.safetensors", "preprocessor_config.json")


def fetch(name, token=None):
    """Downloads a published encoder's hub folder from Hugging Face (where the internet is
    reachable) into a temporary folder and imports it. Gated models need an access token
    (`HF_TOKEN`) of an account that was granted access; without one this says how to get it."""
    import os
    import tempfile
    import urllib.error
    import urllib.request

    spec = specs_lib.get_encoder(name)
    token = token or os.environ.get("HF_TOKEN")
    if spec.gated and not token:
        raise weights_lib.WeightsUnavailableError(
            f"{spec.name} is gated ({spec.licence}): {spec.access_hint()}; or set HF_TOKEN to a "
            "token of an account that was granted access and run `hcdtf weights fetch` again.")
    with tempfile.TemporaryDirectory(prefix="hcdtf-fetch-") as tmp:
        for filename in HUB_FILES:
            url = f"https://huggingface.co/{spec.hub_id}/resolve/main/{filename}"
            request = urllib.request.Request(url)
            if token:
                request.add_header("Authorization", f"Bearer {token}")
            try:
                with urllib.request.urlopen(request, timeout=60) as r, \
                        open(pathlib.Path(tmp) / filename, "wb") as f:
                    while chunk := r.read(1 << 20):
                        f.write(chunk)
            except urllib.error.HTTPError as e:
                if filename == "preprocessor_config.json" and e.code == 404:
                    continue
                raise weights_lib.WeightsUnavailableError(
                    f"downloading {url} failed (HTTP {e.code}): {spec.access_hint()}")
            except (urllib.error.URLError, OSError) as e:
                raise weights_lib.WeightsUnavailableError(
                    f"downloading {url} failed ({getattr(e, 'reason', e)}): {spec.access_hint()}")
        return import_checkpoint(tmp, spec.name)
