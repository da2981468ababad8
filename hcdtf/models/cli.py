"""``hcdtf models`` and ``hcdtf weights import|fetch``: the model stage's commands.

Registered by :mod:`hcdtf.cli` from ``COMMANDS``; nothing here imports TensorFlow until a command runs.
"""

from __future__ import annotations

import pathlib

import click

from hcdtf.clitools import CONTEXT, friendly, quiet
from hcdtf.models.encoders.specs import ENCODERS  # published names; imports no TensorFlow
from hcdtf.models.weights import TORCHVISION_ARCHS


@click.command("models", context_settings=CONTEXT)
def models_cmd():
    """Table of every architecture: parameters per strategy and FLOPs per 96x96 patch."""
    quiet()
    from hcdtf import models
    from hcdtf.models.encoders import specs as encoder_specs

    click.echo(models.format_models_table(models.models_table()))
    click.echo("\nPathology encoders (`hcdtf weights import`, `hcdtf embed`):\n")
    click.echo(encoder_specs.format_encoders_table())


@click.group("weights", context_settings=CONTEXT)
def weights_group():
    """Import or fetch pretrained weights: ImageNet ResNet18/34 (torchvision's, as published by
    timm) and the pathology encoders (H-optimus-0, UNI, Virchow2, ...; `hcdtf models` lists them)."""


@weights_group.command("import", context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=True))
@click.option("--arch", default=None, type=click.Choice(TORCHVISION_ARCHS + ENCODERS),
              help="The architecture the weights are for (needed for a bare .safetensors file).")
@click.option("--out", default=None, type=click.Path(),
              help="Output file, or an encoder's folder (for model.encoder_dir) [default: where "
                   "--weights imagenet / pretrained looks].")
@friendly
def weights_import(path, arch, out):
    """Convert PATH to Keras weights (no PyTorch needed): a torchvision/timm ResNet
    model.safetensors, or an encoder's hub folder (config.json + model.safetensors, timm or
    transformers layout) or bare model.safetensors."""
    quiet()
    if arch is not None and arch.lower() in {a.lower() for a in TORCHVISION_ARCHS}:
        if pathlib.Path(path).is_dir():
            raise click.UsageError(f"{path}: a folder; --arch {arch} takes the model.safetensors file")
        from hcdtf import models

        click.echo(f"wrote {models.import_torchvision_safetensors(path, arch, out=out)}")
        return
    if arch is None and not pathlib.Path(path).is_dir():
        raise click.UsageError(f"{path}: a bare weights file needs --arch")
    from hcdtf.models.encoders import files as encoder_files

    click.echo(f"wrote {encoder_files.import_checkpoint(path, arch, out=out)}")


@weights_group.command("fetch", context_settings=CONTEXT)
@click.argument("arch", type=click.Choice(TORCHVISION_ARCHS + ENCODERS))
@friendly
def weights_fetch(arch):
    """Download ARCH's published weights and convert them (needs the internet)."""
    quiet()
    if arch.lower() in {a.lower() for a in ENCODERS}:
        from hcdtf.models.encoders import files as encoder_files

        click.echo(f"wrote {encoder_files.fetch(arch)}")
        return
    from hcdtf import models

    click.echo(f"wrote {models.fetch(arch)}")


COMMANDS = [models_cmd, weights_group]
