"""The command line: --help everywhere, --version, and one clear line (exit 2) for bad input."""

import pytest
from click.testing import CliRunner

from hcdtf import __version__
from hcdtf.cli import main

from conftest import REPO, cli_fails


def _commands(group, prefix=()):
    import click

    for name, cmd in group.commands.items():
        yield prefix + (name,)
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, prefix + (name,))


ALL = [()] + list(_commands(main))


def _command(path):
    cmd = main
    for name in path:
        cmd = cmd.commands[name]
    return cmd


@pytest.mark.parametrize("cmd", ALL, ids=lambda c: " ".join(c) or "hcdtf")
def test_help_documents_every_command_and_option(cmd):
    """--help works everywhere and says what the command does and what each visible option is
    for, with the choices the vocabulary defines (hidden options are old names kept working)."""
    import click

    command = _command(cmd)
    result = CliRunner().invoke(main, [*cmd, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Usage: main " + " ".join(cmd))
    assert command.help and command.help.strip().splitlines()[0].split("(")[0].strip()[:40] in result.output
    for param in command.params:
        if not isinstance(param, click.Option) or param.hidden:
            continue
        assert param.help, f"{' '.join(cmd)} {param.opts[0]} has no help text"
        for opt in param.opts:
            assert opt in result.output, opt
        if isinstance(param.type, click.Choice):  # click lists case-insensitive choices in lower case
            fold = (lambda text: text) if param.type.case_sensitive else str.lower
            assert all(fold(str(c)) in fold(result.output) for c in param.type.choices), param.opts
    for param in command.params:
        if isinstance(param, click.Option) and param.hidden:
            assert param.opts[0] not in result.output.replace(param.opts[0] + "-", "")


def test_every_command_is_registered_from_its_stage_cli_module():
    """One way to add a command: a stage's cli.py lists it in COMMANDS and hcdtf.cli.STAGES lists
    that module; a stage cli.py left out of STAGES, or a command added another way, fails here."""
    from hcdtf import cli

    stage_modules = sorted(p.parent.name for p in (REPO / "hcdtf").glob("*/cli.py"))
    assert sorted(m.__name__.split(".")[1] for m in cli.STAGES) == stage_modules
    registered = {c.name: c for m in cli.STAGES for c in m.COMMANDS}
    assert len(registered) == sum(len(m.COMMANDS) for m in cli.STAGES)  # no name claimed twice
    assert main.commands == registered


def test_choices_come_from_the_vocabulary():
    from hcdtf import config

    params = {p.name: p for p in _command(("train",)).params}
    assert tuple(params["dist"].type.choices) == config.DISTRIBUTIONS
    assert tuple(params["precision"].type.choices) == config.PRECISIONS
    assert tuple(params["trainable_from"].type.choices) == config.STAGES
    params = {p.name: p for p in _command(("experiment",)).params}
    assert tuple(params["transfers"].type.choices) == config.TRANSFERS


def test_old_option_names_still_work(tmp_path):
    """--strategy was train's distribution and experiment's transfer strategy (hcdtf 0.1)."""
    cli_fails(["train", "--strategy", "mirrored", "--data-dir", str(tmp_path)], "not built")
    cli_fails(["experiment", str(tmp_path / "x.yaml"), "--strategy", "fine_tune"], "does not exist")
    cli_fails(["train", "--strategy", "nope"], "nope", "mirrored")


def test_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_unknown_arch_lists_the_valid_ones():
    cli_fails(["train", "--arch", "ResNet19"], "ResNet19", "ResNet18", "ResNet152")


def test_unknown_config_key_and_wrong_type(tmp_path):
    cli_fails(["train", "--set", "train.epoch=2"], "train.epoch", "epochs")
    cli_fails(["train", "--set", "train.epochs=two"], "train.epochs", "int")


def test_xla_under_op_determinism_is_refused():
    # Keras would silently train without XLA; say so and how to get it.
    cli_fails(["train", "--set", "train.jit_compile=true"], "jit_compile", "deterministic=false")
    cli_fails(["train", "--set", "train.jit_compile=True"], "jit_compile", "deterministic=false")


def test_missing_config_file(tmp_path):
    cli_fails(["train", "--config", str(tmp_path / "nope.yaml")], "nope.yaml")


def test_exclusive_strategies():
    cli_fails(["train", "--freeze-base", "--fine-tune"], "--freeze-base", "--fine-tune")


def test_train_without_data_says_how_to_build(tmp_path):
    cli_fails(
        ["train", "--data-dir", str(tmp_path / "tfds"), "--output-dir", str(tmp_path / "run")],
        "not built", "hcdtf build-dataset", "tfds build",
    )
    assert not (tmp_path / "run").exists()


def test_build_dataset_missing_manual_dir(tmp_path):
    cli_fails(["build-dataset", "--manual-dir", str(tmp_path / "none"), "--data-dir", str(tmp_path)],
                   "does not exist")


def test_evaluate_not_a_run_dir(tmp_path):
    cli_fails(["evaluate", str(tmp_path)], "not an hcdtf run directory")


def test_sample_data_refuses_to_overwrite(tmp_path):
    out = tmp_path / "s"
    assert CliRunner().invoke(main, ["sample-data", str(out), "--n", "8"]).exit_code == 0
    assert (out / "train_labels.csv").is_file()
    before = (out / "train_labels.csv").read_bytes()
    cli_fails(["sample-data", str(out), "--n", "8", "--seed", "1"], str(out))
    assert (out / "train_labels.csv").read_bytes() == before


# ----------------------------------------------------------------------------- predict / slide / export config
def _yaml(path, text):
    path.write_text(text)
    return str(path)


def test_predict_settings_come_from_the_config_and_a_flag_wins(trained_run, sample_dir, tmp_path):
    """predict: in a --config file applies (its backend refuses a run directory); the --backend
    flag wins over it; --set wins over the file; unknown keys and bad values are one line."""
    import csv

    cfg = _yaml(tmp_path / "p.yaml", "predict:\n  backend: onnx\n  batch_size: 3\n")
    base = ["predict", str(trained_run), "--images", str(sample_dir / "test"), "--config", cfg]
    cli_fails([*base, "--out", str(tmp_path / "a.csv")], "--backend onnx", "run model")
    assert not (tmp_path / "a.csv").exists()
    result = CliRunner().invoke(main, [*base, "--out", str(tmp_path / "b.csv"), "--backend", "keras"])
    assert result.exit_code == 0, result.output
    with open(tmp_path / "b.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == len(list((sample_dir / "test").glob("*.tif"))) > 0
    cli_fails([*base, "--out", str(tmp_path / "c.csv"), "--set", "predict.backend=nope"],
              "predict.backend", "'nope'", "saved_model", "openvino-int8")
    cli_fails([*base, "--out", str(tmp_path / "c.csv"), "--set", "predict.pipeline_options=[--x=1]",
               "--backend", "keras"], "--pipeline-option applies to Beam")
    result = cli_fails([*base, "--out", str(tmp_path / "c.csv"), "--set", "predict.batchsize=3"],
                       "unknown config key 'predict.batchsize'", "batch_size")
    assert len(result.output.strip().splitlines()[-1]) > 0 and "Traceback" not in result.output
    assert not (tmp_path / "c.csv").exists()


def test_slide_predict_settings_come_from_the_config_and_flags_win(trained_run, tmp_path):
    """slide: in a --config file applies, --set wins over it, a flag over both; the resolved
    settings are what each slide's slide_summary.json records."""
    import json

    from hcdtf.slide import synthetic

    slides = tmp_path / "slides"
    synthetic.write_slides(slides, n=1, seed=0, size=(576, 480), log=lambda *_: None)
    cfg = _yaml(tmp_path / "s.yaml", "slide:\n  stride: 64\n  min_tissue: 0.2\n  score: p99\n  sigma: 1.5\n")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["slide", "predict", str(trained_run), str(slides / "slide_000.svs"),
                                       "--output-dir", str(out), "--config", cfg, "--set", "slide.score=tumour_area",
                                       "--set", "slide.sigma=1.0", "--sigma", "0.5", "--batch-size", "64"])
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "slide_000" / "slide_summary.json").read_text())["settings"]
    assert settings["stride"] == 64 and settings["min_tissue"] == 0.2  # the file
    assert settings["score"] == "tumour_area"  # --set over the file
    assert settings["sigma"] == 0.5 and settings["batch_size"] == 64  # flags over both
    assert settings["min_saturation"] == 0.07 and settings["radius"] == 2  # base.yaml
    args = ["slide", "predict", str(trained_run), str(slides), "--output-dir", str(tmp_path / "o2")]
    cli_fails([*args, "--set", "slide.strid=3"], "unknown config key 'slide.strid'", "stride")
    cli_fails([*args, "--set", "slide.score=mean"], "slide.score", "'mean'", "max, p99, tumour_area")
    cli_fails([*args, "--set", "slide.runner=DirectRunner", "--overwrite"], "--overwrite is not available")
    assert not (tmp_path / "o2").exists()


def test_export_settings_come_from_the_config_and_go_into_the_metadata(trained_run, tmp_path):
    import json

    cfg = _yaml(tmp_path / "e.yaml", "export:\n  max_auc_drop: 0.01\n  calibration_size: 5\n  version: 3\n")
    base = ["export", str(trained_run), "--export-dir", str(tmp_path / "models"), "--config", cfg]
    cli_fails([*base, "--set", "export.formats=[onnx, tensorrt]"], "export.formats", "'tensorrt'", "litert")
    cli_fails([*base, "--set", "export.quantize=[int4]"], "export.quantize", "'int4'", "int8, bf16")
    cli_fails([*base, "--set", "export.max_auc_dorp=0.1"], "unknown config key 'export.max_auc_dorp'", "max_auc_drop")
    assert not (tmp_path / "models").exists()
    result = CliRunner().invoke(main, [*base, "--calibration-size", "7", "--version", "2"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "models" / "3").exists()
    meta = json.loads((tmp_path / "models" / "2" / "assets" / "hcdtf_metadata.json").read_text())
    assert meta["export_settings"] == {"export_dir": str(tmp_path / "models"), "version": 2, "formats": [],
                                       "quantize": [], "max_auc_drop": 0.01, "calibration_size": 7}
