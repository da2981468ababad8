"""What every stage's ``cli.py`` shares: context settings, the handling of user errors, the
``--config``/``--set`` options and the flag-to-config helper.

The commands live with their stage (``hcdtf/data/cli.py``, ``hcdtf/training/cli.py``, ...), each
module listing its top-level commands in ``COMMANDS``; :mod:`hcdtf.cli` holds only the root group
and registers every stage's ``COMMANDS`` in one loop. This module imports no stage, so each
stage's ``cli.py`` can import it without a cycle, and no TensorFlow (``hcdtf --help`` stays fast).
"""

from __future__ import annotations

import functools
from typing import Any

import click

from hcdtf.config import ConfigError, check_choice
from tfds_builder.hcd import names  # the data set config grammar; imports no TensorFlow

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
DATASET_CONFIG_HELP = f"kaggle, pcam or a custom build, {names.GRAMMAR.replace(' or pcam', '')}"


def user_errors() -> tuple[type, ...]:
    """Exception types whose message is meant for the user (imported lazily: no TF at start)."""
    from hcdtf.data.pipeline import DatasetNotBuiltError
    from hcdtf.models.weights import WeightsUnavailableError
    from hcdtf.rundir import RunDirError, RunNotFoundError
    from tfds_builder.hcd.hcd_dataset_builder import BadInputError

    return (ConfigError, RunDirError, DatasetNotBuiltError, RunNotFoundError, BadInputError,
            WeightsUnavailableError, FileNotFoundError, FileExistsError, PermissionError, ValueError)


def friendly(fn):
    """Turns the exceptions meant for users into click errors (exit code 2, one message)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except Exception as e:  # noqa: BLE001 - filtered just below
            if isinstance(e, ConfigError) or isinstance(e, user_errors()):
                raise click.UsageError(str(e)) from None
            raise

    return wrapper


def config_options(fn):
    """``--config FILE`` and ``--set KEY=VALUE``, as every command with a config section has them."""
    fn = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                      help="Override one config field, e.g. --set train.epochs=3 (repeatable).")(fn)
    fn = click.option("--config", "config_files", multiple=True, type=click.Path(dir_okay=False),
                      help="YAML config file(s) applied over configs' defaults (repeatable; later wins).")(fn)
    return fn


def quiet() -> None:
    """TensorFlow's start-up chatter off (imports TensorFlow: call it inside a command)."""
    from hcdtf import runtime

    runtime.quiet_tensorflow()


def given(**sections) -> dict:
    """Nested dict of the flags the user actually gave (None or an empty tuple = not given), to
    apply over the config files and ``--set`` (a flag wins)."""
    out: dict = {}
    for section, values in sections.items():
        if isinstance(values, dict):
            picked = {k: (list(v) if isinstance(v, tuple) else v) for k, v in values.items()
                      if v is not None and v != ()}
            if picked:
                out[section] = picked
        elif values is not None:
            out[section] = values
    return out


def check_choices(cfg, choices: dict[str, tuple]) -> None:
    """Checks resolved config fields against vocabularies the config module cannot import without
    a cycle (backends, runners, export formats, slide scores): ``{"predict.backend": BACKENDS}``.
    A list field is checked item by item; None (not set) passes."""
    for key, valid in choices.items():
        value: Any = cfg
        for part in key.split("."):
            value = getattr(value, part)
        for item in value if isinstance(value, list) else [value]:
            if item is not None:
                check_choice(key, item, tuple(valid))


def default_help(key: str, value) -> str:
    """``[default: KEY = VALUE]``, for a flag whose default comes from the config."""
    if isinstance(value, (list, tuple)):
        value = ", ".join(map(str, value)) or "none"
    elif isinstance(value, bool):  # as YAML and --set spell it
        value = str(value).lower()
    return f"[default: {key} = {value}]"


def comma_ints(ctx, param, value):
    """``--seeds 0,1,2`` -> [0, 1, 2] (also repeatable: --seeds 0 --seeds 1)."""
    out = []
    for item in value or ():
        for part in str(item).split(","):
            try:
                out.append(int(part))
            except ValueError:
                raise click.BadParameter(f"expected integers separated by commas, got {item!r}") from None
    if len(set(out)) != len(out):
        raise click.BadParameter(f"lists a value twice: {','.join(map(str, out))}")
    return out or None


def report_failed(result: dict) -> None:
    """After a run over slides: the failed ones on stderr and exit code 1 (the others finished)."""
    import sys

    if result["failed"]:
        click.echo(f"{len(result['failed'])} of {result['slides']} slide(s) failed:", err=True)
        for message in result["failed"]:
            click.echo(f"  {message}", err=True)
        sys.exit(1)


def _redeliver_swallowed_interrupts(unraisable) -> None:
    """``sys.unraisablehook`` while a command runs. Python turns Ctrl-C into a KeyboardInterrupt
    at whatever Python code runs at that instant; when that is a finaliser (``__del__``, a weakref
    callback: TensorFlow's garbage-collected functions run one during training), the exception
    is printed as "Exception ignored" and dropped, and the command went on as if Ctrl-C had never
    been pressed (1 training in 8 here, interrupted at a random instant). Such an interrupt is
    delivered again to the main thread a moment later, from outside the finaliser."""
    import sys
    import threading

    if unraisable.exc_type is not None and issubclass(unraisable.exc_type, KeyboardInterrupt):
        import _thread

        threading.Timer(0.01, _thread.interrupt_main).start()
        return
    sys.__unraisablehook__(unraisable)


class RootGroup(click.Group):
    """Ctrl-C ends any command with one line and exit code 130, as shells expect, wherever it
    lands (see :func:`_redeliver_swallowed_interrupts`)."""

    def invoke(self, ctx):
        import sys

        previous, sys.unraisablehook = sys.unraisablehook, _redeliver_swallowed_interrupts
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("\ninterrupted (rerun the same command to continue where it stopped)", err=True)
            ctx.exit(130)
        finally:
            sys.unraisablehook = previous
