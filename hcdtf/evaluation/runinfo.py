"""How a run identifies itself in a comparison: one normalised record per run directory.

:func:`read_run_info` turns a run directory into what a report needs. The run's summary and kind
come from :class:`hcdtf.rundir.RunDir`, which reads runs of every hcdtf version with today's names
(``transfer``, ``kind``); what a summary lacks (``seed``, ``data.fold``, an older run's transfer
strategy) is read from the raw ``config.yaml``, unvalidated, so that a report reads any run.

:func:`model_key` says which runs are repeats of one model (same kind, arch, transfer strategy,
kind of initial weights, and stain normaliser and augmentation where a run uses them) and
:func:`repeat_key` pairs repeats across models (same seed and fold).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import warnings
from pathlib import Path
from typing import Any, Optional

__all__ = ["RunInfo", "arch_key", "model_key", "read_json", "read_run_info", "repeat_key", "weights_kind"]

from hcdtf.models.registry import TRANSFERS

_NUMBERS = ("depth", "params_total", "params_trainable", "wall_time_s", "images_per_s",
            "flops_per_image")


@dataclasses.dataclass(frozen=True)
class RunInfo:
    """What a comparison needs to know about one run; None where the run did not record it."""

    arch: Optional[str] = None
    kind: Optional[str] = None  # "cnn" or "baseline"
    transfer: Optional[str] = None  # "freeze_base" / "fine_tune" (CNN runs only)
    trainable_from: Optional[str] = None  # fine-tuning from this stage on (None: all layers)
    weights: Optional[str] = None  # what the run started from, as recorded
    weights_kind: Optional[str] = None  # "imagenet", "none" (random init) or "file"
    features: Optional[str] = None  # baseline input features (pixels / center32 / gray)
    seed: Optional[int] = None
    fold: Optional[int] = None
    depth: Optional[int] = None
    params_total: Optional[float] = None
    params_trainable: Optional[float] = None
    wall_time_s: Optional[float] = None
    images_per_s: Optional[float] = None
    flops_per_image: Optional[float] = None
    data_dir: Optional[str] = None
    dataset_config: Optional[str] = None
    stain_normalize: Optional[str] = None  # data.stain_normalize; None: none (the default) or not recorded
    stain_augment: Optional[float] = None  # data.stain_augment; None: 0 (the default) or not recorded
    split_seed: Optional[int] = None  # a MIL run's fold draw (mil.split_seed); None: 0 (the default) or no folds

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``, None if there is no such file; a ValueError naming the file
    if it is not a JSON object."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def _read_config(path: Path) -> dict[str, Any]:
    """The raw config.yaml as a dict (no validation: a report reads runs of any version)."""
    import yaml

    if not path.is_file():
        return {}
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return data if isinstance(data, dict) else {}


def _number(value: Any, key: str, where: Path) -> float | None:
    """A numeric field, or None (with a warning when it is present but not a number)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        try:
            value = float(value)
        except (TypeError, ValueError):
            warnings.warn(f"{where}: field {key}={value!r} is not a number; ignored", stacklevel=3)
            return None
    return value if math.isfinite(value) else None


def _integer(value: Any, key: str, where: Path) -> int | None:
    number = _number(value, key, where)
    if number is None:
        return None
    if number != int(number):
        warnings.warn(f"{where}: field {key}={value!r} is not an integer; ignored", stacklevel=3)
        return None
    return int(number)


def weights_kind(weights: Any) -> str | None:
    """'imagenet', 'none' (random initialisation, however it was recorded) or 'file'."""
    if weights is None:
        return None
    text = str(weights).strip().lower()
    if text.startswith("imagenet"):
        return "imagenet"
    if text in ("", "null") or text.startswith("none") or text.startswith("random"):
        return "none"
    return "file"


def arch_key(arch: Any) -> str:
    """'ResNet-34', 'resnet34', 'ResNet34' -> 'resnet34': our arch names meet the paper's."""
    return re.sub(r"[^a-z0-9]", "", str(arch).lower())


def _depth_from_arch(arch: Any) -> int | None:
    match = re.fullmatch(r"resnet(\d+)(v\d)?", arch_key(arch)) if arch else None
    return int(match.group(1)) if match else None


def read_run_info(run_dir: str | Path | None) -> RunInfo:
    """The :class:`RunInfo` of a run directory, from ``train_summary.json`` and ``config.yaml``.

    ``None`` (a bare predictions file) or a directory without either file gives an empty record.
    Invalid JSON or YAML is a ValueError naming the file.
    """
    if run_dir is None:
        return RunInfo()
    from hcdtf import compat
    from hcdtf.rundir import RunDir

    mil = read_json(Path(run_dir) / "mil_metrics.json")  # `hcdtf mil evaluate`'s folder: its run says what it is
    if mil and not RunDir(run_dir).finished():
        # RUN/eval's parent first: the recorded absolute path may since hold another run
        run_dir = next((p for p in (Path(run_dir).parent, Path(str(mil.get("run")))) if RunDir(p).finished()),
                       run_dir)
    run = RunDir(run_dir)
    where = run.summary_path
    read_json(where)  # a file that is not JSON is an error naming it
    summary = run.summary() or {}  # today's names (kind, transfer) for runs of any version
    config = _read_config(run.config_path)
    model_cfg = config.get("model") if isinstance(config.get("model"), dict) else {}
    data_cfg = config.get("data") if isinstance(config.get("data"), dict) else {}
    baseline_cfg = config.get("baseline") if isinstance(config.get("baseline"), dict) else {}

    arch = summary.get("arch") or None
    kind = run.kind() if summary or run.run_json_path.is_file() else None
    if kind is None and "logistic" in arch_key(arch or ""):
        kind = "baseline"
    transfer = summary.get("transfer")
    if transfer not in TRANSFERS and kind == "cnn":
        transfer = compat.config_value(config, "model.transfer")
    transfer = transfer if kind == "cnn" and transfer in TRANSFERS else None
    weights = None
    if kind == "cnn":  # older summaries may lack it: the config's request (null means none)
        weights = summary["weights"] if "weights" in summary else (
            model_cfg.get("weights") or "none" if "weights" in model_cfg else None)
    fold = summary["fold"] if "fold" in summary else config.get("fold", data_cfg.get("fold"))
    numbers = {key: _number(summary.get(key), key, where) for key in _NUMBERS}
    if numbers["depth"] is None and kind == "cnn":
        numbers["depth"] = _depth_from_arch(arch)
    return RunInfo(
        arch=str(arch) if arch is not None else None,
        kind=kind,
        transfer=transfer,
        trainable_from=(summary.get("trainable_from") or model_cfg.get("trainable_from"))
        if kind == "cnn" else None,
        weights=str(weights) if weights is not None else None,
        weights_kind=weights_kind(weights),
        features=(summary.get("features") or baseline_cfg.get("features"))
        if kind == "baseline" else None,
        seed=_integer(summary["seed"] if "seed" in summary else config.get("seed"), "seed", where),
        fold=_integer(fold, "fold", where),
        **{**numbers, "depth": int(numbers["depth"]) if numbers["depth"] is not None else None},
        data_dir=str(data_cfg["data_dir"]) if data_cfg.get("data_dir") else None,
        dataset_config=str(data_cfg["dataset_config"]) if data_cfg.get("dataset_config") else None,
        stain_normalize=_stain_normalize(data_cfg.get("stain_normalize")),
        stain_augment=_number(data_cfg.get("stain_augment"), "data.stain_augment", run.config_path) or None,
        split_seed=_split_seed(summary, config, where),
    )


def _split_seed(summary: dict, config: dict, where: Path) -> int | None:
    """The seed a MIL run drew its folds with, when it used folds and not the default 0 (runs
    written before the summary had this field record it in config.yaml's ``mil`` section only)."""
    mil_cfg = config.get("mil") if isinstance(config.get("mil"), dict) else {}
    if not (summary.get("folds") or mil_cfg.get("folds")):
        return None
    value = summary["split_seed"] if summary.get("split_seed") is not None else mil_cfg.get("split_seed")
    return _integer(value, "split_seed", where) or None


def _stain_normalize(value: Any) -> str | None:
    """The stain normaliser a run was trained with; None for none (the default, and older runs)."""
    text = str(value).strip().lower() if value is not None else ""
    return None if text in ("", "none", "null") else text


def model_key(info: RunInfo) -> tuple | None:
    """Runs with equal keys are repeats of one model; None when the run does not say what it is."""
    if info.arch is None or info.kind is None:
        return None
    key = (info.kind, info.arch, info.transfer, info.trainable_from, info.weights_kind, info.features)
    # the stain layer and augmentation make another model; runs without them keep their old key
    stain = (("stain_normalize", info.stain_normalize) if info.stain_normalize else ()) + (
        ("stain_augment", info.stain_augment) if info.stain_augment else ())
    # MIL folds drawn with another split seed hold other slides: such runs are not repeats of the
    # default draw's runs, nor paired with them by fold number
    split = ("split_seed", info.split_seed) if info.split_seed is not None else ()
    return key + stain + split


def repeat_key(info: RunInfo) -> tuple[int | None, int | None]:
    """Repeats of different models are paired when they share this key: (seed, fold)."""
    return (info.seed, info.fold)
