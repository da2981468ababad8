"""`hcdtf experiment`: a grid of runs from one file, resumable, evaluated, ending in one report.

An experiment file (``configs/experiments/*.yaml``) names a grid: architectures x transfer
strategies (+ the logistic-regression baseline), repeated over seeds (and folds), the run config
shared by every run, and a few per-transfer changes. :func:`run` trains every run of the grid into
``<output_dir>/runs/<name>/``, evaluates each on the test split and compares them all (DeLong tests,
statistics across repeats, the paper's figures beside ours) in ``<output_dir>/comparison/``.
The file is read through the same typed merge as run configs (:func:`hcdtf.config.merge`), so an
unknown key or a value of the wrong type is an error that names the file, the key and the choices.

Nothing is done twice: a finished run with the same config is skipped, a killed run continues
exactly where it stopped (``train.train``), an evaluation is redone only when the model it scored
or the build of the data has changed (``RunDir.evaluation_current``). A run trained on another
build of the data (``hcdtf.data.identity``) is refused, naming what changed, unless ``--overwrite``. Rerunning the command after an interruption
therefore continues the grid where it stopped.

Schema (every key optional)::

    description: free text
    output_dir: outputs/paper      # default: outputs/<file name without .yaml>
    configs: [a.yaml, ...]         # run config files for every run: relative to the experiment
                                   # file's directory, else to configs/
    set: [KEY=VALUE, ...]          # overrides for every run, like `hcdtf train --set`
    archs: [ResNet18, ResNet34, ResNet50, ResNet152]    # the default: the paper's four
    transfers: [freeze_base, fine_tune]                 # the default: both
    stains: [none, macenko, reinhard]   # optional: repeat each run with each data.stain_normalize
                                   # (run names get _<stain>); with data.test_centre the report
                                   # adds AUC on seen vs unseen centres (hcdtf.evaluation.centres)
    per_transfer:                  # extra configs/set for the runs of one transfer strategy
      freeze_base: {configs: [freeze_base.yaml], set: [...]}
    baseline: true                 # also the logistic regression on pixels (default true)
    seeds: [0, 1, 2]               # repeat every run with each seed (default: the config's seed)
    folds: [0, 1, 2, 3, 4]         # with a fold build (data.dataset_config kaggle_folds5): repeat
                                   # every run with each fold as validation
    sample: {n: 400, seed: 0}      # optional: if the data set is not built, generate a synthetic
                                   # Kaggle-layout sample in <output_dir>/sample and build it
                                   # (centres: K renders K centres, as sample-data --centres K)
    compare: {n_bootstrap: 1000, seed: 0}   # default: the runs' eval.n_bootstrap and seed
    export: false                  # export the best CNN (validation AUC) as a SavedModel

``{output_dir}`` in a ``set`` value or a ``configs`` path is replaced by the experiment's output
directory. ``model.arch``, ``model.transfer``, ``seed``, ``data.fold`` and ``output_dir`` belong
to the grid and cannot be set per run. ``strategies``/``per_strategy`` are accepted as the old
names of ``transfers``/``per_transfer``.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import pathlib
import time
from typing import Callable, Optional

import yaml

from hcdtf import compat
from hcdtf import config as config_lib
from hcdtf.config import ARCHS, TRANSFERS, Config, ConfigError

PAPER_ARCHS = ("ResNet18", "ResNet34", "ResNet50", "ResNet152")
BASELINE_NAME = "logistic_regression"
# Keys that the grid sets for each run, and where to change them (in the file, on the command line).
GRID_KEYS = {
    "model.arch": ("archs: in the experiment file", "--arch"),
    "model.transfer": ("transfers: in the experiment file", "--transfer"),
    "seed": ("seeds: in the experiment file", "--seeds"),
    "data.fold": ("folds: in the experiment file", "--folds"),
    "output_dir": ("output_dir: in the experiment file", "--output-dir"),
}
GRID_KEYS.update({old: GRID_KEYS[new] for old, new in compat.CONFIG_KEYS.items() if new in GRID_KEYS})  # 0.1 names
RENAMED = compat.EXPERIMENT_KEYS


class ExperimentError(ConfigError):
    """The experiment file (or a command-line change to it) is invalid."""


@dataclasses.dataclass
class PerTransfer:
    configs: list[str] = dataclasses.field(default_factory=list)
    set: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class SampleSpec:
    n: int = 400
    seed: int = 0
    centres: Optional[int] = None  # K: a multi-centre sample (sample-data --centres K)


@dataclasses.dataclass
class CompareSpec:
    n_bootstrap: Optional[int] = None
    seed: Optional[int] = None


@dataclasses.dataclass
class ExperimentSpec:
    """A parsed experiment file (see the module docstring for each key)."""

    description: str = ""
    output_dir: Optional[str] = None
    configs: list[str] = dataclasses.field(default_factory=list)
    set: list[str] = dataclasses.field(default_factory=list)
    archs: list[str] = dataclasses.field(default_factory=lambda: list(PAPER_ARCHS))
    transfers: list[str] = dataclasses.field(default_factory=lambda: ["freeze_base", "fine_tune"])
    stains: Optional[list[str]] = None
    per_transfer: dict[str, PerTransfer] = dataclasses.field(default_factory=dict)
    baseline: bool = True
    seeds: Optional[list[int]] = None
    folds: Optional[list[int]] = None
    sample: Optional[SampleSpec] = None
    compare: CompareSpec = dataclasses.field(default_factory=CompareSpec)
    export: bool = False

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class Experiment:
    path: pathlib.Path
    spec: ExperimentSpec

    @property
    def output_dir(self) -> str:
        return self.spec.output_dir or f"outputs/{self.path.stem}"


@dataclasses.dataclass
class PlannedRun:
    name: str
    kind: str  # "cnn" or "baseline"
    cfg: Config

    @property
    def run_dir(self) -> pathlib.Path:
        return pathlib.Path(self.cfg.output_dir)

    @property
    def label(self) -> str:
        what = "logistic regression" if self.kind == "baseline" else f"{self.cfg.model.arch} {self.cfg.model.transfer}"
        return f"{what} (seed {self.cfg.seed}" + (f", fold {self.cfg.data.fold})" if self.cfg.data.fold is not None else ")")


# --------------------------------------------------------------------------- the file
def resolve_path(path: str | pathlib.Path) -> pathlib.Path:
    """An experiment file path, or the name of a shipped one (``paper``, ``paper_smoke``)."""
    p = pathlib.Path(path)
    if p.is_file():
        return p
    if not p.suffix and p.parent == pathlib.Path("."):
        try:
            shipped = config_lib.configs_dir() / "experiments" / f"{p.name}.yaml"
        except ConfigError:
            shipped = None
        if shipped is not None and shipped.is_file():
            return shipped
    raise ExperimentError(
        f"experiment file {str(p)!r} does not exist (shipped experiments: "
        f"{', '.join(shipped_experiments()) or 'none found'})"
    )


def shipped_experiments() -> list[str]:
    try:
        d = config_lib.configs_dir() / "experiments"
    except ConfigError:
        return []
    return sorted(p.stem for p in d.glob("*.yaml")) if d.is_dir() else []


def _choices(source: str, key: str, items: list, valid, what: str) -> None:
    if not items:
        raise ExperimentError(f"{source}: {key} must be a non-empty list")
    for item in items:
        if valid is not None and item not in valid:
            raise ExperimentError(f"{source}: {key}: unknown {what} {item!r}; valid: {', '.join(map(str, valid))}")
        if valid is None and (not isinstance(item, int) or item < 0):
            raise ExperimentError(f"{source}: {key}: {what}s are integers >= 0, got {item!r}")
    if len(set(items)) != len(items):
        raise ExperimentError(f"{source}: {key} lists an entry twice: {items!r}")


def _check_grid_key(item: str, source: str, in_file: bool) -> None:
    key = item.split("=", 1)[0].strip()
    if key in GRID_KEYS:
        instead = GRID_KEYS[key][0 if in_file else 1]
        raise ExperimentError(f"{source}: {key} is chosen by the experiment grid; use {instead} instead")


def _check_sets(source: str, key: str, items: list[str]) -> None:
    """Each KEY=VALUE must be a valid run-config override and must not touch the grid's keys."""
    for i, item in enumerate(items):
        where = f"{source}, {key}[{i}] {item!r}"
        if "=" not in item:
            raise ExperimentError(f"{where}: expected KEY=VALUE, e.g. train.epochs=3")
        _check_grid_key(item, where, in_file=True)
        try:
            config_lib.from_dict(config_lib.parse_override(item.replace("{output_dir}", "outputs/x")), where)
        except ConfigError as e:
            msg = str(e).split(": ", 1)[-1] if str(e).startswith(where) else str(e)
            raise ExperimentError(f"{where}: {msg}") from None


def validate(spec: ExperimentSpec, source: str) -> None:
    _choices(source, "archs", spec.archs, ARCHS + config_lib.ENCODERS, "architecture")
    _choices(source, "transfers", spec.transfers, TRANSFERS, "transfer")
    if spec.stains is not None:
        _choices(source, "stains", spec.stains, config_lib.STAIN_NORMALIZERS, "stain normaliser")
    for name, per in spec.per_transfer.items():
        if name not in TRANSFERS:
            raise ExperimentError(f"{source}: per_transfer: unknown transfer {name!r}; valid: {', '.join(TRANSFERS)}")
        _check_sets(source, f"per_transfer.{name}.set", per.set)
    _check_sets(source, "set", spec.set)
    for key in ("seeds", "folds"):
        if getattr(spec, key) is not None:
            _choices(source, key, getattr(spec, key), None, key[:-1])
    if spec.sample is not None and (spec.sample.n < 40 or spec.sample.seed < 0):
        raise ExperimentError(f"{source}: sample.n must be >= 40 and sample.seed >= 0, got {spec.sample}")
    if spec.compare.n_bootstrap is not None and spec.compare.n_bootstrap < 0:
        raise ExperimentError(f"{source}: compare.n_bootstrap must be >= 0, got {spec.compare.n_bootstrap}")


def load_experiment(path: str | pathlib.Path) -> Experiment:
    """Reads and validates an experiment file; errors name the file and the key."""
    p = resolve_path(path)
    source = f"experiment file {str(p)!r}"
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ExperimentError(f"{source}: not valid YAML: {e}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise ExperimentError(f"{source}: top level must be a mapping of keys (output_dir, archs, transfers, ...)")
    spec = ExperimentSpec()
    try:
        config_lib.merge(spec, raw, source, renamed=RENAMED)
    except ConfigError as e:
        raise ExperimentError(str(e)) from None
    validate(spec, source)
    return Experiment(p, spec)


# --------------------------------------------------------------------------- the grid
def _config_file(exp: Experiment, name: str, key: str) -> pathlib.Path:
    name = name.replace("{output_dir}", exp.output_dir)
    p = pathlib.Path(name).expanduser()
    shipped = config_lib.configs_dir()
    candidates = [p] if p.is_absolute() else [exp.path.parent / p, shipped / p]
    for c in candidates:
        # The shipped experiment files are never run configs (configs/experiments/quickstart.yaml
        # is the quick start's grid, configs/quickstart.yaml its run settings).
        if c.is_file() and c.resolve().parent != (shipped / "experiments").resolve():
            return c
    raise ExperimentError(f"experiment file {str(exp.path)!r}: {key}: config file {name!r} not found (looked in "
                          f"{', '.join(str(c.parent) for c in candidates)})")


def narrow(exp: Experiment, archs=None, transfers=None, baseline=None, seeds=None, folds=None) -> None:
    """Applies the command line's changes to the grid (validated like the file's)."""
    source = "command line"
    for key, value in (("archs", archs), ("transfers", transfers), ("seeds", seeds), ("folds", folds)):
        if value:
            setattr(exp.spec, key, list(value))
    if baseline is not None:
        exp.spec.baseline = baseline
    validate(exp.spec, source)


def _repeats(spec: ExperimentSpec, base: Config) -> list[tuple[int, Optional[int], str]]:
    """(seed, fold, suffix of the run name) of every repeat: the name says the seed and/or fold
    where the grid repeats over them (one repeat keeps the plain name)."""
    seeds = spec.seeds or [base.seed]
    folds = spec.folds or [base.data.fold]
    out = []
    for seed, fold in itertools.product(seeds, folds):
        suffix = (f"_seed{seed}" if len(seeds) > 1 else "") + (f"_fold{fold}" if len(folds) > 1 else "")
        out.append((seed, fold, suffix))
    return out


def plan(exp: Experiment, overrides=()) -> list[PlannedRun]:
    """Every run of the grid with its resolved, validated config; ``overrides`` (--set) apply to
    every run, after the file's own."""
    spec, out = exp.spec, pathlib.Path(exp.output_dir)
    for o in overrides:
        _check_grid_key(o, f"--set {o!r}", in_file=False)

    def subst(items):
        return [s.replace("{output_dir}", exp.output_dir) for s in items]

    common_files = [_config_file(exp, f, "configs") for f in spec.configs]
    common = [*subst(spec.set), *subst(overrides)]
    base = config_lib.load_config(common_files, common)
    runs = []
    for seed, fold, suffix in _repeats(spec, base):
        grid = [f"seed={seed}", f"data.fold={'null' if fold is None else fold}"]
        for arch, transfer, stain in itertools.product(spec.archs, spec.transfers, spec.stains or [None]):
            per = spec.per_transfer.get(transfer, PerTransfer())
            files = common_files + [_config_file(exp, f, f"per_transfer.{transfer}.configs") for f in per.configs]
            name = f"{arch.lower()}_{transfer}{f'_{stain}' if stain else ''}{suffix}"
            stain_set = [f"data.stain_normalize={stain}"] if stain else []
            sets = [*subst(spec.set), *subst(per.set), *subst(overrides), *grid, f"model.arch={arch}",
                    f"model.transfer={transfer}", *stain_set, f"output_dir={out / 'runs' / name}"]
            runs.append(PlannedRun(name, "cnn", config_lib.load_config(files, sets)))
        if spec.baseline:
            name = BASELINE_NAME + suffix
            sets = [*common, *grid, f"output_dir={out / 'runs' / name}"]
            runs.append(PlannedRun(name, "baseline", config_lib.load_config(common_files, sets)))
    if not runs:
        raise ExperimentError(f"experiment file {str(exp.path)!r}: the grid is empty (no archs x transfers and no baseline)")
    data_keys = {(r.cfg.data.data_dir, r.cfg.data.dataset_config) for r in runs}
    if len(data_keys) > 1:
        raise ExperimentError(f"experiment file {str(exp.path)!r}: all runs of an experiment must use the same data "
                              f"set (data.data_dir, data.dataset_config); the grid gives {sorted(data_keys)}")
    _check_folds(spec.folds, runs[0].cfg.data.dataset_config)
    return runs


def _check_folds(folds: Optional[list[int]], dataset_config: str) -> None:
    """Folds need a fold build with at least that many folds (checked before any work)."""
    from tfds_builder.hcd import names

    if not folds:
        return
    k = names.parse(dataset_config).folds if names.follows_grammar(dataset_config) else 0
    if not k:
        raise ExperimentError(f"folds: {folds} need a fold build, e.g. --set data.dataset_config=kaggle_folds5 "
                              f"(built with `hcdtf build-dataset --folds 5`); {dataset_config!r} has no folds")
    if max(folds) >= k:
        raise ExperimentError(f"folds: {folds}: {dataset_config!r} has folds 0..{k - 1}")


def ensure_dataset(exp: Experiment, cfg: Config, log: Callable[[str], None]) -> None:
    """Builds the data set if it is missing and the experiment says where from (``sample:`` or
    ``data.manual_dir``); otherwise fails before any training with how to build it."""
    from hcdtf.data import pipeline as data

    if data.get_builder(cfg.data.data_dir, cfg.data.dataset_config).is_prepared():
        return
    manual_dir = cfg.data.manual_dir
    if exp.spec.sample is not None:
        from hcdtf import synthetic

        sample = pathlib.Path(exp.output_dir) / "sample"
        if not (sample / "train_labels.csv").is_file():
            info = synthetic.write_sample(sample, n=exp.spec.sample.n, seed=exp.spec.sample.seed,
                                          centres=exp.spec.sample.centres)
            log(f"sample: {info.n_train} labelled + {info.n_test} unlabelled synthetic patches in {sample}")
        manual_dir = str(sample)
    if not manual_dir:
        data.load_builder(cfg.data)  # raises DatasetNotBuiltError, which says how to build it
    log(f"building the {cfg.data.dataset}/{cfg.data.dataset_config} data set from {manual_dir} "
        f"into {cfg.data.data_dir}")
    builder = data.build_dataset(manual_dir, cfg.data.data_dir, cfg.data.dataset_config)
    splits = ", ".join(f"{k}: {v.num_examples}" for k, v in builder.info.splits.items())
    log(f"built {builder.info.full_name} ({splits})")


def _status(pr: PlannedRun, overwrite: bool) -> str:
    """What to do with a planned run: 'complete', 'resume', 'fresh' or 'changed' (a run of
    another config is in the way and --overwrite replaces it); refuses conflicts up front."""
    from hcdtf.rundir import RunDir, RunDirError

    state = RunDir(pr.run_dir).status(pr.cfg, pr.kind)
    if state == "foreign":
        raise RunDirError(f"run {pr.name}: {pr.run_dir} is not empty and holds no hcdtf run; use another --output-dir")
    if state == "conflict":
        if not overwrite:
            raise RunDirError(
                f"run {pr.name}: {pr.run_dir} holds a run of another config than the experiment now gives it; "
                "pass --overwrite to retrain the runs whose config changed (finished runs whose config did "
                "not change are kept), or use another --output-dir")
        return "changed"
    if state in ("complete", "resume"):
        from hcdtf.data import identity as dataid

        changes = dataid.training_changes(RunDir(pr.run_dir).data_record(), pr.cfg)
        if changes and not overwrite:
            raise RunDirError(
                f"run {pr.name}: {pr.run_dir} was trained on another build of {pr.cfg.data.dataset}/"
                f"{pr.cfg.data.dataset_config} ({'; '.join(changes)}); pass --overwrite to retrain the runs whose "
                "data changed, or use another --output-dir")
        if changes and state == "resume":  # an unfinished run on other data: start it again
            with RunDir(pr.run_dir).locked("experiment --overwrite") as rd:
                rd.clear()
            return "fresh"
        if changes:
            return "data changed"
        if changes is None:
            return f"{state}, data unknown"
    return "fresh" if state == "unstarted" else state


def _run_one(pr: PlannedRun, state: str, tag: str, log) -> dict:
    from hcdtf.data import identity as dataid
    from hcdtf.evaluation import evaluate
    from hcdtf.rundir import RunDir, kill_point
    from hcdtf.training import baseline, train

    t0 = time.time()
    state = state.split(", ")[0]  # "complete, data unknown": the run is older than data identities
    if state != "complete":
        what = {"fresh": "training", "resume": "resuming", "changed": "config changed, retraining",
                "data changed": "data changed, retraining"}[state]
        log(f"{tag}: {what} {pr.label} -> {pr.run_dir}")
        (baseline.run if pr.kind == "baseline" else train.train)(pr.cfg, overwrite=state.endswith("changed"), log=log)
    run_dir, split = RunDir(pr.run_dir), pr.cfg.data.test_split
    if run_dir.evaluation_current(split, split, lambda data: dataid.evaluation_current(data, pr.cfg.data, split)):
        evaluated = "evaluation up to date"
    else:
        evaluate.evaluate_run(pr.run_dir, split=split, log=log)
        evaluated = "evaluated"
    m = json.loads(run_dir.metrics_path(split, split).read_text())
    seconds = round(time.time() - t0, 1)
    status = "skipped" if state == "complete" else "done"
    head = "already complete, skipped" if status == "skipped" else f"done in {seconds:.0f} s"
    log(f"{tag}: {head}; {evaluated}; {split} AUC {m['auc']:.4f} ({pr.run_dir})")
    kill_point("experiment-between-runs")
    summary = run_dir.summary() or {}
    return {"name": pr.name, "kind": pr.kind, "arch": summary.get("arch"), "transfer": summary.get("transfer"),
            "seed": pr.cfg.seed, "fold": pr.cfg.data.fold, "run_dir": str(pr.run_dir), "status": status,
            "test_auc": m["auc"], "best_val_auc": summary.get("best_val_auc"), "seconds": seconds}


def _export_best(results: list[dict], out: pathlib.Path, log) -> str | None:
    """Exports the CNN with the best validation AUC (once: an existing export is kept)."""
    from hcdtf import export

    cnns = [r for r in results if r["kind"] == "cnn"]
    if not cnns:
        return None
    export_dir = out / "models" / "hcd"
    existing = sorted((int(p.name), p) for p in export_dir.glob("[0-9]*") if p.is_dir() and p.name.isdigit()) \
        if export_dir.is_dir() else []
    if existing:
        log(f"SavedModel for TF Serving: {existing[-1][1]} (already exported)")
        return str(existing[-1][1])
    best = max(cnns, key=lambda r: r["best_val_auc"] if r["best_val_auc"] is not None else float("-inf"))
    return str(export.export_run(best["run_dir"], export_dir, log=log))


def run(
    path: str | pathlib.Path,
    overrides=(),
    output_dir: str | None = None,
    archs=None,
    transfers=None,
    baseline: bool | None = None,
    seeds=None,
    folds=None,
    overwrite: bool = False,
    sample_n: int | None = None,
    configs=(),
    log: Callable[[str], None] = print,
) -> dict:
    """Runs (or continues) the experiment in ``path``; returns the summary also written to
    ``<output_dir>/experiment.json``. ``overwrite``: retrain the runs whose config changed since
    they were trained (the old run stays until the new one has an epoch); unchanged finished
    runs are still skipped. ``configs``: run config files applied after the file's own;
    ``sample_n``: the size of the synthetic sample, if the file asks for one."""
    from hcdtf import atomic
    from hcdtf.evaluation import report
    from hcdtf.rundir import RunLock

    exp = load_experiment(path)
    if output_dir:
        exp.spec.output_dir = str(output_dir)
    if sample_n is not None:
        exp.spec.sample = (dataclasses.replace(exp.spec.sample, n=sample_n) if exp.spec.sample
                           else SampleSpec(n=sample_n))
    exp.spec.configs = [*exp.spec.configs, *configs]
    narrow(exp, archs, transfers, baseline, seeds, folds)
    runs = plan(exp, overrides)
    out = pathlib.Path(exp.output_dir)
    log(f"experiment {exp.path} -> {out}: {len(runs)} run{'s' if len(runs) > 1 else ''} "
        f"({', '.join(r.name for r in runs)})")
    states = {r.name: _status(r, overwrite) for r in runs}  # refuses conflicts before any work
    unknown = [name for name, state in states.items() if state.endswith("data unknown")]
    if unknown:
        log(f"note: {', '.join(unknown)} record{'s' if len(unknown) == 1 else ''} no identity of the data "
            "trained on (an older hcdtf): not checked against the current build")
    out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out, "experiment")
    lock.acquire()
    try:
        ensure_dataset(exp, runs[0].cfg, log)
        resolved = {"file": str(exp.path), **exp.spec.to_dict(), "output_dir": exp.output_dir,
                    "command_line_set": list(overrides), "runs": [r.name for r in runs]}
        atomic.write_text(out / "experiment.yaml", yaml.safe_dump(resolved, sort_keys=False))
        t_start = time.time()
        results = [_run_one(pr, states[pr.name], f"[{i}/{len(runs)}] {pr.name}", log) for i, pr in enumerate(runs, 1)]
        comparison = out / "comparison"
        report.compare([r.run_dir for r in runs], comparison,
                       n_bootstrap=_or(exp.spec.compare.n_bootstrap, runs[0].cfg.eval.n_bootstrap),
                       seed=_or(exp.spec.compare.seed, runs[0].cfg.seed), log=log)
        if runs[0].cfg.data.test_centre is not None:  # AUC on seen vs unseen centres, into the report
            from hcdtf.evaluation import centres

            centres.write_report([r.run_dir for r in runs], comparison, log=log)
        saved = _export_best(results, out, log) if exp.spec.export else None
    finally:
        lock.release()
    summary = {"experiment": str(exp.path), "output_dir": str(out), "runs": results,
               "report": str(comparison / "report.md"), "saved_model": saved,
               "seconds": round(time.time() - t_start, 1)}
    atomic.write_json(out / "experiment.json", summary)
    done = sum(r["status"] == "done" for r in results)
    log(f"experiment done: {done} trained, {len(runs) - done} already complete; report: {summary['report']}")
    return summary


def _or(value, default):
    return default if value is None else value
