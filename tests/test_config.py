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


def test_command_sections_default_to_what_the_commands_did_before():
    """predict:, slide: and export: hold the defaults the flags had (and the library still has),
    so a command run without a config file behaves as it did when these were flags only."""
    from hcdtf import export
    from hcdtf.slide import grid, heatmap, inference, tissue

    cfg = Config()
    settings = inference.Settings()
    for key in ("stride", "mpp", "min_tissue", "min_saturation", "tta", "batch_size", "sigma", "radius",
                "min_probability", "score"):
        assert getattr(cfg.slide, key) == getattr(settings, key), key
    assert (cfg.slide.stride, cfg.slide.min_tissue, cfg.slide.min_saturation) == (
        grid.DEFAULT_STRIDE, tissue.DEFAULT_MIN_TISSUE, tissue.DEFAULT_MIN_SATURATION)
    assert (cfg.slide.sigma, cfg.slide.radius, cfg.slide.min_probability, cfg.slide.score) == (
        heatmap.DEFAULT_SIGMA, heatmap.DEFAULT_RADIUS, heatmap.DEFAULT_MIN_PROBABILITY, heatmap.SLIDE_SCORES[0])
    assert (cfg.export.max_auc_drop, cfg.export.calibration_size) == (export.DEFAULT_MARGIN,
                                                                      export.DEFAULT_CALIBRATION_SIZE)
    assert (cfg.export.formats, cfg.export.quantize, cfg.predict.pipeline_options) == ([], [], [])


@pytest.mark.parametrize(
    "override, words",
    [
        ("predict.batch_size=0", ["predict.batch_size", "> 0"]),
        ("predict.batchsize=8", ["unknown config key 'predict.batchsize'", "batch_size"]),
        ("slide.min_tissue=1.5", ["slide.min_tissue", "[0, 1]"]),
        ("slide.min_saturation=1", ["slide.min_saturation", "[0, 1)"]),
        ("slide.stride=0", ["slide.stride", "> 0"]),
        ("slide.sigma=-1", ["slide.sigma", ">= 0"]),
        ("slide.mpp=0", ["slide.mpp", "> 0"]),
        ("export.max_auc_drop=-0.1", ["export.max_auc_drop", ">= 0"]),
        ("export.calibration_size=0", ["export.calibration_size", "> 0"]),
        ("export.formats=onnx", ["export.formats", "list"]),
    ],
)
def test_bad_command_settings_are_named(override, words):
    with pytest.raises(ConfigError) as e:
        load_config([], [override])
    for w in words:
        assert w in str(e.value)


def test_command_sections_do_not_make_a_run_another_run():
    """How a run is later used (predict:, slide:, export:) is not part of what defines it: a run
    resumed with other prediction settings is the same run."""
    from hcdtf.rundir import comparable

    a = load_config([], [])
    b = load_config([], ["predict.batch_size=7", "slide.stride=64", "export.quantize=[int8]"])
    assert comparable(a, "train") == comparable(b, "train")
    assert comparable(a, "train") != comparable(load_config([], ["train.epochs=3"]), "train")
