"""Mutation check (`make mutants`, not part of CI): does the suite fail when a feature breaks?

Each mutant is one deliberate breakage of the code (a plausible bug: averaging 2 of the 8 TTA views,
an all-zero Grad-CAM map, the seed in the model key, ...). For each, the committed tree (``git
archive HEAD``; ``--worktree`` copies the working tree instead) is copied to a temporary directory,
the breakage is applied there by an exact text replacement, and only the tests that should catch it
are run there with the project's Python. A mutant is *killed* when those tests fail (pytest exit
code 1), *survives* when they pass, and is an *error* when its text is no longer in the code (the
code changed: update the mutant) or pytest could not run (exit code 2-5). At the end, the test that
killed each mutant is run on an unbroken copy (``control``), where it must pass, so a kill is the
breakage's doing and not a test that fails anyway.

    python tools/mutants.py                 # all mutants, a table at the end
    python tools/mutants.py tta-2-views     # only the named ones
    python tools/mutants.py --list          # names, files and tests

The list and the last result are in docs/development/mutants.md. Session fixtures (the tiny data
set, a one-epoch run, the export bundle) are made again in each copy, so a full pass takes a while
(about half an hour on 2 cores); tests run one process each (no xdist).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str
    what: str          # the breakage, in words
    path: str          # file, relative to the repository
    old: str           # exact text, found exactly once in the file
    new: str
    tests: tuple[str, ...]  # pytest arguments: files / node ids / -k expressions


T_INF = "tests/test_inference_checks.py"
T_RULES = "tests/test_training_rules.py"

MUTANTS = (
    Mutant("tta-2-views", "TTA averages 2 of the 8 dihedral views", "hcdtf/inference/scoring.py",
           "sum(scorer(dihedral(images, k)) for k in range(8)) / 8.0",
           "sum(scorer(dihedral(images, k)) for k in range(2)) / 2.0",
           (T_INF, "-k", "tta")),
    Mutant("tta-no-mirror", "the dihedral views 4-7 are not mirrored (rotations twice)", "hcdtf/inference/scoring.py",
           "return np.ascontiguousarray(x[:, :, ::-1] if k >= 4 else x)",
           "return np.ascontiguousarray(x)",
           (T_INF, "-k", "dihedral")),
    Mutant("evaluate-tta-ignored", "evaluate --tta scores without TTA", "hcdtf/evaluation/evaluate.py",
           "        if tta:\n            scorer = scoring.with_tta(scorer)",
           "        if False:\n            scorer = scoring.with_tta(scorer)",
           (T_INF, "-k", "evaluate_tta")),
    Mutant("youden-on-plain-scores", "evaluate --calibrate --threshold youden picks the threshold on the plain "
           "validation scores", "hcdtf/evaluation/evaluate.py",
           "        t, how = resolve_threshold(run, threshold, validation, made)",
           "        t, how = resolve_threshold(run, threshold)",
           (T_INF, "-k", "youden_with_calibrate")),
    Mutant("gradcam-zero", "Grad-CAM maps are all zero", "hcdtf/inference/explain.py",
           "heat = np.clip(cam.numpy(), 0.0, 1.0).astype(np.float32)",
           "heat = np.zeros_like(cam.numpy(), np.float32)",
           (T_INF, "-k", "grad_cam")),
    Mutant("gradcam-sign", "Grad-CAM weights the channels by minus the mean gradient", "hcdtf/inference/explain.py",
           "weights = tf.reduce_mean(grads, axis=(1, 2), keepdims=True)",
           "weights = -tf.reduce_mean(grads, axis=(1, 2), keepdims=True)",
           (T_INF, "-k", "grad_cam")),
    Mutant("repeats-seed-in-key", "the seed is part of the model key (seeds never grouped as repeats)",
           "hcdtf/evaluation/runinfo.py",
           "    return (info.kind, info.arch, info.transfer, info.trainable_from, info.weights_kind,\n"
           "            info.features)",
           "    return (info.kind, info.arch, info.transfer, info.trainable_from, info.weights_kind,\n"
           "            info.features, info.seed)",
           ("tests/test_report.py", "-k", "across_repeats")),
    Mutant("class-weights-1-over-count", "class weights 1/count instead of the balanced n/(2 count)",
           "hcdtf/training/train.py",
           "return {c: float(len(labels) / (2 * max(counts[c], 1))) for c in (0, 1)}",
           "return {c: float(1 / max(counts[c], 1)) for c in (0, 1)}",
           (T_RULES, "-k", "class_weights")),
    Mutant("class-weights-not-passed", "class weights computed but not passed to fit", "hcdtf/training/train.py",
           "class_weight=self.class_weight, verbose=0",
           "class_weight=None, verbose=0",
           (T_RULES, "-k", "reach_the_loss")),
    Mutant("best-epoch-last", "the best epoch is the last epoch that has a validation AUC", "hcdtf/training/train.py",
           "        if auc > best:\n            best, at = auc, int(row[\"epoch\"])",
           "        if auc == auc:\n            best, at = auc, int(row[\"epoch\"])",
           (T_RULES,)),
    Mutant("best-checkpoint-not-restored", "the final model keeps the last epoch's weights, not the best's",
           "hcdtf/training/train.py",
           "        model.load_weights(str(work.best_weights_path))",
           "        pass",
           (T_RULES, "-k", "argmax")),
    Mutant("early-stop-off-by-one", "early stopping waits one epoch too many", "hcdtf/training/train.py",
           "return int(history[-1][\"epoch\"]) - (at or 0) >= patience",
           "return int(history[-1][\"epoch\"]) - (at or 0) > patience",
           (T_RULES, "-k", "early")),
    Mutant("plateau-no-reset", "the plateau wait is not restarted after a reduction", "hcdtf/training/train.py",
           "            lr, wait = lr * factor, 0",
           "            lr = lr * factor",
           (T_RULES, "-k", "plateau")),
    Mutant("evaluate-threshold-fixed", "evaluate ignores --threshold (always 0.5)", "hcdtf/evaluation/evaluate.py",
           "threshold=t, n_bootstrap=cfg.eval.n_bootstrap",
           "threshold=0.5, n_bootstrap=cfg.eval.n_bootstrap",
           (T_INF, "-k", "youden")),
    Mutant("calibrate-on-test", "--calibrate fits the temperature on the evaluated split (a leak)",
           "hcdtf/evaluation/evaluate.py",
           "calibrated, info = calibration.calibrate(val_labels, val_scores, labels, scores)",
           "calibrated, info = calibration.calibrate(labels, scores, labels, scores)",
           (T_INF, "-k", "calibrate")),
    Mutant("metrics-strict-threshold", "an example is positive when score > threshold (not >=)",
           "hcdtf/evaluation/metrics.py",
           "    pred = s >= threshold",
           "    pred = s > threshold",
           ("tests/test_metrics.py", T_INF, "-k", "compute_metrics or youden")),
    Mutant("slide-read-level0-coords", "scale-1 slide reads forget the level's downsample (wrong place)",
           "hcdtf/slide/reader.py",
           "region = slide.read_region((int(round(lx * d)), int(round(ly * d))), plan.level, (lw, lh))",
           "region = slide.read_region((int(lx), int(ly)), plan.level, (lw, lh))",
           ("tests/test_slide_io.py", "-k", "resolution_matching")),
    Mutant("audit-line-fields", "the report's leak-audit line ignores the build's headline",
           "hcdtf/evaluation/report.py",
           'for key in ("headline", "summary", "text", "message"):',
           'for key in ("summary", "text", "message"):',
           ("tests/test_report.py", "-k", "leak_audit")),
    Mutant("int8-runs-float32", "--backend openvino-int8 on an export base directory picks the float32 IR",
           "hcdtf/inference/backends.py",
           "candidate = base / artifact_name(v, backend)",
           "candidate = base / artifact_name(v, backend.replace(\"-int8\", \"\"))",
           ("tests/test_predict_explain.py", "-k", "int8_predict_runs")),
    Mutant("int8-guard-no-margin", "the int8 guard ignores its AUC margin (only DeLong refuses)",
           "hcdtf/export/int8.py",
           'if test["diff"] > margin or worse:',
           'if worse:',
           ("tests/test_export.py", "-k", "guard_pure")),
    Mutant("export-dir-not-checked", "export does not check that --export-dir is writable",
           "hcdtf/export/bundle.py",
           "    if not os.access(export_dir, os.W_OK | os.X_OK):\n        raise ValueError(f\"--export-dir",
           "    if False:\n        raise ValueError(f\"--export-dir",
           ("tests/test_unwritable.py", "-k", "export")),
)


def copy_tree(dest: pathlib.Path, worktree: bool) -> None:
    """The repository's committed tree (or working tree) without .git, the venv and outputs."""
    if worktree:
        ignore = shutil.ignore_patterns(".git", ".venv", "outputs", "__pycache__", ".pytest_cache", "*.egg-info")
        shutil.copytree(REPO, dest, ignore=ignore)
        return
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", "HEAD"], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)


def run_tests(tree: pathlib.Path, tests: tuple[str, ...], timeout: int) -> tuple[int, float, str]:
    """pytest on ``tests`` in ``tree`` (its code first on sys.path); (exit code, seconds, tail)."""
    env = dict(os.environ, PYTHONPATH=str(tree), PYTHONDONTWRITEBYTECODE="1")
    cmd = [sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider", "-x", "-q", *tests]
    start = time.time()
    try:
        done = subprocess.run(cmd, cwd=tree, env=env, capture_output=True, text=True, timeout=timeout)
        code, out = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as e:
        code, out = -1, f"timed out after {timeout} s\n{(e.stdout or b'')[-2000:]!r}"
    return code, time.time() - start, out


def apply(tree: pathlib.Path, m: Mutant) -> str | None:
    """Applies ``m`` in ``tree``; the reason it cannot, or None."""
    path = tree / m.path
    if not path.is_file():
        return f"{m.path} not found"
    text = path.read_text()
    if text.count(m.old) != 1:
        return f"the text to break is in {m.path} {text.count(m.old)} times (expected once): update the mutant"
    path.write_text(text.replace(m.old, m.new))
    return None


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--worktree", action="store_true", help="copy the working tree, not HEAD")
    parser.add_argument("--timeout", type=int, default=1200, help="seconds per pytest run")
    parser.add_argument("--keep", action="store_true", help="keep the temporary copies")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    unknown = set(args.names) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"unknown mutant(s): {', '.join(sorted(unknown))}; --list shows them")
    if args.list:
        for m in chosen:
            print(f"{m.name:30} {m.path:26} {' '.join(m.tests)}\n{'':30} {m.what}")
        return 0

    root = pathlib.Path(tempfile.mkdtemp(prefix="hcdtf-mutants-"))
    rows = []
    try:
        source = root / "source"  # one snapshot: every mutant and the control start from the same code
        copy_tree(source, args.worktree)
        for m in chosen:
            tree = root / m.name
            shutil.copytree(source, tree)
            why = apply(tree, m)
            if why:
                rows.append([m, "ERROR", 0.0, why])
            else:
                code, secs, out = run_tests(tree, m.tests, args.timeout)
                status = {0: "SURVIVED", 1: "killed"}.get(code, "ERROR")
                failed = [line.split(" ")[1] for line in out.splitlines() if line.startswith("FAILED ")]
                rows.append([m, status, secs, failed[0] if failed else out.strip().splitlines()[-1][:100]])
            print(f"{m.name}: {rows[-1][1]} ({rows[-1][2]:.0f} s) {rows[-1][3]}", flush=True)
            if not args.keep:
                shutil.rmtree(tree, ignore_errors=True)
        # Control: the tests that failed for the mutants pass on the unbroken copy (one process), so
        # each kill is the breakage's doing, not a test that fails anyway.
        killers = list(dict.fromkeys(r[3] for r in rows if r[1] == "killed"))
        if killers:
            base = source
            env = dict(os.environ, PYTHONPATH=str(base), PYTHONDONTWRITEBYTECODE="1")
            cmd = [sys.executable, "-m", "pytest", "-p", "no:xdist", "-p", "no:cacheprovider", "-q", "-rf", *killers]
            done = subprocess.run(cmd, cwd=base, env=env, capture_output=True, text=True, timeout=args.timeout * 2)
            bad = {line.split(" ")[1] for line in (done.stdout + done.stderr).splitlines()
                   if line.startswith(("FAILED ", "ERROR "))}
            print(f"control: {len(killers)} killing tests on the unbroken code: exit {done.returncode}, "
                  f"{len(bad)} failing", flush=True)
            if done.returncode not in (0, 1):
                print((done.stdout + done.stderr)[-3000:])
            for r in rows:
                if r[1] == "killed" and (r[3] in bad or done.returncode not in (0, 1)):
                    r[1] = "ERROR (fails unbroken too)"
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    print("\n| mutant | breakage | result | s | first failing test |\n|---|---|---|---|---|")
    for m, status, secs, detail in rows:
        print(f"| {m.name} | {m.what} | {status} | {secs:.0f} | {detail} |")
    survived = [r for r in rows if r[1] != "killed"]
    print(f"\n{len(rows) - len(survived)} of {len(rows)} mutants killed")
    return 1 if survived else 0


if __name__ == "__main__":
    sys.exit(main())
