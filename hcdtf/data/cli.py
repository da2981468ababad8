"""``hcdtf sample-data``, ``hcdtf build-dataset`` and ``hcdtf audit``: the data stage's commands.

Registered by :mod:`hcdtf.cli` from ``COMMANDS``; nothing here imports TensorFlow until a command runs.
"""

from __future__ import annotations

import sys

import click

from hcdtf.clitools import CONTEXT, DATASET_CONFIG_HELP, config_options, friendly, given, quiet
from hcdtf.config import load_config


@click.command("sample-data", context_settings=CONTEXT)
@click.argument("out_dir", type=click.Path(file_okay=False))
@click.option("--n", default=2000, show_default=True, type=click.IntRange(min=4), help="Labelled patches.")
@click.option("--n-test", default=None, type=click.IntRange(min=0), help="Unlabelled test patches [default: n/10].")
@click.option("--seed", default=0, show_default=True, type=int, help="Random seed (same seed, same files).")
@click.option("--positive-fraction", default=0.4, show_default=True, type=click.FloatRange(0.05, 0.95),
              help="Share of tumour (label 1) patches; the real data have about 0.4.")
@click.option("--centres", default=None, type=click.IntRange(1, 100), metavar="K",
              help="Render K centres (hospitals) with different stain vectors, dye amounts and scanner colour "
                   "responses (patch i is centre i % K) and write centres.csv (id,centre) for "
                   "leave-one-centre-out runs (data.centres, data.test_centre).")
@friendly
def sample_data(out_dir, n, n_test, seed, positive_fraction, centres):
    """Write a synthetic sample in the exact Kaggle layout to OUT_DIR.

    OUT_DIR/train/<id>.tif (96x96 RGB), train_labels.csv (id,label), test/<id>.tif and
    sample_submission.csv, with H&E-like patches labelled by the PCam rule (1 iff tumour cells
    lie in the centre 32x32 region). Build it with `hcdtf build-dataset --manual-dir OUT_DIR`.

    With --centres K the patches come from K centres: centre 0 has the reference look; 1-4 are fixed
    looks (paler and pinker, bluer and darker, faded, dark with a yellow cast: other H and E
    vectors and dye amounts, other scanner gains, cross-talk and gammas); more are drawn. The
    tissue and labels are those of the sample without centres. See hcdtf/synthetic/centres.py.
    """
    from hcdtf import synthetic

    info = synthetic.write_sample(out_dir, n=n, n_test=n_test, seed=seed,
                                  positive_fraction=positive_fraction, progress=True, centres=centres)
    if info.already_done:
        click.echo(f"done already: {info.out_dir} holds this sample ({info.n_train} labelled, {info.n_test} "
                   "unlabelled patches); nothing written")
        return
    click.echo(f"wrote {info.n_train} labelled ({info.n_positive} tumour) and {info.n_test} unlabelled "
               f"patches to {info.out_dir} in {info.seconds:.1f} s")


@click.command("build-dataset", context_settings=CONTEXT)
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
    quiet()
    from hcdtf.data import pipeline as data

    cfg = load_config(config_files, overrides, given(data={"data_dir": data_dir, "dataset_config": dataset_config}))
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


@click.command("audit", context_settings=CONTEXT)
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
    quiet()
    from hcdtf.data import audit

    try:
        audit.run(data_dir, dataset_config, slide_map=slide_map, threshold=threshold, json_out=json_out, log=click.echo)
    except audit.AuditMismatchError as e:  # a failed check, not a usage error: exit code 1
        click.echo(f"Error: {e}", err=True)
        sys.exit(1)


COMMANDS = [sample_data, build_dataset, audit_cmd]
