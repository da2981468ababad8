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
