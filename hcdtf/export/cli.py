"""``hcdtf export``: a run's model for serving, in every runtime's format.

Registered by :mod:`hcdtf.cli` from ``COMMANDS``; nothing here imports TensorFlow until the command runs.
"""

from __future__ import annotations

import dataclasses

import click

from hcdtf import export as export_lib  # vocabularies only; imports no TensorFlow
from hcdtf.clitools import CONTEXT, check_choices, config_options, default_help, friendly, given, quiet
from hcdtf.config import ExportConfig, load_config


@click.command("export", context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--export-dir", default=None, help="TF Serving model base path [default: export.export_dir].")
@click.option("--version", "version", type=click.IntRange(min=1), default=None,
              help="Version number [default: next free integer].")
@click.option("--format", "formats", multiple=True, type=click.Choice(export_lib.FORMATS),
              help="Also write this runtime's model beside the SavedModel (repeatable): onnx (ONNX Runtime), "
                   "openvino, litert. The SavedModel is always written. "
                   + default_help("export.formats", ExportConfig().formats))
@click.option("--quantize", "quantize", multiple=True, type=click.Choice(export_lib.QUANTIZATIONS),
              help="Also write a reduced-precision OpenVINO model, kept only if the accuracy guard passes "
                   "(repeatable): int8 (NNCF post-training quantisation), bf16 (bfloat16 compute; needs a CPU "
                   "with AVX-512 BF16 or AMX). " + default_help("export.quantize", ExportConfig().quantize))
@click.option("--max-auc-drop", "--int8-max-auc-drop", "max_auc_drop", default=None, type=click.FloatRange(min=0),
              help="Accuracy guard: largest test-AUC drop an int8 or bf16 model may have. "
                   + default_help("export.max_auc_drop", ExportConfig.max_auc_drop))
@click.option("--calibration-size", default=None, type=click.IntRange(min=1),
              help="int8 calibration patches, from the validation split. "
                   + default_help("export.calibration_size", ExportConfig.calibration_size))
@click.option("--data-dir", default=None, help="Where the data set is, if moved since training (--quantize only).")
@config_options
@friendly
def export_cmd(run_dir, export_dir, version, formats, quantize, max_auc_drop, calibration_size, data_dir,
               config_files, overrides):
    """Export RUN_DIR's model for serving: a float32 SavedModel version for TF Serving (with warm-up
    requests, models.config and batching_parameters.txt), a .keras file, and optionally ONNX,
    OpenVINO, LiteRT and accuracy-guarded int8 and bf16 models (pip install 'hcdtf[export]'). Every
    float model computes in float32 in every runtime; each folder's hcdtf_metadata.json says what a
    plain loader must set for that (OpenVINO: INFERENCE_PRECISION_HINT=f32), and records these
    settings as resolved from the flags, --set, --config and the export: section of configs/base.yaml.

    Example: hcdtf export outputs/r34_ft --export-dir models/hcd --format onnx --format openvino --quantize int8
    """
    cfg = load_config(config_files, overrides, given(export={
        "export_dir": export_dir, "version": version, "formats": formats, "quantize": quantize,
        "max_auc_drop": max_auc_drop, "calibration_size": calibration_size}))
    check_choices(cfg, {"export.formats": export_lib.FORMATS, "export.quantize": export_lib.QUANTIZATIONS})
    quiet()
    settings = cfg.export
    export_lib.export_run(run_dir, settings.export_dir, settings.version,
                          formats=tuple(dict.fromkeys(("saved_model", *settings.formats))),
                          quantize=tuple(settings.quantize), margin=settings.max_auc_drop,
                          calibration_size=settings.calibration_size, data_dir=data_dir, log=click.echo,
                          settings=dataclasses.asdict(settings))


COMMANDS = [export_cmd]
