"""The `hcdtf` command line. Each command parses its flags, builds the config and calls one
function; user errors become one clear line and exit code 2, never a traceback."""

from __future__ import annotations

import functools
import pathlib
import sys

import click

from hcdtf import __version__
from hcdtf import export as export_lib  # vocabularies only; imports no TensorFlow
from hcdtf.inference.backends import BACKENDS
from hcdtf.inference.beam import RUNNERS
from hcdtf.config import (ARCHS, BASELINE_FEATURES, BASELINE_SOLVERS, DISTRIBUTIONS, PRECISIONS, STAGES, TRANSFERS,
                          ConfigError, load_config)
from hcdtf.models.weights import TORCHVISION_ARCHS
from hcdtf.models.encoders.specs import ENCODERS  # published names; imports no TensorFlow
from tfds_builder.hcd import names  # the data set config grammar; imports no TensorFlow

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
DATASET_CONFIG_HELP = f"kaggle, pcam or a custom build, {names.GRAMMAR.replace(' or pcam', '')}"


def _user_errors() -> tuple[type, ...]:
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
            if isinstance(e, ConfigError) or isinstance(e, _user_errors()):
                raise click.UsageError(str(e)) from None
            raise

    return wrapper


def config_options(fn):
    fn = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                      help="Override one config field, e.g. --set train.epochs=3 (repeatable).")(fn)
    fn = click.option("--config", "config_files", multiple=True, type=click.Path(dir_okay=False),
                      help="YAML config file(s) applied over configs' defaults (repeatable; later wins).")(fn)
    return fn


def _quiet() -> None:
    from hcdtf import runtime

    runtime.quiet_tensorflow()


def _extra(**sections) -> dict:
    """Nested dict of the flags the user actually gave (None = not given)."""
    out: dict = {}
    for section, values in sections.items():
        if isinstance(values, dict):
            picked = {k: v for k, v in values.items() if v is not None}
            if picked:
                out[section] = picked
        elif values is not None:
            out[section] = values
    return out


class _Group(click.Group):
    """Ctrl-C ends any command with one line and exit code 130, as shells expect."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            click.echo("\ninterrupted (rerun the same command to continue where it stopped)", err=True)
            ctx.exit(130)


def _comma_ints(ctx, param, value):
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


@click.group(cls=_Group, context_settings=CONTEXT)
@click.version_option(__version__, prog_name="hcdtf")
def main():
    """hcdtf: ResNets for histopathologic cancer detection (Kaggle HCD / PatchCamelyon).

    Reproduces Wang et al. 2023, "ResNet for Histopathologic Cancer Detection, the Deeper, the
    Better?": ImageNet ResNet-18/34/50/101/152 with a frozen or fine-tuned base, a logistic
    regression baseline, evaluation with DeLong tests, and SavedModel export for TF Serving.

    Start with `hcdtf quickstart`; see README.md for the user guide.
    """


# ----------------------------------------------------------------------------- data
@main.command("sample-data", context_settings=CONTEXT)
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--n", default=2000, show_default=True, type=click.IntRange(min=4), help="Labelled patches.")
@click.option("--n-test", default=None, type=click.IntRange(min=0), help="Unlabelled test patches [default: n/10].")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed (same seed, same files).")
@click.option("--positive-fraction", default=0.4, show_default=True, type=click.FloatRange(0.05, 0.95),
              help="Share of tumour (label 1) patches; the real data have about 0.4.")
@friendly
def sample_data(out_dir, n, n_test, seed, positive_fraction):
    """Write a synthetic sample in the exact Kaggle layout to OUT_DIR.

    OUT_DIR/train/<id>.tif (96x96 RGB), train_labels.csv (id,label), test/<id>.tif and
    sample_submission.csv, with H&E-like patches labelled by the PCam rule (1 iff tumour cells
    lie in the centre 32x32 region). Build it with `hcdtf build-dataset --manual-dir OUT_DIR`.
    """
    from hcdtf import synthetic

    info = synthetic.write_sample(out_dir, n=n, n_test=n_test, seed=seed,
                                  positive_fraction=positive_fraction, progress=True)
    if info.already_done:
        click.echo(f"done already: {info.out_dir} holds this sample ({info.n_train} labelled, {info.n_test} "
                   "unlabelled patches); nothing written")
        return
    click.echo(f"wrote {info.n_train} labelled ({info.n_positive} tumour) and {info.n_test} unlabelled "
               f"patches to {info.out_dir} in {info.seconds:.1f} s")


@main.command("build-dataset", context_settings=CONTEXT)
@click.option("--manual-dir", required=True, type=click.Path(),
              help="Directory with the raw files: Kaggle train/ + train_labels.csv, or PCam .h5(.gz).")
@click.option("--data-dir", default=None, help="TFDS data_dir to write to [default: data.data_dir].")
@click.option("--dataset-config", default=None, metavar="NAME",
              help=f"Builder config: {DATASET_CONFIG_HELP} [default: data.dataset_config]. The flags below "
                   "are applied on top of it.")
@click.option("--skip-bad", is_flag=True, help="Leave out bad files/rows (counted in the metadata) instead of failing.")
@click.option("--validation-fraction", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="kaggle: share of patches (or slides) for validation [default: 0.1].")
@click.option("--test-fraction", type=click.FloatRange(0, 1, max_open=True), default=None,
              help="kaggle: share of patches (or slides) for test [default: 0.1].")
@click.option("--folds", type=int, default=None,
              help="kaggle: K-fold cross-validation: splits fold0..fold{K-1} (by slide with patch_id_wsi.csv) "
                   "instead of train/validation; test stays the same.")
@click.option("--drop-duplicates", is_flag=True,
              help="kaggle: leave out copies of patches whose pixels are already in another split.")
@click.option("--overwrite", is_flag=True,
              help="Rebuild a data set built from other inputs (the new one replaces it once complete).")
@config_options
@friendly
def build_dataset(manual_dir, data_dir, dataset_config, skip_bad, validation_fraction, test_fraction, folds,
                  drop_duplicates, overwrite, config_files, overrides):
    """Build the TFDS data set from raw files (what `tfds build tfds_builder/hcd` does).

    Reads only; nothing in --manual-dir is changed. Building again reuses the data set if its
    inputs are the same, and refuses other inputs unless --overwrite. Prints the split sizes and
    the leak audit (duplicates across splits) when done; `hcdtf audit` tells more.
    """
    _quiet()
    from hcdtf.data import pipeline as data

    cfg = load_config(config_files, overrides, _extra(data={"data_dir": data_dir, "dataset_config": dataset_config}))
    builder = data.build_dataset(
        manual_dir, cfg.data.data_dir, cfg.data.dataset_config, skip_bad_examples=skip_bad,
        validation_fraction=validation_fraction, test_fraction=test_fraction, folds=folds,
        drop_duplicates=drop_duplicates, overwrite=overwrite, log=click.echo)
    splits = ", ".join(f"{k}: {v.num_examples}" for k, v in builder.info.splits.items())
    click.echo(f"{builder.info.full_name} in {builder.data_dir} ({splits})")
    name, k = builder.builder_config.name, data.num_folds(builder.info)
    if k:
        click.echo(f"train on fold K with --dataset-config {name} --set data.fold=K (K in 0..{k - 1})")
    elif name not in ("kaggle", "pcam"):
        click.echo(f"train on it with --dataset-config {name}")


@main.command("audit", context_settings=CONTEXT)
@click.argument("data_dir", type=click.Path(file_okay=False))
@click.option("--dataset-config", default=None, metavar="NAME",
              help="Which build to audit [default: the only one in DATA_DIR].")
@click.option("--slide-map", type=click.Path(dir_okay=False), default=None,
              help="id,wsi CSV: also count slides in several splits [default: the one the build used].")
@click.option("--threshold", type=int, default=None,
              help="Near duplicates: most dHash bits that may differ [default: 4].")
@click.option("--json", "json_out", type=click.Path(dir_okay=False), default=None, help="Also write the full result here.")
@friendly
def audit_cmd(data_dir, dataset_config, slide_map, threshold, json_out):
    """Leak audit of a built data set: duplicate patches within and across splits.

    Exact duplicates (the same pixels), near duplicates (64-bit dHash within a few bits) and, with
    a slide map, slides in several splits, recomputed from the stored patches and checked against
    the summary the build recorded.
    """
    _quiet()
    from hcdtf.data import audit

    try:
        audit.run(data_dir, dataset_config, slide_map=slide_map, threshold=threshold, json_out=json_out, log=click.echo)
    except audit.AuditMismatchError as e:  # a failed check, not a usage error: exit code 1
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)


# ----------------------------------------------------------------------------- models
@main.command("models", context_settings=CONTEXT)
def models_cmd():
    """Table of every architecture: parameters per strategy and FLOPs per 96x96 patch."""
    _quiet()
    from hcdtf import models
    from hcdtf.models.encoders import specs as encoder_specs

    click.echo(models.format_models_table(models.models_table()))
    click.echo("\nPathology encoders (`hcdtf weights import`, `hcdtf embed`):\n")
    click.echo(encoder_specs.format_encoders_table())


@main.group("weights", context_settings=CONTEXT)
def weights_group():
    """Import or fetch pretrained weights: ImageNet ResNet18/34 (torchvision's, as published by
    timm) and the pathology encoders (H-optimus-0, UNI, Virchow2, ...; `hcdtf models` lists them)."""


@weights_group.command("import", context_settings=CONTEXT)
@click.argument("path", type=click.Path(exists=True))
@click.option("--arch", default=None, type=click.Choice(TORCHVISION_ARCHS + ENCODERS),
              help="The architecture the weights are for (needed for a bare .safetensors file).")
@click.option("--out", default=None, type=click.Path(dir_okay=False),
              help="Output file [default: where --weights imagenet / pretrained looks].")
@friendly
def weights_import(path, arch, out):
    """Convert PATH to Keras weights (no PyTorch needed): a torchvision/timm ResNet
    model.safetensors, or an encoder's hub folder (config.json + model.safetensors, timm or
    transformers layout) or bare model.safetensors."""
    _quiet()
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
    _quiet()
    if arch.lower() in {a.lower() for a in ENCODERS}:
        from hcdtf.models.encoders import files as encoder_files

        click.echo(f"wrote {encoder_files.fetch(arch)}")
        return
    from hcdtf import models

    click.echo(f"wrote {models.fetch(arch)}")


# ----------------------------------------------------------------------------- training
@main.command("train", context_settings=CONTEXT)
@click.option("--arch", type=click.Choice(ARCHS + ENCODERS), default=None,
              help="Architecture: a ResNet or a pathology encoder [default: model.arch].")
@click.option("--freeze-base", "freeze", flag_value="freeze_base", default=None,
              help="Train only the last layer on a frozen ImageNet base (the paper's strategy 1).")
@click.option("--fine-tune", "fine", flag_value="fine_tune", default=None,
              help="Fine-tune all layers (the paper's strategy 2; the default).")
@click.option("--trainable-from", type=click.Choice(STAGES), default=None,
              help="Fine-tune only from this stage on (freeze 'most' layers).")
@click.option("--weights", default=None, help="imagenet, none, or a path to a weights file.")
@click.option("--data-dir", default=None, help="TFDS data_dir with the built data set.")
@click.option("--dataset-config", default=None, metavar="NAME", help=f"Built data set config: {DATASET_CONFIG_HELP}.")
@click.option("--epochs", type=click.IntRange(min=1), default=None, help="Epochs [default: train.epochs].")
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Global batch size.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=None,
              help="auto: mixed_float16 on a GPU, float32 on a CPU.")
@click.option("--distribution", "dist", type=click.Choice(DISTRIBUTIONS), default=None,
              help="tf.distribute strategy (multiworker reads TF_CONFIG).")
@click.option("--strategy", "dist", type=click.Choice(DISTRIBUTIONS), hidden=True)  # the old name
@click.option("--output-dir", default=None, help="Run directory [default: output_dir].")
@click.option("--overwrite", is_flag=True,
              help="Replace the run in --output-dir (finished, or of another config); the old one stays until "
                   "the new one has a finished epoch.")
@click.option("--seed", type=int, default=None, help="Seed of weights, data order and augmentation [default: seed].")
@config_options
@friendly
def train_cmd(arch, freeze, fine, trainable_from, weights, data_dir, dataset_config, epochs, batch_size,
              precision, dist, output_dir, overwrite, seed, config_files, overrides):
    """Train a ResNet classifier; rerun the same command to resume a killed run.

    Example: hcdtf train --arch ResNet152 --freeze-base --data-dir D --output-dir outputs/r152_frozen
    """
    if freeze and fine:
        raise click.UsageError("--freeze-base and --fine-tune are exclusive: choose one transfer strategy")
    if trainable_from and freeze:
        raise click.UsageError("--trainable-from applies to fine-tuning; drop --freeze-base")
    _quiet()
    from hcdtf.training import train

    cfg = load_config(config_files, overrides, _extra(
        seed=seed, output_dir=output_dir,
        data={"data_dir": data_dir, "dataset_config": dataset_config},
        model={"arch": arch, "transfer": freeze or fine or ("fine_tune" if trainable_from else None),
               "trainable_from": trainable_from, "weights": weights},
        train={"epochs": epochs, "batch_size": batch_size, "precision": precision, "distribution": dist},
    ))
    train.train(cfg, overwrite=overwrite, log=click.echo)


@main.command("baseline", context_settings=CONTEXT)
@click.option("--features", type=click.Choice(list(BASELINE_FEATURES)), default=None,
              help="pixels: 96x96x3; center32: the centre 32x32x3 crop; gray: 96x96 grayscale.")
@click.option("--solver", type=click.Choice(BASELINE_SOLVERS), default=None,
              help="sgd: streamed SGDClassifier(log_loss), memory independent of data size; "
                   "lbfgs: exact LogisticRegression, the whole split must fit in RAM.")
@click.option("--data-dir", default=None, help="TFDS data_dir with the built data set [default: data.data_dir].")
@click.option("--output-dir", default=None, help="Run directory [default: output_dir].")
@click.option("--overwrite", is_flag=True, help="Replace a finished run or a run of another config in --output-dir.")
@click.option("--seed", type=int, default=None, help="Seed of the SGD solver and the data order [default: seed].")
@config_options
@friendly
def baseline_cmd(features, solver, data_dir, output_dir, overwrite, seed, config_files, overrides):
    """Logistic regression on raw pixels (the paper's baseline), evaluated on the test split."""
    _quiet()
    from hcdtf.training import baseline
    from hcdtf.evaluation import evaluate

    cfg = load_config(config_files, overrides, _extra(
        seed=seed, output_dir=output_dir, data={"data_dir": data_dir},
        baseline={"features": features, "solver": solver}))
    baseline.run(cfg, overwrite=overwrite, log=click.echo)
    evaluate.evaluate_run(cfg.output_dir, split=cfg.eval.split, log=click.echo)


# ----------------------------------------------------------------------------- evaluation
@main.command("evaluate", context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--split", default=None, help="Split to evaluate [default: eval.split of the run, test].")
@click.option("--tta", is_flag=True, default=None, help="Average the 8 dihedral transforms of each patch.")
@click.option("--threshold", default=None, help="Decision threshold: a number in (0,1) or 'youden'.")
@click.option("--data-dir", default=None, help="Where the data set is, if moved since training.")
@click.option("--calibrate", is_flag=True,
              help="Temperature scaling fitted on the validation split; metrics on the calibrated scores and "
                   "a reliability plot before/after.")
@friendly
def evaluate_cmd(run_dir, split, tta, threshold, data_dir, calibrate):
    """AUC with bootstrap CI, accuracy, sensitivity, ..., plots and predictions.csv for RUN_DIR."""
    _quiet()
    from hcdtf.evaluation import evaluate

    evaluate.evaluate_run(run_dir, split=split, tta=tta, threshold=threshold, data_dir=data_dir,
                          calibrate=calibrate, log=click.echo)


@main.command("compare", context_settings=CONTEXT)
@click.argument("inputs", nargs=-1, required=True, type=click.Path(exists=True))
@click.option("--output-dir", default="outputs/comparison", show_default=True,
              help="Where report.md, comparison.json and the figures go.")
@click.option("--names", default=None, metavar="A,B,...",
              help="Comma-separated run names for the tables, one per input [default: directory names].")
@click.option("--n-bootstrap", default=1000, show_default=True, type=click.IntRange(min=0),
              help="Bootstrap resamples per AUC CI (0: DeLong intervals).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the bootstrap resamples.")
@friendly
def compare_cmd(inputs, output_dir, names, n_bootstrap, seed):
    """Compare runs scored on the same test examples: per-run table and DeLong tests; for runs
    repeated over seeds/folds, mean/sd per model and paired t-tests over repeats; a verdict on
    depth, the leak audit, figures. INPUTS are run directories or predictions.csv files.
    """
    from hcdtf.evaluation import report

    if len(inputs) < 2:
        raise click.UsageError("compare needs at least two run directories or predictions.csv files")
    name_list = [n.strip() for n in names.split(",")] if names is not None else None
    if name_list is not None and len(name_list) != len(inputs):
        raise click.UsageError(f"--names gives {len(name_list)} names for {len(inputs)} inputs; give one per input")
    result = report.compare(list(inputs), output_dir, names=name_list, n_bootstrap=n_bootstrap, seed=seed,
                            log=click.echo)
    click.echo(result["verdict"].replace("**", ""))
    click.echo(f"wrote {pathlib.Path(output_dir) / 'report.md'}")


@main.command("export", context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path(file_okay=False))
@click.option("--export-dir", default=None, help="TF Serving model base path [default: export.export_dir].")
@click.option("--version", "version", type=click.IntRange(min=1), default=None,
              help="Version number [default: next free integer].")
@click.option("--format", "formats", multiple=True, type=click.Choice(export_lib.FORMATS),
              help="Also write this runtime's model beside the SavedModel (repeatable): onnx (ONNX Runtime), "
                   "openvino, litert. The SavedModel is always written.")
@click.option("--quantize", "quantize", multiple=True, type=click.Choice(export_lib.QUANTIZATIONS),
              help="Also write a reduced-precision OpenVINO model, kept only if the accuracy guard passes "
                   "(repeatable): int8 (NNCF post-training quantisation), bf16 (bfloat16 compute; needs a CPU "
                   "with AVX-512 BF16 or AMX).")
@click.option("--max-auc-drop", "--int8-max-auc-drop", "max_auc_drop", default=export_lib.DEFAULT_MARGIN,
              show_default=True, type=click.FloatRange(min=0),
              help="Accuracy guard: largest test-AUC drop an int8 or bf16 model may have.")
@click.option("--calibration-size", default=export_lib.DEFAULT_CALIBRATION_SIZE, show_default=True,
              type=click.IntRange(min=1), help="int8 calibration patches, from the validation split.")
@click.option("--data-dir", default=None, help="Where the data set is, if moved since training (--quantize only).")
@config_options
@friendly
def export_cmd(run_dir, export_dir, version, formats, quantize, max_auc_drop, calibration_size, data_dir,
               config_files, overrides):
    """Export RUN_DIR's model for serving: a float32 SavedModel version for TF Serving (with warm-up
    requests, models.config and batching_parameters.txt), a .keras file, and optionally ONNX,
    OpenVINO, LiteRT and accuracy-guarded int8 and bf16 models (pip install 'hcdtf[export]'). Every
    float model computes in float32 in every runtime; each folder's hcdtf_metadata.json says what a
    plain loader must set for that (OpenVINO: INFERENCE_PRECISION_HINT=f32).

    Example: hcdtf export outputs/r34_ft --export-dir models/hcd --format onnx --format openvino --quantize int8
    """
    _quiet()
    cfg = load_config(config_files, overrides, _extra(export={"export_dir": export_dir, "version": version}))
    export_lib.export_run(run_dir, cfg.export.export_dir, cfg.export.version, formats=("saved_model", *formats),
                          quantize=quantize, margin=max_auc_drop, calibration_size=calibration_size,
                          data_dir=data_dir, log=click.echo)


@main.command("quickstart", context_settings=CONTEXT)
@click.option("--output-dir", default="outputs/quickstart", show_default=True,
              help="Where the sample, data set, runs, report, export and slides go.")
@click.option("--n", default=2000, show_default=True, type=click.IntRange(min=40), help="Synthetic patches.")
@click.option("--slides", default=4, show_default=True, type=click.IntRange(min=0),
              help="Synthetic whole slides for the slide demo (0: no slide demo).")
@click.option("--overwrite", is_flag=True, help="Start again from scratch in --output-dir.")
@config_options
@friendly
def quickstart_cmd(output_dir, n, slides, overwrite, config_files, overrides):
    """The whole chain on a generated sample, offline, in minutes on a CPU.

    The experiment configs/experiments/quickstart.yaml: sample-data -> TFDS build -> train ResNet18
    (fine-tuned and frozen base) -> logistic regression -> evaluate -> compare -> export a
    SavedModel; then the whole-slide demo: the exported model over synthetic slides, with heat maps,
    slide AUC and FROC. Rerunning resumes.
    """
    _quiet()
    from hcdtf import quickstart

    quickstart.run(output_dir, n=n, overwrite=overwrite, config_files=config_files,
                   overrides=overrides, slides=slides, log=click.echo)


# ----------------------------------------------------------------------------- experiments, inference
@main.command("experiment", context_settings=CONTEXT)
@click.argument("experiment_file", metavar="EXPERIMENT")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one run-config field for every run, e.g. --set train.epochs=3 (repeatable).")
@click.option("--output-dir", default=None, help="Where the runs and the report go [default: the file's output_dir].")
@click.option("--arch", "archs", multiple=True, type=click.Choice(ARCHS),
              help="Run only these architectures of the grid (repeatable) [default: the file's archs].")
@click.option("--transfer", "transfers", multiple=True, type=click.Choice(TRANSFERS),
              help="Run only these transfer strategies (repeatable) [default: the file's transfers].")
@click.option("--strategy", "transfers", multiple=True, type=click.Choice(TRANSFERS), hidden=True)  # the old name
@click.option("--baseline/--no-baseline", default=None,
              help="Include the logistic-regression baseline [default: the file's baseline].")
@click.option("--seeds", multiple=True, callback=_comma_ints, metavar="S,S,...",
              help="Repeat every run with each seed, e.g. --seeds 0,1,2 [default: the file's seeds].")
@click.option("--folds", multiple=True, callback=_comma_ints, metavar="K,K,...",
              help="With a fold build: repeat every run with each fold as validation [default: the file's folds].")
@click.option("--overwrite", is_flag=True,
              help="Retrain runs whose config changed since they were trained (unchanged finished runs are kept).")
@friendly
def experiment_cmd(experiment_file, overrides, output_dir, archs, transfers, baseline, seeds, folds, overwrite):
    """Run a grid of runs from an experiment file, evaluate them, write one comparison report.

    EXPERIMENT is a YAML file (see configs/experiments/) or the name of a shipped one: `paper`
    (the paper's ResNet-18/34/50/152 x {frozen base, fine-tuned} + logistic regression) or
    `paper_smoke` (the same grid on a synthetic sample, in minutes). Finished runs are skipped,
    so rerunning the same command continues an interrupted experiment.
    The report is <output-dir>/comparison/report.md.
    """
    _quiet()
    from hcdtf import experiment

    experiment.run(experiment_file, overrides=overrides, output_dir=output_dir, archs=archs or None,
                   transfers=transfers or None, baseline=baseline, seeds=seeds, folds=folds, overwrite=overwrite,
                   log=click.echo)


@main.command("predict", context_settings=CONTEXT)
@click.argument("model", type=click.Path())
@click.option("--images", "images_dir", required=True, type=click.Path(),
              help="Directory of 96x96 RGB .tif/.png patches (e.g. Kaggle's test/); only read. With --runner, "
                   "any tf.io.gfile path (gs://, s3://).")
@click.option("--out", required=True, type=click.Path(), help="Submission CSV to write (id,label).")
@click.option("--batch-size", default=256, show_default=True, type=click.IntRange(min=1),
              help="Patches scored per batch.")
@click.option("--backend", type=click.Choice(BACKENDS), default=None,
              help="Runtime to use [default: detected from MODEL]; picks a format inside an export directory.")
@click.option("--runner", type=click.Choice(RUNNERS), default=None,
              help="Run as an Apache Beam pipeline (RunInference) on this runner instead of in this process.")
@click.option("--pipeline-option", "pipeline_options", multiple=True, metavar="--KEY=VALUE",
              help="Beam pipeline option for --runner (repeatable), e.g. --pipeline-option=--project=P.")
@friendly
def predict_cmd(model, images_dir, out, batch_size, backend, runner, pipeline_options):
    """Score a directory of patches and write a Kaggle submission CSV (id,label = probability).

    MODEL is a run directory, a .keras file, an export directory (its latest SavedModel version, or
    the format --backend names), a SavedModel version directory, or an exported .onnx, OpenVINO
    .xml or .tflite model (or its directory). Examples:

    hcdtf predict outputs/models/hcd/1 --images kaggle/test --out submission.csv

    hcdtf predict outputs/models/hcd --backend openvino-int8 --images kaggle/test --out submission.csv
    """
    _quiet()
    if runner:
        from hcdtf.inference import beam as beam_predict

        beam_predict.predict_beam(model, images_dir, out, runner, pipeline_options, batch_size=batch_size,
                                  backend=backend, log=click.echo)
        return
    if pipeline_options:
        raise click.UsageError("--pipeline-option applies to Beam: add --runner DirectRunner (or another runner)")
    from hcdtf.inference import predict

    predict.predict(model, images_dir, out, batch_size=batch_size, log=click.echo, backend=backend)


@main.command("explain", context_settings=CONTEXT)
@click.argument("run_dir", type=click.Path())
@click.argument("more_images", nargs=-1, type=click.Path(), metavar="[FILE_OR_DIR]...")
@click.option("--images", "images", multiple=True, type=click.Path(),
              help="Patch file(s) or director(ies) to explain; more may follow, e.g. --images a.tif b.tif.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Directory for the PNGs.")
@click.option("--max", "max_images", default=32, show_default=True, type=click.IntRange(min=1),
              help="Explain at most this many patches (sorted by id).")
@friendly
def explain_cmd(run_dir, more_images, images, out, max_images):
    """Grad-CAM heat maps of RUN_DIR's model over patches: one PNG each, with the score.

    Example: hcdtf explain outputs/paper/runs/resnet34_fine_tune --images kaggle/test --out gradcam/
    """
    if not images and not more_images:
        raise click.UsageError("give the patches to explain with --images FILE_OR_DIR...")
    _quiet()
    from hcdtf.inference import explain

    explain.explain(run_dir, [*images, *more_images], out, max_images=max_images, log=click.echo)

from hcdtf.slide.cli import commands as _slide_commands  # noqa: E402  (`hcdtf slide ...`, `hcdtf sample-slides`)
for _command in _slide_commands(friendly, CONTEXT):
    main.add_command(_command)
from hcdtf.inference.cli import commands as _encoder_commands  # noqa: E402  (`hcdtf embed`)
for _command in _encoder_commands(friendly, CONTEXT):
    main.add_command(_command)
from hcdtf.stain.cli import commands as _stain_commands  # noqa: E402  (`hcdtf stain fit|apply`)
for _command in _stain_commands(friendly, CONTEXT):
    main.add_command(_command)

from hcdtf.mil.cli import commands as _mil_commands, embed_command as _embed_command  # noqa: E402  (#24)
main.commands["slide"].add_command(_embed_command(friendly, CONTEXT))  # `hcdtf slide embed`
for _command in _mil_commands(friendly, CONTEXT):  # `hcdtf mil train|predict|evaluate|export`
    main.add_command(_command)

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
