"""`hcdtf experiment`: the paper's grid of runs in one command, resumable, ending in one report.

An experiment file (``configs/experiments/*.yaml``) names a grid: architectures x transfer
strategies (+ the logistic-regression baseline), the run config shared by every run, and a few
per-strategy changes. :func:`run` trains every run of the grid into ``<output_dir>/runs/<name>/``,
evaluates each on the test split and compares them all (DeLong tests, the paper's figures beside
ours) in ``<output_dir>/comparison/report.md``.

Nothing is done twice: a finished run with the same config is skipped ("already complete"), a
killed run resumes at its last finished epoch (``train.train``), an evaluation is redone only
when its ``metrics.json`` is older than the model. Rerunning the command after an interruption
therefore continues the grid where it stopped.

Experiment file schema (every key optional; unknown keys are errors that name the file)::

    description: free text
    output_dir: outputs/paper      # default: outputs/<file name without .yaml>
    configs: [a.yaml, ...]         # run config files for every run: relative to the experiment
                                   # file's directory, else to configs/
    set: [KEY=VALUE, ...]          # overrides for every run, like `hcdtf train --set`
    archs: [ResNet18, ResNet34, ResNet50, ResNet152]    # the default: the paper's four
    strategies: [freeze_base, fine_tune]                # the default: both
    per_strategy:                  # extra configs/set for the runs of one strategy
      freeze_base: {configs: [freeze_base.yaml], set: [...]}
    baseline: true                 # also the logistic regression on pixels (default true)
    sample: {n: 400, seed: 0}      # optional: if the data set is not built, generate a synthetic
                                   # Kaggle-layout sample in <output_dir>/sample and build it
    compare: {n_bootstrap: 1000, seed: 0}   # default: the runs' eval.n_bootstrap and seed

``{output_dir}`` in a ``set`` value or a ``configs`` path is replaced by the experiment's output
directory. ``model.arch``, ``model.strategy`` and ``output_dir`` belong to the grid and cannot be
set per run. If the data set is not built and ``data.manual_dir`` is set, it is built from there.
"""

from __future__ import annotations

import json
import pathlib
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import yaml

from hcdtf import config as config_lib
from hcdtf.config import ARCHS, STRATEGIES, Config, ConfigError

PAPER_ARCHS = ("ResNet18", "ResNet34", "ResNet50", "ResNet152")
BASELINE_NAME = "logistic_regression"
# Keys that the grid sets for each run, and where to change them (in the file, on the command line).
GRID_KEYS = {
    "model.arch": ("archs: in the experiment file", "--arch"),
    "model.strategy": ("strategies: in the experiment file", "--strategy"),
    "output_dir": ("output_dir: in the experiment file", "--output-dir"),
}
_TOP_KEYS = ("description", "output_dir", "configs", "set", "archs", "strategies", "per_strategy",
             "baseline", "sample", "compare")
_STRATEGY_KEYS = ("configs", "set")
_SAMPLE_KEYS = ("n", "seed")
_COMPARE_KEYS = ("n_bootstrap", "seed")


class ExperimentError(ConfigError):
    """The experiment file (or a command-line change to it) is invalid."""


@dataclass
class Experiment:
    """A parsed, validated experiment file."""

    path: pathlib.Path
    output_dir: str
    description: str = ""
    configs: list[str] = field(default_factory=list)
    set: list[str] = field(default_factory=list)
    archs: list[str] = field(default_factory=lambda: list(PAPER_ARCHS))
    strategies: list[str] = field(default_factory=lambda: ["freeze_base", "fine_tune"])
    per_strategy: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    baseline: bool = True
    sample: Optional[dict[str, int]] = None
    compare: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "description": self.description, "output_dir": self.output_dir, "configs": self.configs,
            "set": self.set, "archs": self.archs, "strategies": self.strategies,
            "per_strategy": self.per_strategy, "baseline": self.baseline, "sample": self.sample,
            "compare": self.compare,
        }


@dataclass
class PlannedRun:
    name: str
    kind: str  # "train" or "baseline"
    cfg: Config

    @property
    def run_dir(self) -> pathlib.Path:
        return pathlib.Path(self.cfg.output_dir)

    @property
    def label(self) -> str:
        if self.kind == "baseline":
            return "logistic regression"
        return f"{self.cfg.model.arch} {self.cfg.model.strategy}"


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


def _err(path: pathlib.Path, msg: str) -> ExperimentError:
    return ExperimentError(f"experiment file {str(path)!r}: {msg}")


def _str_list(path: pathlib.Path, key: str, value: Any) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise _err(path, f"{key} must be a list of strings, got {value!r}")
    return list(value)


def _check_keys(path: pathlib.Path, where: str, data: dict, valid: tuple) -> None:
    for key in data:
        if key not in valid:
            raise _err(path, f"unknown key {where + str(key)!r}; valid keys"
                             f"{' in ' + where.rstrip('.') if where else ''}: {', '.join(valid)}")


def _check_sets(path: pathlib.Path, key: str, items: list[str]) -> None:
    """Each KEY=VALUE must be a valid run-config override and must not touch the grid's keys."""
    for i, item in enumerate(items):
        source = f"experiment file {str(path)!r}, {key}[{i}] {item!r}"
        if "=" not in item:
            raise ExperimentError(f"{source}: expected KEY=VALUE, e.g. train.epochs=3")
        _check_grid_key(item, source, in_file=True)
        concrete = item.replace("{output_dir}", "outputs/experiment")
        try:
            config_lib.from_dict(config_lib.parse_override(concrete), source)
        except ConfigError as e:
            msg = str(e).removeprefix(f"--set {concrete!r}: ")
            raise ExperimentError(msg if msg.startswith(source) else f"{source}: {msg}") from None


def _check_grid_key(item: str, source: str, in_file: bool) -> None:
    key = item.split("=", 1)[0].strip()
    if key in GRID_KEYS:
        instead = GRID_KEYS[key][0 if in_file else 1]
        raise ExperimentError(f"{source}: {key} is chosen by the experiment grid; use {instead} instead")


def _choices(path: pathlib.Path, key: str, value: Any, valid: tuple, default: list[str]) -> list[str]:
    if value is None:
        return list(default)
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items:
        raise _err(path, f"{key} must be a non-empty list, got {value!r}")
    for item in items:
        if item not in valid:
            raise _err(path, f"{key}: unknown {key[:-1]} {item!r}; valid: {', '.join(valid)}")
    if len(set(items)) != len(items):
        raise _err(path, f"{key} lists an entry twice: {items!r}")
    return list(items)


def _int(path: pathlib.Path, key: str, value: Any, minimum: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise _err(path, f"{key} must be an integer >= {minimum}, got {value!r}")
    return value


def load_experiment(path: str | pathlib.Path) -> Experiment:
    """Reads and validates an experiment file; errors name the file and the key."""
    p = resolve_path(path)
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise _err(p, f"not valid YAML: {e}") from None
    raw = {} if raw is None else raw
    if not isinstance(raw, dict):
        raise _err(p, "top level must be a mapping of keys (output_dir, archs, strategies, ...)")
    _check_keys(p, "", raw, _TOP_KEYS)

    exp = Experiment(path=p, output_dir=str(raw.get("output_dir") or f"outputs/{p.stem}"))
    if not isinstance(exp.output_dir, str):
        raise _err(p, f"output_dir must be a path, got {raw['output_dir']!r}")
    exp.description = str(raw.get("description") or "").strip()
    exp.configs = _str_list(p, "configs", raw.get("configs"))
    exp.set = _str_list(p, "set", raw.get("set"))
    _check_sets(p, "set", exp.set)
    exp.archs = _choices(p, "archs", raw.get("archs"), ARCHS, list(PAPER_ARCHS))
    exp.strategies = _choices(p, "strategies", raw.get("strategies"), STRATEGIES, ["freeze_base", "fine_tune"])

    per = raw.get("per_strategy") or {}
    if not isinstance(per, dict):
        raise _err(p, f"per_strategy must be a mapping strategy -> {{configs, set}}, got {per!r}")
    for strategy, spec in per.items():
        if strategy not in STRATEGIES:
            raise _err(p, f"per_strategy: unknown strategy {strategy!r}; valid: {', '.join(STRATEGIES)}")
        spec = spec or {}
        if not isinstance(spec, dict):
            raise _err(p, f"per_strategy.{strategy} must be a mapping with configs/set, got {spec!r}")
        _check_keys(p, f"per_strategy.{strategy}.", spec, _STRATEGY_KEYS)
        exp.per_strategy[strategy] = {
            "configs": _str_list(p, f"per_strategy.{strategy}.configs", spec.get("configs")),
            "set": _str_list(p, f"per_strategy.{strategy}.set", spec.get("set")),
        }
        _check_sets(p, f"per_strategy.{strategy}.set", exp.per_strategy[strategy]["set"])

    baseline = raw.get("baseline", True)
    if not isinstance(baseline, bool):
        raise _err(p, f"baseline must be true or false, got {baseline!r}")
    exp.baseline = baseline

    sample = raw.get("sample")
    if sample is not None:
        if not isinstance(sample, dict):
            raise _err(p, f"sample must be a mapping like {{n: 400, seed: 0}} or null, got {sample!r}")
        _check_keys(p, "sample.", sample, _SAMPLE_KEYS)
        exp.sample = {"n": _int(p, "sample.n", sample.get("n", 400), 40),
                      "seed": _int(p, "sample.seed", sample.get("seed", 0), 0)}

    compare = raw.get("compare") or {}
    if not isinstance(compare, dict):
        raise _err(p, f"compare must be a mapping like {{n_bootstrap: 1000}}, got {compare!r}")
    _check_keys(p, "compare.", compare, _COMPARE_KEYS)
    exp.compare = {k: _int(p, f"compare.{k}", v, 0) for k, v in compare.items()}
    return exp


# --------------------------------------------------------------------------- the grid
def _config_file(exp: Experiment, name: str, key: str) -> pathlib.Path:
    name = name.replace("{output_dir}", exp.output_dir)
    p = pathlib.Path(name).expanduser()
    candidates = [p] if p.is_absolute() else [exp.path.parent / p, config_lib.configs_dir() / p]
    for c in candidates:
        if c.is_file():
            return c
    raise _err(exp.path, f"{key}: config file {name!r} not found (looked in "
                         f"{', '.join(str(c.parent) for c in candidates)})")


def plan(exp: Experiment, overrides=(), archs=None, strategies=None, baseline=None) -> list[PlannedRun]:
    """Every run of the grid with its resolved, validated config. ``archs``, ``strategies`` and
    ``baseline`` (from the command line) narrow or change the file's grid; ``overrides`` (--set)
    apply to every run, after the file's own."""
    for o in overrides:
        _check_grid_key(o, f"--set {o!r}", in_file=False)
    if archs:
        archs = _choices(exp.path, "archs", list(archs), ARCHS, [])
    if strategies:
        strategies = _choices(exp.path, "strategies", list(strategies), STRATEGIES, [])
    archs = archs or exp.archs
    strategies = strategies or exp.strategies
    baseline = exp.baseline if baseline is None else baseline
    out = pathlib.Path(exp.output_dir)
    common_files = [_config_file(exp, f, "configs") for f in exp.configs]
    common_set = [s.replace("{output_dir}", exp.output_dir) for s in exp.set]
    overrides = [s.replace("{output_dir}", exp.output_dir) for s in overrides]

    runs = []
    for arch in archs:
        for strategy in strategies:
            per = exp.per_strategy.get(strategy, {})
            files = common_files + [_config_file(exp, f, f"per_strategy.{strategy}.configs")
                                    for f in per.get("configs", [])]
            name = f"{arch.lower()}_{strategy}"
            sets = [*common_set, *[s.replace("{output_dir}", exp.output_dir) for s in per.get("set", [])],
                    *overrides, f"model.arch={arch}", f"model.strategy={strategy}",
                    f"output_dir={out / 'runs' / name}"]
            runs.append(PlannedRun(name, "train", config_lib.load_config(files, sets)))
    if baseline:
        sets = [*common_set, *overrides, f"output_dir={out / 'runs' / BASELINE_NAME}"]
        runs.append(PlannedRun(BASELINE_NAME, "baseline", config_lib.load_config(common_files, sets)))
    if not runs:
        raise _err(exp.path, "the grid is empty (no archs x strategies and no baseline)")
    data_keys = {(r.cfg.data.data_dir, r.cfg.data.dataset_config) for r in runs}
    if len(data_keys) > 1:
        raise _err(exp.path, "all runs of an experiment must use the same data set (data.data_dir, "
                             f"data.dataset_config); the grid gives {sorted(data_keys)}")
    return runs


def ensure_dataset(exp: Experiment, cfg: Config, log: Callable[[str], None]) -> None:
    """Builds the data set if it is missing and the experiment says where from (``sample:`` or
    ``data.manual_dir``); otherwise fails before any training with how to build it."""
    from hcdtf import data

    builder = data.get_builder(cfg.data.data_dir, cfg.data.dataset_config)
    if builder.is_prepared():
        return
    manual_dir = cfg.data.manual_dir
    if exp.sample is not None:
        from hcdtf import synthetic

        sample = pathlib.Path(exp.output_dir) / "sample"
        if not (sample / "train_labels.csv").is_file():
            info = synthetic.write_sample(sample, n=exp.sample["n"], seed=exp.sample["seed"])
            log(f"sample: {info.n_train} labelled + {info.n_test} unlabelled synthetic patches in {sample}")
        manual_dir = str(sample)
    if not manual_dir:
        data.load_builder(cfg.data)  # raises DatasetNotBuiltError, which says how to build it
    log(f"building the {cfg.data.dataset}/{cfg.data.dataset_config} data set from {manual_dir} "
        f"into {cfg.data.data_dir}")
    builder = data.build_dataset(manual_dir, cfg.data.data_dir, cfg.data.dataset_config)
    splits = ", ".join(f"{k}: {v.num_examples}" for k, v in builder.info.splits.items())
    log(f"built {builder.info.full_name} ({splits})")


def _evaluation_current(run_dir: pathlib.Path, split: str) -> bool:
    """metrics.json and predictions.csv exist for ``split`` and are newer than the model."""
    metrics_path, preds = run_dir / "metrics.json", run_dir / "predictions.csv"
    model = run_dir / "model.keras" if (run_dir / "model.keras").is_file() else run_dir / "model.npz"
    if not (metrics_path.is_file() and preds.is_file() and model.is_file()):
        return False
    try:
        recorded = json.loads(metrics_path.read_text()).get("split")
    except json.JSONDecodeError:
        return False
    return recorded == split and metrics_path.stat().st_mtime >= model.stat().st_mtime


def _status(pr: PlannedRun, overwrite: bool) -> str:
    """'complete', 'resume', 'fresh' or 'changed' (a run of another config is in the way)."""
    from hcdtf import train

    try:
        return train.prepare_run_dir(pr.cfg, overwrite=False, kind=pr.kind)
    except train.RunDirError as e:
        if (pr.run_dir / "config.yaml").is_file():
            if overwrite:
                return "changed"
            raise train.RunDirError(
                f"run {pr.name}: {pr.run_dir} holds a run of another config than the experiment now "
                f"gives it; pass --overwrite to retrain the runs whose config changed (finished runs "
                f"whose config did not change are kept), or use another --output-dir"
            ) from None
        raise train.RunDirError(f"run {pr.name}: {e}") from None


def run(
    path: str | pathlib.Path,
    overrides=(),
    output_dir: str | None = None,
    archs=None,
    strategies=None,
    baseline: bool | None = None,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
) -> dict:
    """Runs (or continues) the experiment in ``path``; returns the summary also written to
    ``<output_dir>/experiment.json``.

    ``overwrite``: retrain the runs whose config changed since they were trained (their old
    artifacts are removed); unchanged finished runs are still skipped."""
    from hcdtf import baseline as baseline_lib
    from hcdtf import atomic, evaluate, report, train

    exp = load_experiment(path)
    if output_dir:
        exp.output_dir = str(output_dir)
    runs = plan(exp, overrides, archs=archs, strategies=strategies, baseline=baseline)
    # What actually runs: the file's grid as narrowed on the command line.
    exp.archs = list(dict.fromkeys(r.cfg.model.arch for r in runs if r.kind == "train"))
    exp.strategies = list(dict.fromkeys(r.cfg.model.strategy for r in runs if r.kind == "train"))
    exp.baseline = any(r.kind == "baseline" for r in runs)
    out = pathlib.Path(exp.output_dir)
    total = len(runs)
    log(f"experiment {exp.path} -> {out}: {total} run{'s' if total > 1 else ''} "
        f"({', '.join(r.name for r in runs)})")
    states = {r.name: _status(r, overwrite) for r in runs}  # refuses conflicts before any work
    ensure_dataset(exp, runs[0].cfg, log)
    out.mkdir(parents=True, exist_ok=True)
    resolved = {"file": str(exp.path), **exp.to_dict(), "command_line_set": list(overrides),
                "runs": [r.name for r in runs]}
    (out / "experiment.yaml").write_text(yaml.safe_dump(resolved, sort_keys=False))

    t_start = time.time()
    results: list[dict] = []
    for i, pr in enumerate(runs, 1):
        tag = f"[{i}/{total}] {pr.name}"
        t0 = time.time()
        state = states[pr.name]
        test_split = pr.cfg.data.test_split
        if state != "complete":
            what = {"fresh": "training", "resume": "resuming", "changed": "config changed, retraining"}[state]
            log(f"{tag}: {what} {pr.label} -> {pr.run_dir}")
            if pr.kind == "baseline":
                baseline_lib.run(pr.cfg, overwrite=state == "changed", log=log)
            else:
                train.train(pr.cfg, overwrite=state == "changed", log=log)
        if _evaluation_current(pr.run_dir, test_split):
            evaluated = "evaluation up to date"
        else:
            evaluate.evaluate_run(pr.run_dir, split=test_split, log=log)
            evaluated = "evaluated"
        m = json.loads((pr.run_dir / "metrics.json").read_text())
        seconds = round(time.time() - t0, 1)
        status = "skipped" if state == "complete" else "done"
        head = "already complete, skipped" if status == "skipped" else f"done in {seconds:.0f} s"
        log(f"{tag}: {head}; {evaluated}; {test_split} AUC {m['auc']:.4f} ({pr.run_dir})")
        results.append({"name": pr.name, "kind": pr.kind, "arch": pr.cfg.model.arch if pr.kind == "train"
                        else "LogisticRegression", "strategy": pr.cfg.model.strategy if pr.kind == "train"
                        else "baseline", "run_dir": str(pr.run_dir), "status": status,
                        "test_auc": m["auc"], "seconds": seconds})

    comparison = out / "comparison"
    n_bootstrap = exp.compare.get("n_bootstrap", runs[0].cfg.eval.n_bootstrap)
    seed = exp.compare.get("seed", runs[0].cfg.seed)
    report.compare([r.run_dir for r in runs], comparison, n_bootstrap=n_bootstrap, seed=seed)
    summary = {
        "experiment": str(exp.path),
        "output_dir": str(out),
        "runs": results,
        "report": str(comparison / "report.md"),
        "seconds": round(time.time() - t_start, 1),
    }
    atomic.write_json(out / "experiment.json", summary)
    done = sum(r["status"] == "done" for r in results)
    log(f"experiment done: {done} trained, {total - done} already complete; report: {summary['report']}")
    return summary
