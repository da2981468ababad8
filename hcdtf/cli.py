"""The `hcdtf` command line: the root group, and the one list of stage command modules it registers.

Every command lives with its stage, in that package's ``cli.py``, which lists its top-level
commands (and groups) in ``COMMANDS``; what they share (context settings, one-line user errors with
exit code 2, ``--config``/``--set``) is in :mod:`hcdtf.clitools`. Importing this module imports no
TensorFlow: commands import what they need when they run.
"""

from __future__ import annotations

import sys

import click

from hcdtf import __version__
from hcdtf.clitools import CONTEXT, RootGroup
from hcdtf.data import cli as data_cli
from hcdtf.evaluation import cli as evaluation_cli
from hcdtf.export import cli as export_cli
from hcdtf.inference import cli as inference_cli
from hcdtf.mil import cli as mil_cli
from hcdtf.models import cli as models_cli
from hcdtf.slide import cli as slide_cli
from hcdtf.stain import cli as stain_cli
from hcdtf.training import cli as training_cli

# The stages whose commands `hcdtf` offers, in the order of the data flow (--help sorts by name).
STAGES = (data_cli, models_cli, training_cli, evaluation_cli, export_cli, inference_cli, slide_cli, mil_cli,
          stain_cli)


@click.group(cls=RootGroup, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="hcdtf")
def main():
    """hcdtf: ResNets for histopathologic cancer detection (Kaggle HCD / PatchCamelyon).

    Reproduces Wang et al. 2023, "ResNet for Histopathologic Cancer Detection, the Deeper, the
    Better?": ImageNet ResNet-18/34/50/101/152 with a frozen or fine-tuned base, a logistic
    regression baseline, evaluation with DeLong tests, and SavedModel export for TF Serving.

    Start with `hcdtf quickstart`; the user guide is the docs site (docs/, `make docs`).
    """


for _stage in STAGES:
    for _command in _stage.COMMANDS:
        if _command.name in main.commands:  # two stages claiming one name would shadow a command
            raise RuntimeError(f"hcdtf {_command.name}: defined by {_stage.__name__} and another stage")
        main.add_command(_command)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
