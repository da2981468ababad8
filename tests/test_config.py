"""The typed config tree: every shipped file loads, overrides apply, bad input is named."""

import dataclasses

import pytest
import yaml

from hcdtf import config as config_lib
from hcdtf.config import Config, ConfigError, load_config

from conftest import CONFIGS


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*.yaml")), ids=lambda p: p.name)
def test_every_config_file_loads_and_validates(path):
    cfg = load_config([path])
    assert isinstance(cfg, Config)


def _fields(obj, prefix=""):
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            yield from _fields(value, prefix + f.name + ".")
        else:
            yield prefix + f.name, value


def test_base_yaml_lists_every_field_with_its_default_and_a_comment():
    raw = yaml.safe_load((CONFIGS / "base.yaml").read_text())
    flat = {}

    def walk(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, prefix + k + ".")
            else:
                flat[prefix + k] = v

    walk(raw)
    defaults = dict(_fields(Config()))
    assert set(flat) == set(defaults)
    cfg = load_config([CONFIGS / "base.yaml"])
    assert cfg == Config()
    for line in (CONFIGS / "base.yaml").read_text().splitlines():
        if ":" in line and not line.strip().startswith("#") and not line.rstrip().endswith(":"):
            assert "#" in line, f"base.yaml field without a comment: {line!r}"


def test_overrides_apply_in_order_and_parse_yaml_scalars(tmp_path):
    f = tmp_path / "a.yaml"
    f.write_text("train:\n  epochs: 3\nmodel:\n  arch: ResNet50\n")
    cfg = load_config([f], ["train.epochs=7", "model.weights=none", "data.cache=true", "train.learning_rate=1e-3"])
    assert cfg.train.epochs == 7
    assert cfg.model.arch == "ResNet50"
    assert cfg.model.weights is None
    assert cfg.data.cache is True
    assert cfg.train.learning_rate == pytest.approx(1e-3)


@pytest.mark.parametrize(
    "override, words",
    [
        ("train.epoch=3", ["unknown config key 'train.epoch'", "epochs"]),
        ("nosuch.key=1", ["unknown config key 'nosuch'"]),
        ("train.epochs=three", ["train.epochs", "int", "'three'"]),
        ("data.augment=5", ["data.augment", "bool"]),
        ("model.arch=ResNet19", ["model.arch", "ResNet19", "ResNet18, ResNet34, ResNet50, ResNet101, ResNet152"]),
        ("train.precision=half", ["train.precision", "mixed_float16"]),
        ("train.batch_size=0", ["train.batch_size", "> 0"]),
        ("eval.threshold=1.5", ["eval.threshold"]),
        ("epochs", ["KEY=VALUE"]),
    ],
)
def test_bad_overrides_name_the_key_and_the_valid_choices(override, words):
    with pytest.raises(ConfigError) as e:
        load_config([], [override])
    for w in words:
        assert w in str(e.value)


def test_bad_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config([tmp_path / "missing.yaml"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: [1\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config([bad])
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("train:\n  optimiser: adam\n")
    with pytest.raises(ConfigError, match=r"unknown\.yaml.*train\.optimiser"):
        load_config([unknown])


def test_dump_and_reload_round_trip(tmp_path):
    cfg = load_config([CONFIGS / "quickstart.yaml"], ["seed=3"])
    cfg.dump(tmp_path / "config.yaml")
    again = config_lib.from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text()))
    assert again == cfg
