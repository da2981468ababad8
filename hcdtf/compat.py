"""Old names that keep working (moved modules for one release, with a DeprecationWarning; renamed
keys and flags with a notice): the one place that knows hcdtf 0.1's spellings.

Module paths: hcdtf 0.1 had its modules side by side in ``hcdtf/``; 0.2 puts them in packages
by stage (``data/``, ``training/``, ``evaluation/``, ``inference/``, ``stain/``). A script that
still says ``from hcdtf import metrics`` or ``import hcdtf.predict`` gets the moved module itself
(the same module object, so monkeypatching and ``isinstance`` behave) through an import hook
that `hcdtf/__init__.py` installs; it imports nothing until such a name is asked for.

The word 'strategy': hcdtf 0.1 used it for two concepts, the transfer strategy (freeze the base
or fine-tune) and the distribution strategy (one device, mirrored, multiworker); 0.2 names them
apart (``transfer``, ``distribution``). The old spellings, in YAML files and run configs
(:data:`CONFIG_KEYS`), experiment files (:data:`EXPERIMENT_KEYS`), command-line flags
(:data:`CLI_FLAGS`) and the ``train_summary.json`` of old run directories
(:func:`current_summary`), are listed here only; config, experiment, cli, rundir and the
comparison's run records ask this module.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

# hcdtf 0.1 module -> where it lives now
MOVED_MODULES = {
    "hcdtf.audit": "hcdtf.data.audit",
    "hcdtf.dataid": "hcdtf.data.identity",
    "hcdtf.train": "hcdtf.training.train",
    "hcdtf.distributed": "hcdtf.training.distributed",
    "hcdtf.baseline": "hcdtf.training.baseline",
    "hcdtf.metrics": "hcdtf.evaluation.metrics",
    "hcdtf.calibration": "hcdtf.evaluation.calibration",
    "hcdtf.repeats": "hcdtf.evaluation.repeats",
    "hcdtf.report": "hcdtf.evaluation.report",
    "hcdtf.report_markdown": "hcdtf.evaluation.report_markdown",
    "hcdtf.runinfo": "hcdtf.evaluation.runinfo",
    "hcdtf.artifacts": "hcdtf.evaluation.artifacts",
    "hcdtf.plots": "hcdtf.evaluation.plots",
    "hcdtf.evaluate": "hcdtf.evaluation.evaluate",
    "hcdtf.scoring": "hcdtf.inference.scoring",
    "hcdtf.backends": "hcdtf.inference.backends",
    "hcdtf.predict": "hcdtf.inference.predict",
    "hcdtf.explain": "hcdtf.inference.explain",
    "hcdtf.beam_predict": "hcdtf.inference.beam",
    "hcdtf.embed": "hcdtf.inference.embed",
    "hcdtf.encoders_cli": "hcdtf.inference.cli",
    "hcdtf.stain_cli": "hcdtf.stain.cli",
}
# hcdtf.data was a module and is now a package: its old names resolve in hcdtf.data.pipeline
# (hcdtf/data/__init__.py forwards them through `moved_attribute`).


def _deprecated(old: str, new: str) -> None:
    warnings.warn(f"{old} moved to {new} in hcdtf 0.2; the old name goes in the next release",
                  DeprecationWarning, stacklevel=3)


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Answers imports of hcdtf 0.1's module paths with the moved module."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED_MODULES:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = MOVED_MODULES[spec.name]
        _deprecated(spec.name, new)
        return importlib.import_module(new)

    def exec_module(self, module):  # the moved module has run already
        pass


_FINDER = _MovedModuleFinder()


def install_old_module_paths() -> None:
    """Let `import hcdtf.<old>` find the moved module (idempotent; no import happens here)."""
    if _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)  # after the real finders: only names they cannot find


def moved_attribute(package: str, module: str, name: str):
    """A package's module-level ``__getattr__`` for names that moved into ``module``."""
    if name.startswith("__"):
        raise AttributeError(name)
    target = importlib.import_module(module)
    if not hasattr(target, name):
        raise AttributeError(f"module {package!r} has no attribute {name!r}")
    _deprecated(f"{package}.{name}", f"{module}.{name}")
    return getattr(target, name)


# ----------------------------------------------------------------------------- 'strategy'
#: Run-config fields renamed since hcdtf 0.1 (dotted paths): old YAML files and the config.yaml
#: of old run directories keep loading (``hcdtf.config.merge``, with a one-line notice).
CONFIG_KEYS = {"model.strategy": "model.transfer", "train.strategy": "train.distribution"}

#: Experiment-file keys renamed since hcdtf 0.1 (``hcdtf.experiment``).
EXPERIMENT_KEYS = {"strategies": "transfers", "per_strategy": "per_transfer"}

#: Hidden command-line flags that keep hcdtf 0.1's spelling: (command, today's flag) -> old flag.
CLI_FLAGS = {("train", "--distribution"): "--strategy", ("experiment", "--transfer"): "--strategy"}

#: hcdtf 0.1's train_summary.json kept the transfer strategy under 'strategy' ('baseline' for the
#: logistic regression) and recorded no 'kind'.
_SUMMARY_TRANSFERS = ("fine_tune", "freeze_base")


def old_flag(command: str, flag: str) -> str:
    """The hidden old spelling of ``command``'s ``flag`` (a KeyError names a flag that has none)."""
    return CLI_FLAGS[(command, flag)]


def old_keys(new: str, renamed: dict[str, str] = CONFIG_KEYS) -> list[str]:
    """The old names of the field ``new`` (dotted), oldest spelling last."""
    return [old for old, current in renamed.items() if current == new]


def config_value(config: dict, dotted: str, default=None):
    """The value of the field ``dotted`` in a raw (unvalidated) config dict, under today's name or
    an old one: a report reads runs of any version without validating their config.yaml."""
    for name in [dotted, *old_keys(dotted)]:
        node = config
        for part in name.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        if node is not None:
            return node
    return default


def current_summary(summary: dict, baseline_model_file: str) -> dict:
    """A run's train_summary.json with today's keys (``transfer``, ``kind``), whatever hcdtf
    version wrote it; ``baseline_model_file`` is the baseline's model file name (a 0.1 summary
    names its model file, which is how it tells a baseline)."""
    s = dict(summary)
    if "transfer" not in s and s.get("strategy") in _SUMMARY_TRANSFERS:
        s["transfer"] = s["strategy"]
    if "kind" not in s:
        s["kind"] = "baseline" if s.get("strategy") == "baseline" or s.get("model") == baseline_model_file else "cnn"
    return s
