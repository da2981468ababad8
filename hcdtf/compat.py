"""Old names that keep working for one release, each with a DeprecationWarning: the one place
that knows hcdtf 0.1's spellings.

Module paths: hcdtf 0.1 had its modules side by side in ``hcdtf/``; 0.2 puts them in packages
by stage (``data/``, ``training/``, ``evaluation/``, ``inference/``, ``stain/``). A script that
still says ``from hcdtf import metrics`` or ``import hcdtf.predict`` gets the moved module itself
(the same module object, so monkeypatching and ``isinstance`` behave) through an import hook
that `hcdtf/__init__.py` installs; it imports nothing until such a name is asked for.
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
