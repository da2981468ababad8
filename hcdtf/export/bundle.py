"""One export version: every artifact written in a hidden staging directory, then renamed into place.

``<export_dir>/`` after ``export_model(..., formats=FORMATS, quantize="int8")`` at version 1::

    models.config, batching_parameters.txt   TF Serving model config and batching parameters
    1/                    SavedModel (TF Serving's version directory), assets/hcdtf_metadata.json,
                          assets.extra/tf_serving_warmup_requests
    1.keras               the float32 Keras model
    1-onnx/model.onnx     ONNX (ONNX Runtime)         each runtime directory also holds
    1-openvino/model.xml  OpenVINO IR, float32        hcdtf_metadata.json
    1-openvino-int8/      OpenVINO IR, int8 (NNCF), accuracy-guarded
    1-openvino-bf16/      OpenVINO IR computed in bfloat16 (CPUs with native BF16), accuracy-guarded
    1-litert/model.tflite LiteRT (TFLite flatbuffer)

The SavedModel is always written: it is what TF Serving loads, and its directory appearing is
what makes the version exist. Everything is written under ``.tmp-<version>-<pid>-*`` (not a
number, so TF Serving ignores it) and renamed when complete, the SavedModel directory last: a kill
at any instant leaves no half-written visible file, and the hidden staging directory of a dead
process is removed by the next export.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import re
import shutil
import tempfile
from typing import Callable, Iterable

from hcdtf import precision
from hcdtf.export import int8 as int8_lib
from hcdtf.rundir import kill_point
from hcdtf.export import runtimes, serving
from hcdtf.export.signatures import METADATA_ASSET, write_metadata, write_saved_model


@dataclasses.dataclass
class Int8Data:
    """What int8 quantisation needs: calibration patches (uint8 [N,96,96,3]) and a function that
    yields the test split as (uint8 images, labels) batches, for the accuracy guard."""

    calibration: "object"
    test_batches: Callable[[], Iterable]
    margin: float = int8_lib.DEFAULT_MARGIN


def artifact_name(version: int, kind: str) -> str:
    return {"saved_model": str(version), "keras": f"{version}.keras"}.get(kind, f"{version}-{kind}")


def next_version(export_dir: pathlib.Path) -> int:
    """One more than any version number used in ``export_dir`` (by a SavedModel or a sibling)."""
    used = [int(m.group(1)) for p in export_dir.glob("*") if (m := re.fullmatch(r"(\d+)(?:[.-].*)?", p.name))]
    return max(used, default=0) + 1


def check_free(export_dir: pathlib.Path, version: int, kinds: Iterable[str]) -> None:
    taken = [export_dir / artifact_name(version, k) for k in ("saved_model", "keras", *kinds)]
    taken = [p for p in taken if p.exists() or p.is_symlink()]
    if taken:
        raise FileExistsError(
            f"{taken[0]} already exists; TF Serving versions are immutable. Pass another --version "
            "or leave it out to use the next free number"
        )


def writable_dir(export_dir: pathlib.Path) -> pathlib.Path:
    """``export_dir``, created if needed; one clear error if it is a file or cannot be written."""
    if export_dir.exists() and not export_dir.is_dir():
        raise ValueError(f"--export-dir {str(export_dir)!r} is a file; give a directory (the TF Serving base path)")
    try:
        export_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ValueError(f"--export-dir {str(export_dir)!r} cannot be created: {e.strerror}") from None
    if not os.access(export_dir, os.W_OK | os.X_OK):
        raise ValueError(f"--export-dir {str(export_dir)!r} is not writable; choose a directory you can write to")
    return export_dir


def remove_dead_staging(export_dir: pathlib.Path, log: Callable[[str], None]) -> None:
    """Deletes staging directories left by exports that were killed (their process is gone)."""
    for p in export_dir.glob(".tmp-*"):
        m = re.fullmatch(r"\.tmp-\d+-(\d+)-.*", p.name)
        if not m or _alive(int(m.group(1))):
            continue
        shutil.rmtree(p, ignore_errors=True)
        log(f"removed {p}, left by an export that was interrupted")


def remove_incomplete_versions(export_dir: pathlib.Path, log: Callable[[str], None]) -> None:
    """Deletes the artifacts of versions whose SavedModel never appeared (an export killed while
    renaming), unless a live export is still staging that version: such a version never existed."""
    kinds = ("keras", *runtimes.MODEL_FILES)
    live = {m.group(1) for p in export_dir.glob(".tmp-*")
            if (m := re.fullmatch(r"\.tmp-(\d+)-(\d+)-.*", p.name)) and _alive(int(m.group(2)))}
    for p in export_dir.iterdir():
        m = re.fullmatch(r"(\d+)(?:\.keras|-(.+))", p.name)
        if not m or m.group(1) in live or (export_dir / m.group(1)).exists():
            continue
        if p.name != artifact_name(int(m.group(1)), m.group(2) or "keras") or (m.group(2) or "keras") not in kinds:
            continue
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        log(f"removed {p}: its version's SavedModel was never published (an export was interrupted)")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _with(metadata: dict, **extra) -> dict:
    return {**metadata, **extra}


def write_runtime_models(model, metadata: dict, staging: pathlib.Path, kinds, int8: Int8Data | None,
                         log: Callable[[str], None]) -> dict:
    """Writes each runtime's model into ``staging/<kind>``; returns the guards' figures by
    variant ({} without int8/bf16). Raises :class:`~hcdtf.export.int8.PrecisionRefused` before
    anything is published. Each model's metadata names its precision and what a loader must set
    to compute in it (``runtime_settings``: OpenVINO's files cannot carry it)."""
    figures = {}
    for kind in kinds:
        if kind in ("openvino-int8", "openvino-bf16"):
            continue
        runtimes.write_runtime_model(model, kind, staging / kind)
        write_metadata(staging / kind / METADATA_ASSET, _with(metadata, format=kind, precision="float32",
                                                              runtime_settings=precision.runtime_settings(kind, "float32")))
        log(f"  {kind}: converted")
    variants = [k.removeprefix("openvino-") for k in kinds if k in ("openvino-int8", "openvino-bf16")]
    if not variants:
        return figures
    if int8 is None:
        raise ValueError(f"--quantize {variants[0]} needs test data for its accuracy guard (export a run directory)")
    fp32_dir = staging / "openvino"
    if not (fp32_dir / "model.xml").is_file():  # the variants' reference, not published
        fp32_dir = staging / "openvino-reference"
        runtimes.write_runtime_model(model, "openvino", fp32_dir)
    for variant in variants:
        name, kind = int8_lib.VARIANTS[variant]
        if variant == "int8":
            xml = int8_lib.quantize(fp32_dir / "model.xml", int8.calibration, staging / kind)
        else:
            xml = int8_lib.bf16_copy(fp32_dir / "model.xml", staging / kind)
        speed = {}
        labels, a, b = int8_lib.score_both(fp32_dir / "model.xml", xml, int8.test_batches(), variant, speed)
        guard = int8_lib.guard(labels, a, b, int8.margin, variant)
        if variant == "int8":
            guard["calibration_size"] = int(len(int8.calibration))
        guard["speed"] = speed
        figures[variant] = guard
        write_metadata(staging / kind / METADATA_ASSET,
                       _with(metadata, format=kind, precision=name, **{f"{variant}_guard": guard},
                             runtime_settings=precision.runtime_settings(kind, name)))
        log(f"  {variant}: AUC {guard[f'auc_{variant}']:.4f} vs float32 {guard['auc_float32']:.4f} on "
            f"{guard['n_test']} test patches (DeLong p = {guard['delong_p']:.3g}), "
            f"{speed.get(f'{variant}_vs_float32', '?')}x float32's speed on this CPU: accepted")
    return figures


def write_serving(model, metadata: dict, staging: pathlib.Path, model_name: str, log) -> pathlib.Path:
    saved = staging / "saved_model"
    write_saved_model(model, saved, metadata)
    try:
        serving.write_warmup(saved, model_name)
    except serving.MissingServingApi as e:
        log(f"  no TF Serving warm-up file: {e}")
    return saved


def publish(staging: pathlib.Path, export_dir: pathlib.Path, version: int, kinds) -> pathlib.Path:
    """Renames the staged artifacts into place, the SavedModel directory last."""
    check_free(export_dir, version, kinds)  # another export may have taken the number meanwhile
    moves = [(staging / k, export_dir / artifact_name(version, k)) for k in kinds]
    moves.append((staging / "model.keras", export_dir / artifact_name(version, "keras")))
    done = []
    try:
        for src, dst in moves:
            kill_point("export.rename")
            os.rename(src, dst)
            done.append(dst)
        # The moment TF Serving can see the version. (Renaming onto an existing empty directory
        # would succeed; check_free ruled that out.)
        target = export_dir / artifact_name(version, "saved_model")
        kill_point("export.rename")
        os.rename(staging / "saved_model", target)
    except BaseException:
        for dst in done:  # a version without its SavedModel does not exist: take it all back
            shutil.rmtree(dst, ignore_errors=True) if dst.is_dir() else dst.unlink(missing_ok=True)
        raise
    return target


def export_model(model, metadata: dict, export_dir, version: int | None = None, formats=("saved_model",),
                 quantize=None, int8: Int8Data | None = None,
                 log: Callable[[str], None] = print) -> pathlib.Path:
    """Exports a float32 hcdtf classifier as version ``version`` (default: next free) of
    ``export_dir`` in ``formats`` (+ int8); returns the SavedModel version directory."""
    kinds = runtimes.check_formats(formats, quantize)
    export_dir = writable_dir(pathlib.Path(export_dir))
    remove_dead_staging(export_dir, log)
    remove_incomplete_versions(export_dir, log)
    version = next_version(export_dir) if version is None else int(version)
    check_free(export_dir, version, kinds)
    model_name = export_dir.resolve().name
    staging = pathlib.Path(tempfile.mkdtemp(prefix=f".tmp-{version}-{os.getpid()}-", dir=export_dir))
    try:
        figures = write_runtime_models(model, metadata, staging, kinds, int8, log)
        meta = _with(metadata, format="saved_model", precision="float32",
                     runtime_settings=precision.runtime_settings("saved_model", "float32"),
                     artifacts=[artifact_name(version, k) for k in ("saved_model", "keras", *kinds)])
        for variant, guard in figures.items():
            meta[f"{variant}_guard"] = guard
        write_serving(model, meta, staging, model_name, log)
        model.save(str(staging / "model.keras"))
        target = publish(staging, export_dir, version, kinds)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    try:
        serving.write_server_files(export_dir, model_name, f"/models/{model_name}")
    except serving.MissingServingApi as e:
        log(f"  no models.config: {e}")
    return target
