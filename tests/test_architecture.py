"""The package's shape: no import cycles anywhere (imports inside functions included), every
import pointing down the layers below (or sideways within one package), the run directory below
everything that loads, scores, evaluates or trains, a short top level, TensorFlow's private API
in one place, and no TensorFlow at import time."""

from __future__ import annotations

import ast
import fnmatch
import pathlib
import subprocess
import sys

from conftest import REPO

from tools.import_graph import direct_imports, module_name

PACKAGES = ("hcdtf", "tfds_builder")


def _module_name(path: pathlib.Path) -> str:
    return module_name(path, REPO)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")
            if "dummy_data" not in p.parts and not p.name.endswith("_test.py")}


def _imports(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """Our modules that ``name`` imports, at any depth of its code, plus the packages that
    importing them initialises (a parent package's ``__init__`` runs first)."""
    found = direct_imports(name, path, known)
    ancestors = {".".join(name.split(".")[:i]) for i in range(1, name.count(".") + 1)}
    for t in list(found):  # importing a.b.c initialises a.b (and a) first
        parts = t.split(".")
        found.update(".".join(parts[:i]) for i in range(1, len(parts)) if ".".join(parts[:i]) in known)
    return found - ancestors - {name}


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycles_including_imports_inside_functions():
    modules = _modules()
    graph = {name: _imports(name, path, set(modules)) for name, path in modules.items()}
    assert len(graph) > 30
    cycle = _cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_the_cycle_finder_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_importing_the_package_and_the_cli_imports_no_tensorflow():
    code = ("import sys, hcdtf, hcdtf.cli, hcdtf.config, hcdtf.rundir, hcdtf.experiment; "
            "print('tensorflow' in sys.modules, 'keras' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "False"]


# ----------------------------------------------------------------------------- layers
# The house from the bottom up (DESIGN.md "A layout that shows the architecture"). A module
# belongs to the first layer with a pattern that matches its name. An import must point to a
# lower layer, or stay inside its own package (``hcdtf.<package>``: the cycle test above keeps
# that acyclic); the top-level modules are one package each. Layers are as fine as the real graph
# needs: e.g. each stage's TF-free vocabulary (the architectures, stain methods, baseline
# features) sits below config, which builds its choices from them, and the pure statistics of
# evaluation sit below export, whose int8 guard computes an AUC.
COMMANDS = "hcdtf.*.cli"  # every package's cli.py: its click commands (before any other pattern)
LAYERS = (
    ("base: imports nothing of ours", ("hcdtf.atomic", "hcdtf.compat", "hcdtf.workers", "tfds_builder*")),
    ("vocabularies", ("hcdtf.models", "hcdtf.models.registry", "hcdtf.models.weights", "hcdtf.models.logistic",
                      "hcdtf.models.stain_params", "hcdtf.models.encoders", "hcdtf.models.encoders.specs")),
    ("precision", ("hcdtf.precision",)),
    ("runtime", ("hcdtf.runtime",)),
    ("config", ("hcdtf.config", "hcdtf")),
    ("run directory", ("hcdtf.rundir",)),
    ("models", ("hcdtf.models.*",)),
    ("data, synthetic", ("hcdtf.data", "hcdtf.data.*", "hcdtf.synthetic*")),
    ("stain", ("hcdtf.stain", "hcdtf.stain.*")),
    ("statistics", ("hcdtf.evaluation", "hcdtf.evaluation.metrics", "hcdtf.evaluation.calibration",
                    "hcdtf.evaluation.repeats", "hcdtf.evaluation.plots")),
    ("export formats", ("hcdtf.export", "hcdtf.export.bundle", "hcdtf.export.int8", "hcdtf.export.runtimes",
                        "hcdtf.export.serving", "hcdtf.export.signatures")),
    ("inference", ("hcdtf.inference", "hcdtf.inference.*")),
    ("evaluation", ("hcdtf.evaluation.*",)),
    ("training, export of a run", ("hcdtf.training", "hcdtf.training.*", "hcdtf.export.fromrun")),
    ("slide", ("hcdtf.slide", "hcdtf.slide.*")),
    ("mil", ("hcdtf.mil", "hcdtf.mil.*")),
    ("experiment", ("hcdtf.experiment",)),
    ("quickstart", ("hcdtf.quickstart",)),
    ("command helpers", ("hcdtf.clitools",)),
    ("commands", (COMMANDS,)),
    ("the command line", ("hcdtf.cli",)),
)
# Inside the run directory nothing may load, score, evaluate or train (issue 22).
RUNDIR_MUST_NOT_IMPORT = ("hcdtf.inference", "hcdtf.evaluation", "hcdtf.training", "hcdtf.export",
                          "hcdtf.slide", "hcdtf.mil")
TOP_LEVEL_MAX = 11  # modules directly in hcdtf/ (not counting __init__.py); the rest live in packages
TF_PRIVATE_HOME = "hcdtf.runtime"  # the one module that may import tensorflow.python


def _layer(name: str) -> int:
    if fnmatch.fnmatchcase(name, COMMANDS):  # a package's commands sit above everything they run
        return [title for title, _ in LAYERS].index("commands")
    for i, (_, patterns) in enumerate(LAYERS):
        if any(fnmatch.fnmatchcase(name, p) for p in patterns):
            return i
    raise AssertionError(f"{name} is in no layer of tests/test_architecture.py LAYERS: add it where it belongs")


def _package(name: str) -> str:
    parts = name.split(".")
    return ".".join(parts[:2]) if parts[0] == "hcdtf" else parts[0]


def _upward_edges(graph: dict[str, set[str]]) -> list[str]:
    bad = []
    for a in sorted(graph):
        for b in sorted(graph[a]):
            if _package(a) != _package(b) and _layer(b) >= _layer(a):
                bad.append(f"{a} ({LAYERS[_layer(a)][0]}) imports {b} ({LAYERS[_layer(b)][0]})")
    return bad


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def test_every_import_points_down_the_layers_or_stays_in_its_package():
    bad = _upward_edges(_graph())
    assert not bad, "imports that point up or sideways into another package:\n  " + "\n  ".join(bad)


def test_the_layer_check_finds_an_upward_import():
    assert _upward_edges({"hcdtf.rundir": {"hcdtf.inference.scoring"}, "hcdtf.inference.scoring": set()}) == [
        "hcdtf.rundir (run directory) imports hcdtf.inference.scoring (inference)"]
    assert _upward_edges({"hcdtf.config": {"hcdtf.rundir"}, "hcdtf.rundir": set()})  # sideways, other package
    assert not _upward_edges({"hcdtf.models.registry": {"hcdtf.models.layers"}, "hcdtf.models.layers": set()})
    assert _layer("hcdtf.data.cli") == _layer("hcdtf.inference.cli") == len(LAYERS) - 2  # commands at the top


def test_the_run_directory_loads_scores_evaluates_and_trains_nothing():
    graph = _graph()
    below, todo = set(), ["hcdtf.rundir"]
    while todo:  # everything rundir imports, directly or through others
        for b in graph[todo.pop()] - below:
            below.add(b)
            todo.append(b)
    bad = sorted(b for b in below if b.startswith(RUNDIR_MUST_NOT_IMPORT))
    assert not bad, f"hcdtf.rundir imports (directly or not) {bad}"
    assert "hcdtf.rundir" in graph["hcdtf.inference.loading"]  # loading sits above it


def test_the_top_level_is_short():
    modules = sorted(p.name for p in (REPO / "hcdtf").glob("*.py") if p.name != "__init__.py")
    assert len(modules) <= TOP_LEVEL_MAX, f"{len(modules)} modules in hcdtf/ (at most {TOP_LEVEL_MAX}): {modules}"


# ----------------------------------------------------------------------------- TensorFlow's private API
def _tf_private_imports(path: pathlib.Path) -> list[str]:
    """``tensorflow.python`` imports in a file: import statements, and import_module/__import__
    calls with a literal name (at any depth)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names = [node.module or ""]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if called in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                names = [node.args[0].value]
        found += [f"{path}:{node.lineno} {n}" for n in names
                  if n == "tensorflow.python" or n.startswith("tensorflow.python.")]
    return found


def test_tensorflow_python_is_imported_in_one_documented_place(tmp_path):
    found = {name: _tf_private_imports(path) for name, path in _modules().items() if name.startswith("hcdtf")}
    elsewhere = [hit for name, hits in found.items() if name != TF_PRIVATE_HOME for hit in hits]
    assert not elsewhere, (f"tensorflow.python imported outside {TF_PRIVATE_HOME} (put it in its private-API "
                           f"section, with why and what breaks):\n  " + "\n  ".join(elsewhere))
    assert found[TF_PRIVATE_HOME], "the private-API section is gone: update TF_PRIVATE_HOME"
    probe = tmp_path / "probe.py"  # the grep finds each way of importing it
    probe.write_text("import importlib\nfrom tensorflow.python.framework import config\n"
                     "def f():\n    import tensorflow.python.util\n"
                     "    importlib.import_module('tensorflow.python.eager')\n    import tensorflowx\n")
    assert len(_tf_private_imports(probe)) == 3


def test_each_private_tensorflow_function_still_works():
    import tensorflow as tf

    from hcdtf import runtime

    assert isinstance(runtime._private("IsMklEnabled")(), bool)
    assert runtime.onednn_enabled() == runtime._private("IsMklEnabled")()
    enabled, disable = runtime._private("is_op_determinism_enabled"), runtime._private("disable_op_determinism")
    assert sorted(runtime.PRIVATE_TF_FUNCTIONS) == sorted(
        ["IsMklEnabled", "is_op_determinism_enabled", "disable_op_determinism"])
    was = enabled()
    try:
        tf.config.experimental.enable_op_determinism()
        assert enabled() is True and runtime.op_determinism_enabled()
        disable()
        assert enabled() is False and not runtime.op_determinism_enabled()
    finally:
        (tf.config.experimental.enable_op_determinism if was else disable)()


# ----------------------------------------------------------------------------- run-directory file names
# Only hcdtf/rundir.py spells the names of a run directory's files; everything else asks it
# (RunDir.summary_path, rundir.METRICS, ...). Not run directories of patch models, so not checked:
NAMES_ELSEWHERE = {
    "hcdtf/mil": "MIL run directories (hcdtf mil train): a layout of their own in mil/train.py",
    "hcdtf/export/bundle.py": "model.keras inside an export version's staging directory",
}


def _run_dir_names() -> set[str]:
    from hcdtf import rundir

    return {rundir.RUN_JSON, rundir.CONFIG, rundir.HISTORY, rundir.VAL_PREDICTIONS, rundir.SUMMARY,
            rundir.METRICS, rundir.PREDICTIONS, rundir.BEST_WEIGHTS, *rundir.MODEL_FILES.values(),
            *rundir.FIGURES.values()}


def _spelled_names(path: pathlib.Path, names: set[str]) -> list[str]:
    """String literals (f-string pieces included) that are exactly one of ``names``."""
    return [f"{path.relative_to(REPO)}:{node.lineno} {node.value!r}"
            for node in ast.walk(ast.parse(path.read_text(), str(path)))
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names]


def test_only_rundir_spells_the_run_directory_file_names():
    names = _run_dir_names()
    assert {"train_summary.json", "metrics.json", "predictions.csv", "config.yaml", "model.keras"} <= names
    found = []
    for path in sorted((REPO / "hcdtf").rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel != "hcdtf/rundir.py" and not any(rel.startswith(p) for p in NAMES_ELSEWHERE):
            found += _spelled_names(path, names)
    assert not found, "run-directory file names spelled outside hcdtf/rundir.py (use its constants):\n  " + \
        "\n  ".join(found)
    assert _spelled_names(REPO / "hcdtf" / "rundir.py", names)  # the check sees literals at all
