"""Typed configuration tree.

Every stage receives only its own sub-config (``cfg.data`` for the input pipeline, ``cfg.model``
for the network, ...), in the spirit of TF Model Garden. A config is built in three layers, each
overriding the previous one:

1. the defaults below (documented field by field in ``configs/base.yaml``),
2. one or more YAML files (``--config FILE``, later files win),
3. ``--set section.key=value`` overrides from the command line (values parsed as YAML scalars).

Unknown keys and values of the wrong type raise :class:`ConfigError`, whose message names the key,
the file and the valid choices. The resolved config is written into every run directory
(``config.yaml``) so that a run can be understood and repeated from its directory alone.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import re
import typing
from typing import Any, Optional

import yaml

# Each vocabulary is defined once, by the module that owns the concept (all TF-free); the CLI
# builds its choices from these names.
from hcdtf import compat
from hcdtf.models.logistic import FEATURES as BASELINE_FEATURES
from hcdtf.models.logistic import SOLVERS as BASELINE_SOLVERS
from hcdtf.models.registry import ARCHS, ENCODERS, STAGES, TRANSFERS, get_arch
from hcdtf.models.stain_params import METHODS as STAIN_METHODS
from hcdtf.runtime import DISTRIBUTIONS, PRECISIONS

STAIN_NORMALIZERS = ("none", *STAIN_METHODS)

OPTIMIZERS = ("adam", "sgd")
SCHEDULES = ("constant", "cosine", "plateau")
JIT_COMPILE = ("auto", "True", "False")
# Fields renamed since hcdtf 0.1: old YAML files and the config.yaml of old runs keep loading.
RENAMED = compat.CONFIG_KEYS  # the vocabulary of old names lives in hcdtf.compat
_LOG = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration file or override is invalid. The message is meant for the user."""


@dataclasses.dataclass
class DataConfig:
    data_dir: str = "outputs/tensorflow_datasets"
    dataset: str = "hcd"
    dataset_config: str = "kaggle"
    manual_dir: Optional[str] = None
    train_split: str = "train"
    validation_split: str = "validation"
    test_split: str = "test"
    augment: bool = True
    stain_jitter: float = 0.05
    cache: bool = False
    shuffle_buffer: int = 10000
    max_train_examples: Optional[int] = None
    max_eval_examples: Optional[int] = None
    fold: Optional[int] = None
    stain_normalize: str = "none"
    stain_target: Optional[str] = None
    stain_augment: float = 0.0
    centres: Optional[list[str]] = None
    test_centre: Optional[str] = None

    def validate(self) -> None:
        if self.test_centre is not None and self.centres is not None and self.test_centre in self.centres:
            raise ConfigError(f"data.test_centre {self.test_centre!r} is also in data.centres {self.centres}: "
                              "the held-out centre must not be trained on")
        _choice("data.stain_normalize", self.stain_normalize, STAIN_NORMALIZERS)
        if self.stain_normalize != "none" and not self.stain_target:
            raise ConfigError(f"data.stain_normalize={self.stain_normalize} needs data.stain_target=FILE "
                              "(a target written by hcdtf stain fit)")
        if self.fold is not None and self.fold < 0:
            raise ConfigError(f"data.fold must be a fold number >= 0 (or null), got {self.fold!r}")
        if not re.fullmatch(r"[a-z0-9_.]+", self.dataset_config or ""):
            raise ConfigError(
                f"data.dataset_config must be kaggle, pcam or the name of a custom config you built "
                f"(e.g. kaggle_skip_bad), got {self.dataset_config!r}"
            )
        _positive("data.shuffle_buffer", self.shuffle_buffer)
        if not 0.0 <= self.stain_augment <= 0.5:
            raise ConfigError(f"data.stain_augment must be in [0, 0.5], got {self.stain_augment!r}")
        if not 0.0 <= self.stain_jitter <= 0.5:
            raise ConfigError(f"data.stain_jitter must be in [0, 0.5], got {self.stain_jitter!r}")


@dataclasses.dataclass
class ModelConfig:
    arch: str = "ResNet18"
    weights: Optional[str] = "imagenet"
    transfer: str = "fine_tune"
    trainable_from: Optional[str] = None
    dropout: float = 0.2
    fallback_to_scratch: bool = False
    encoder_dir: Optional[str] = None

    def validate(self) -> None:
        _choice("model.arch", self.arch, ARCHS + ENCODERS)
        if (not get_arch(self.arch).pretrained and str(self.weights).lower() == "imagenet"
                and not self.fallback_to_scratch):
            raise ConfigError(f"model.weights: {self.arch} has no published ImageNet weights; train it "
                              "from random initialisation with model.weights=none (--weights none)")
        _choice("model.transfer", self.transfer, TRANSFERS)
        if self.trainable_from is not None:
            _choice("model.trainable_from", self.trainable_from, STAGES)
            if self.transfer != "fine_tune":
                raise ConfigError("model.trainable_from selects what to fine-tune: it needs "
                                  f"model.transfer=fine_tune, got {self.transfer!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {self.dropout!r}")


@dataclasses.dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 64
    optimizer: str = "adam"
    learning_rate: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "cosine"
    warmup_epochs: float = 0.0
    class_weight: bool = False
    precision: str = "auto"
    distribution: str = "auto"
    early_stopping_patience: int = 5
    steps_per_epoch: Optional[int] = None
    feature_cache: bool = True
    jit_compile: str = "auto"
    layer_decay: float = 1.0

    def validate(self) -> None:
        _positive("train.epochs", self.epochs)
        if not 0.0 < self.layer_decay <= 1.0:
            raise ConfigError(f"train.layer_decay must be in (0, 1] (1 = off), got {self.layer_decay!r}")
        _positive("train.batch_size", self.batch_size)
        _choice("train.optimizer", self.optimizer, OPTIMIZERS)
        _choice("train.schedule", self.schedule, SCHEDULES)
        _choice("train.precision", self.precision, PRECISIONS)
        _choice("train.distribution", self.distribution, DISTRIBUTIONS)
        _choice("train.jit_compile", str(self.jit_compile), JIT_COMPILE)
        if self.learning_rate <= 0:
            raise ConfigError(f"train.learning_rate must be > 0, got {self.learning_rate!r}")
        if self.steps_per_epoch is not None:
            _positive("train.steps_per_epoch", self.steps_per_epoch)


@dataclasses.dataclass
class BaselineConfig:
    features: str = "pixels"
    solver: str = "sgd"
    alpha: float = 1e-2
    C: float = 1e-3
    epochs: int = 5
    batch_size: int = 512

    def validate(self) -> None:
        _choice("baseline.features", self.features, tuple(BASELINE_FEATURES))
        _choice("baseline.solver", self.solver, BASELINE_SOLVERS)
        _positive("baseline.epochs", self.epochs)
        _positive("baseline.batch_size", self.batch_size)


@dataclasses.dataclass
class EvalConfig:
    split: str = "test"
    threshold: str = "0.5"
    tta: bool = False
    n_bootstrap: int = 1000
    batch_size: int = 128

    def validate(self) -> None:
        if self.threshold != "youden":
            try:
                t = float(self.threshold)
            except ValueError:
                raise ConfigError(
                    f"eval.threshold must be a number in (0, 1) or 'youden', got {self.threshold!r}"
                ) from None
            if not 0.0 < t < 1.0:
                raise ConfigError(f"eval.threshold must be in (0, 1), got {self.threshold!r}")
        _positive("eval.n_bootstrap", self.n_bootstrap)


@dataclasses.dataclass
class ExportConfig:
    """``hcdtf export``: where versions go, which runtimes and reduced-precision variants to write,
    and the accuracy guard an int8 or bf16 variant must pass."""

    export_dir: str = "outputs/models/hcd"
    version: Optional[int] = None
    formats: list[str] = dataclasses.field(default_factory=list)
    quantize: list[str] = dataclasses.field(default_factory=list)
    max_auc_drop: float = 0.002
    calibration_size: int = 300

    def validate(self) -> None:
        if self.version is not None:
            _positive("export.version", self.version)
        if self.max_auc_drop < 0:
            raise ConfigError(f"export.max_auc_drop must be >= 0, got {self.max_auc_drop!r}")
        _positive("export.calibration_size", self.calibration_size)


@dataclasses.dataclass
class PredictConfig:
    """``hcdtf predict``: scoring a folder of patches into a submission CSV."""

    batch_size: int = 256
    backend: Optional[str] = None
    runner: Optional[str] = None
    pipeline_options: list[str] = dataclasses.field(default_factory=list)

    def validate(self) -> None:
        _positive("predict.batch_size", self.batch_size)


@dataclasses.dataclass
class SlideConfig:
    """``hcdtf slide predict``: the grid, the tissue mask, scoring, the heat map's post-processing
    and how the run is carried out."""

    stride: int = 32
    mpp: Optional[float] = None
    min_tissue: float = 0.1
    min_saturation: float = 0.07
    tta: bool = False
    batch_size: int = 128
    score: str = "max"
    sigma: float = 2.0
    radius: int = 2
    min_probability: float = 0.05
    threads: int = 2
    checkpoint_seconds: float = 30.0
    backend: Optional[str] = None
    runner: Optional[str] = None
    pipeline_options: list[str] = dataclasses.field(default_factory=list)

    def validate(self) -> None:
        for key in ("stride", "batch_size", "radius", "threads"):
            _positive(f"slide.{key}", getattr(self, key))
        if self.mpp is not None:
            _positive("slide.mpp", self.mpp)
        for key in ("min_tissue", "min_probability"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"slide.{key} must be in [0, 1], got {getattr(self, key)!r}")
        if not 0.0 <= self.min_saturation < 1.0:
            raise ConfigError(f"slide.min_saturation must be in [0, 1), got {self.min_saturation!r}")
        for key in ("sigma", "checkpoint_seconds"):
            if getattr(self, key) < 0:
                raise ConfigError(f"slide.{key} must be >= 0, got {getattr(self, key)!r}")


@dataclasses.dataclass
class MilConfig:
    """``hcdtf mil train`` (the MIL model, its training, folds and seed) and ``mil evaluate|predict``
    (``maps``). The head's choices (``hcdtf.mil.HEADS``) are checked by the command: that vocabulary
    lives above this module."""

    head: str = "abmil"
    hidden: int = 128
    attention: int = 64
    dropout: float = 0.25
    epochs: int = 20
    learning_rate: float = 2e-4
    weight_decay: float = 1e-5
    balance: bool = True
    max_instances: Optional[int] = None
    folds: int = 5
    fold: int = 0
    split_seed: int = 0
    seed: int = 0
    bag_weight: float = 0.7
    k_sample: int = 8
    maps: bool = True

    def validate(self) -> None:
        for key in ("hidden", "attention", "epochs", "learning_rate", "k_sample"):
            _positive(f"mil.{key}", getattr(self, key))
        if self.max_instances is not None:
            _positive("mil.max_instances", self.max_instances)
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"mil.dropout must be in [0, 1), got {self.dropout!r}")
        if not 0.0 <= self.bag_weight <= 1.0:
            raise ConfigError(f"mil.bag_weight must be in [0, 1], got {self.bag_weight!r}")
        if self.weight_decay < 0:
            raise ConfigError(f"mil.weight_decay must be >= 0, got {self.weight_decay!r}")
        if self.folds == 1 or self.folds < 0:
            raise ConfigError(f"mil.folds must be 0 (no validation) or >= 2, got {self.folds!r}")
        if self.folds and not 0 <= self.fold < self.folds:
            raise ConfigError(f"mil.fold must be in 0..{self.folds - 1} (mil.folds = {self.folds}), got {self.fold!r}")


@dataclasses.dataclass
class Config:
    seed: int = 0
    deterministic: bool = True
    output_dir: str = "outputs/run"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    baseline: BaselineConfig = dataclasses.field(default_factory=BaselineConfig)
    eval: EvalConfig = dataclasses.field(default_factory=EvalConfig)
    export: ExportConfig = dataclasses.field(default_factory=ExportConfig)
    predict: PredictConfig = dataclasses.field(default_factory=PredictConfig)
    slide: SlideConfig = dataclasses.field(default_factory=SlideConfig)
    mil: MilConfig = dataclasses.field(default_factory=MilConfig)

    def validate(self) -> "Config":
        for f in dataclasses.fields(self):
            sub = getattr(self, f.name)
            if hasattr(sub, "validate"):
                sub.validate()
        if str(self.train.jit_compile) == "True" and self.deterministic:
            raise ConfigError(
                "train.jit_compile=True needs deterministic=false: Keras turns XLA off while "
                "TensorFlow op determinism is on (add --set deterministic=false)"
            )
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def dump_text(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def dump(self, path: str | pathlib.Path) -> None:
        pathlib.Path(path).write_text(self.dump_text())


def configs_dir() -> pathlib.Path:
    """The directory of the shipped YAML configs: ``configs/`` of the source tree, or the copy
    that ``pip install`` puts under ``<prefix>/share/hcdtf/configs``."""
    import sys

    for candidate in (
        pathlib.Path(__file__).resolve().parents[1] / "configs",
        pathlib.Path(sys.prefix) / "share" / "hcdtf" / "configs",
    ):
        if (candidate / "base.yaml").is_file():
            return candidate
    raise ConfigError("cannot find hcdtf's configs/ directory; reinstall hcdtf from its source tree")


def check_choice(key: str, value: Any, choices: tuple) -> None:
    """ConfigError naming ``key`` and the valid choices unless ``value`` is one of them."""
    if value not in choices:
        raise ConfigError(f"{key}: invalid value {value!r}; valid choices: {', '.join(map(str, choices))}")


_choice = check_choice


def _positive(key: str, value: Any) -> None:
    if value <= 0:
        raise ConfigError(f"{key} must be > 0, got {value!r}")


# str fields whose values are "auto", "True" or "False": `--set train.jit_compile=true` gives YAML's
# bool True, taken as "True".
_BOOL_OR_AUTO = ("train.jit_compile",)


def _coerce(key: str, value: Any, hint: Any, source: str) -> Any:
    """Checks ``value`` against the dataclass field type ``hint``: int/float/str/bool, Optional,
    ``list[T]``, ``dict[str, T]`` and nested dataclasses."""
    origin = typing.get_origin(hint)
    if origin is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            return None
        return _coerce(key, value, args[0], source)
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(f"{source}: {key} must be a list, got {value!r}")
        return [_coerce(f"{key}[{i}]", v, item, source) for i, v in enumerate(value)]
    if origin is dict:
        _, item = typing.get_args(hint)
        if not isinstance(value, dict):
            raise ConfigError(f"{source}: {key} must be a mapping, got {value!r}")
        return {str(k): _coerce(f"{key}.{k}", v, item, source) for k, v in value.items()}
    if dataclasses.is_dataclass(hint):
        obj = hint()
        merge(obj, {} if value is None else value, source, key + ".")
        return obj
    if hint is bool:
        if isinstance(value, bool):
            return value
    elif hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "1e-3" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif hint is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        if isinstance(value, bool) and key in _BOOL_OR_AUTO:  # YAML reads true/false as bools
            return str(value)
    raise ConfigError(
        f"{source}: {key} must be of type {getattr(hint, '__name__', hint)}, got {value!r} "
        f"({type(value).__name__})"
    )


def _renamed(full: str, source: str, renamed: dict) -> str:
    """The current name of a renamed field (with a one-line notice), else ``full``."""
    new = renamed.get(full)
    if new is None:
        return full
    if (full, source) not in _NOTICES:
        _NOTICES.add((full, source))
        _LOG.warning("hcdtf: %s: %s is now called %s (the old name still works)", source, full, new)
    return new


_NOTICES: set[tuple[str, str]] = set()


def merge(obj: Any, updates: dict, source: str, prefix: str = "", renamed: dict = RENAMED) -> None:
    """Merges a nested mapping into the dataclass ``obj``, checking every key and type; errors
    name the key, the ``source`` and the valid keys or choices. ``renamed`` maps old dotted
    names to new ones (accepted with a one-line notice)."""
    if not isinstance(updates, dict):
        raise ConfigError(f"{source}: {prefix.rstrip('.') or 'top level'} must be a mapping, got {updates!r}")
    hints = typing.get_type_hints(type(obj))
    names = [f.name for f in dataclasses.fields(obj)]
    for key, value in updates.items():
        full = _renamed(prefix + str(key), source, renamed)
        key = full[len(prefix):]
        if key not in names:
            raise ConfigError(f"{source}: unknown config key {full!r}; valid keys here: {', '.join(names)}")
        current = getattr(obj, key)
        if dataclasses.is_dataclass(current):
            merge(current, value, source, full + ".", renamed)
        else:
            setattr(obj, key, _coerce(full, value, hints[key], source))


def parse_override(text: str) -> dict:
    """Turns ``a.b=value`` into ``{"a": {"b": value}}`` with ``value`` parsed as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.epochs=3")
    key, raw = text.split("=", 1)
    key = key.strip()
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {text!r}: cannot parse value: {e}") from None
    out: dict = {}
    node = out
    parts = key.split(".")
    for p in parts[:-1]:
        node = node.setdefault(p, {})
    node[parts[-1]] = value
    return out


def load_yaml(path: str | pathlib.Path) -> dict:
    p = pathlib.Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {str(p)!r} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r}: top level must be a mapping of sections")
    return data


def load_config(
    files: list[str | pathlib.Path] | tuple = (),
    overrides: list[str] | tuple = (),
    extra: dict | None = None,
) -> Config:
    """Builds a validated :class:`Config` from defaults, YAML ``files``, ``--set`` overrides and
    ``extra`` (a nested dict from dedicated CLI flags, applied last)."""
    cfg = Config()
    for f in files:
        merge(cfg, load_yaml(f), f"config file {str(f)!r}")
    for o in overrides:
        merge(cfg, parse_override(o), f"--set {o!r}")
    if extra:
        merge(cfg, extra, "command-line flag")
    return cfg.validate()


def from_dict(data: dict, source: str = "config") -> Config:
    cfg = Config()
    merge(cfg, data, source)
    return cfg.validate()
