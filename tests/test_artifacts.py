"""Tests of hcdtf.atomic and hcdtf.evaluation.artifacts: atomic writers, the predictions file's one set of
rules (read and write alike), and an evaluation's files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from hcdtf.evaluation import artifacts as A
from hcdtf import atomic
from hcdtf.evaluation import metrics as M

from readonly import read_only_dir


def _synthetic(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    return labels, 1 / (1 + np.exp(-(rng.normal(size=n) + (labels - 0.5))))


# ------------------------------------------------------------------------------------------
# Atomic writing
# ------------------------------------------------------------------------------------------


def test_atomic_write_keeps_the_old_file_when_the_writer_dies(tmp_path: Path):
    path = tmp_path / "report.md"
    atomic.write_text(path, "old\n")
    with pytest.raises(RuntimeError, match="killed"):
        with atomic.atomic_open(path, "w") as f:
            f.write("half of the new conten")
            raise RuntimeError("killed")
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.md"]  # no temporary left


def test_atomic_write_json_strict_and_order(tmp_path: Path):
    data = {"b": np.float32(0.5), "a": [np.int64(3), float("nan")], "p": Path("x/y")}
    text = atomic.write_json(tmp_path / "s.json", data).read_text()
    assert json.loads(text) == {"a": [3, None], "b": 0.5, "p": "x/y"}
    assert text.index('"a"') < text.index('"b"') and text.endswith("}\n")
    kept = atomic.write_json(tmp_path / "k.json", {"z": 1, "a": 2}, sort_keys=False).read_text()
    assert kept.index('"z"') < kept.index('"a"')


def test_atomic_write_into_unwritable_directory_names_the_destination(tmp_path: Path):
    (tmp_path / "a_file").write_text("")
    with pytest.raises(NotADirectoryError, match=f"cannot write {tmp_path / 'a_file' / 'x.json'}"):
        atomic.write_json(tmp_path / "a_file" / "x.json", {})
    with read_only_dir(tmp_path / "ro") as ro:  # a read-only mount as root: no skip for CI
        # PermissionError as a user, "Read-only file system" (OSError) as root
        with pytest.raises(OSError, match=f"cannot write {ro / 'metrics.json'}: (Permission denied|Read-only)"):
            atomic.write_json(ro / "metrics.json", {"auc": 1.0})
        assert list(ro.iterdir()) == []  # no temporary left behind


def test_temporary_names_are_unique_and_hidden(tmp_path: Path):
    names = {atomic.temporary_name(tmp_path / "model.keras") for _ in range(50)}
    assert len(names) == 50
    for name in names:
        assert name.name.startswith(".model" + atomic.TMP_MARK) and name.suffix == ".keras"


# ------------------------------------------------------------------------------------------
# Predictions files
# ------------------------------------------------------------------------------------------


def test_write_eval_artifacts_and_read_back(tmp_path: Path):
    labels, scores = _synthetic(300, seed=2)
    ids = np.array([f"patch_{i:04d}".encode() for i in range(300)])  # bytes, as TFDS yields them
    metrics = M.compute_metrics(labels, scores, n_bootstrap=100)
    metrics["split"] = "test"
    paths = A.write_eval_artifacts(tmp_path / "run", ids, labels, scores, metrics, prefix="test_")
    assert set(paths) == {"predictions", "metrics", "roc", "pr", "reliability", "confusion_matrix"}
    for key, path in paths.items():
        assert path.is_file() and path.stat().st_size > 0, key
        assert path.name.startswith("test_")
    for key in ("roc", "pr", "reliability", "confusion_matrix"):
        assert paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # metrics.json is written last: its presence means the other files are complete.
    assert paths["metrics"].stat().st_mtime_ns >= max(p.stat().st_mtime_ns for p in paths.values())
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(p.name for p in paths.values())
    text = paths["metrics"].read_text()
    assert json.loads(text) == json.loads(json.dumps(metrics))
    assert text.index('"accuracy"') < text.index('"auc"')  # sorted keys
    assert paths["predictions"].read_text().splitlines()[0] == "id,label,score"

    rid, rlab, rsc = A.read_predictions(paths["predictions"])
    assert rid.tolist() == [i.decode() for i in ids]
    np.testing.assert_array_equal(rlab, labels)
    np.testing.assert_array_equal(rsc, scores)  # repr() round-trips floats exactly


@pytest.mark.parametrize(
    "ids, labels, scores, message",
    [
        (["a", "a"], [0, 1], [0.2, 0.8], r"row 1 \(id 'a'\): id 'a' repeats .*row 0"),
        (["a", "b", "c"], [0, 1, 1], [0.2, 1.7, 2.0], r"row 1 .*score 1.7 is outside \[0, 1\].*\(1 more row like it\)"),
        (["a", "b"], [0, 1], [-0.1, 0.5], r"row 0 .*outside \[0, 1\]"),
        (["a", "b"], [0, 2], [0.1, 0.5], r"row 1 .*label must be 0 or 1, got 2"),
        (["a", "b"], [0, 1], [np.nan, 0.5], r"row 0 .*score nan is not finite"),
        (["a", "b"], [0, 1], [0.5], r"different lengths \(2, 2, 1\)"),
    ],
)
def test_write_predictions_applies_the_rules(tmp_path: Path, ids, labels, scores, message):
    path = tmp_path / "predictions.csv"
    with pytest.raises(ValueError, match=message) as info:
        A.write_predictions(path, ids, labels, scores)
    assert str(path) in str(info.value)
    assert not path.exists() and not list(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize(
    "content, message",
    [
        ("id,lab,score\na,1,0.5\n", "line 1: expected header 'id,label,score'"),
        ("", "empty file"),
        ("id,label,score\na,1,0.5\nb,yes,0.2\n", "line 3: label 'yes' is not a number"),
        ("id,label,score\na,1,0.5\nb,2,0.2\n", "line 3: label must be 0 or 1"),
        ("id,label,score\na,1,high\n", "line 2: score 'high' is not a number"),
        ("id,label,score\na,1,nan\n", "line 2: score nan is not finite"),
        ("id,label,score\na,1\n", "line 2: expected 3 fields"),
        # The rules that NaN already met now hold for every score: logits are refused too.
        ("id,label,score\na,1,0.5\n\nb,0,-2.3\nc,1,4.0\n", r"line 4: score -2.3 is outside \[0, 1\].*1 more row"),
        ("id,label,score\na,1,0.5\nb,0,0.1\na,0,0.2\n", "line 4: id 'a' repeats .*line 2"),
    ],
)
def test_read_predictions_errors(tmp_path: Path, content: str, message: str):
    path = tmp_path / "predictions.csv"
    path.write_text(content)
    with pytest.raises(ValueError, match=message) as info:
        A.read_predictions(path)
    assert str(path) in str(info.value)


def test_read_predictions_accepts_bom_blank_lines_and_edges(tmp_path: Path):
    path = tmp_path / "p.csv"
    path.write_text("\ufeffid,label,score\nx,0,0\n\ny,1,1.0\nz,1.0,0.25\n")
    ids, labels, scores = A.read_predictions(path)
    assert ids.tolist() == ["x", "y", "z"] and labels.tolist() == [0, 1, 1]
    assert scores.tolist() == [0.0, 1.0, 0.25]


def test_read_predictions_missing_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="predictions file not found: .*nope.csv"):
        A.read_predictions(tmp_path / "nope.csv")


def test_sigkill_inside_a_write_leaves_the_old_file(tmp_path: Path):
    """A writer killed mid-file (SIGKILL: no cleanup runs) leaves the old file whole and only a
    hidden temporary named like every other (``.<stem>.tmp-*``), which run recovery removes."""
    import signal
    import subprocess
    import sys

    path = tmp_path / "predictions.csv"
    atomic.write_text(path, "id,label,score\nold,1,0.5\n")
    code = (
        "import os, signal, sys\n"
        "from hcdtf.atomic import atomic_open\n"
        f"with atomic_open({str(path)!r}) as f:\n"
        "    f.write('id,label,score\\n' + 'new,1,0.5\\n' * 1000); f.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -signal.SIGKILL
    assert path.read_text() == "id,label,score\nold,1,0.5\n"
    (left,) = [p for p in tmp_path.iterdir() if p != path]
    assert left.name.startswith(".predictions" + atomic.TMP_MARK) and left.suffix == ".csv"
