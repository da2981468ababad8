"""Issue 21, minor cases: `hcdtf audit` fails when its recomputation differs from the recorded
audit; `evaluate` finishes an `--overwrite` swap that a kill interrupted instead of calling the
run "not an hcdtf run directory"; an already-built data dir on a read-only file system is read,
not refused."""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess

from click.testing import CliRunner

from hcdtf.data import pipeline as data
from hcdtf.atomic import write_text
from hcdtf.cli import main
from hcdtf.rundir import RunDir

from conftest import cli_fails


def test_audit_exits_non_zero_when_the_stored_data_no_longer_match_its_record(data_dir, tmp_path):
    copy = tmp_path / "tfds"
    shutil.copytree(data_dir, copy)
    result = CliRunner().invoke(main, ["audit", str(copy)])
    assert result.exit_code == 0 and "matches the audit the build recorded" in result.output, result.output

    # The stored patches and the record disagree (as after files were replaced under the build).
    meta_path = data.built_version_dir(str(copy), "kaggle") / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["audit"]["examples_per_split"]["test"] += 1
    meta_path.write_text(json.dumps(meta))
    result = CliRunner().invoke(main, ["audit", str(copy)])
    assert result.exit_code == 1, result.output
    assert "differs from the one the build recorded (examples_per_split)" in result.stderr, result.stderr
    assert "Traceback" not in result.output + result.stderr
    # Another threshold is another audit: reported, not checked against the record.
    result = CliRunner().invoke(main, ["audit", str(copy), "--threshold", "6"])
    assert result.exit_code == 0 and "not checked against the audit" in result.output, result.output


def test_evaluate_finishes_an_interrupted_overwrite_swap(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    # What a kill inside RunDir.swap_in leaves: the old run's files deleted, the new run (here the
    # same trained run) still in .staging/ with its journal.
    shutil.copytree(trained_run, run / ".staging")
    write_text(run / ".staging" / ".swap.json", json.dumps({"phase": "delete"}))
    RunDir(run).clear()
    assert not (run / "config.yaml").exists()
    result = CliRunner().invoke(main, ["evaluate", str(run)])
    assert result.exit_code == 0, result.output
    assert "not an hcdtf run directory" not in result.output
    assert (run / "config.yaml").is_file() and (run / "metrics.json").is_file() and not (run / ".staging").exists()


@contextlib.contextmanager
def _read_only(path, monkeypatch):
    """``path`` read-only: a read-only bind mount onto itself where this process may mount (root),
    else an injected EROFS at the builder's write probe."""
    mounted = subprocess.run(["mount", "--bind", str(path), str(path)], capture_output=True).returncode == 0
    if mounted:
        mounted = subprocess.run(["mount", "-o", "remount,bind,ro", str(path)], capture_output=True).returncode == 0
        if not mounted:
            subprocess.run(["umount", str(path)], check=True)
    if not mounted:
        import errno
        import tempfile

        from tfds_builder.hcd import datadir  # the builder's write probe

        def refuse(*args, **kwargs):
            raise OSError(errno.EROFS, "Read-only file system")

        monkeypatch.setattr(datadir.tempfile, "mkstemp", refuse)
        assert tempfile.mkstemp is refuse
    try:
        yield mounted
    finally:
        if mounted:
            subprocess.run(["umount", str(path)], check=True)


def test_an_already_built_read_only_data_dir_is_read_not_refused(sample_dir, data_dir, tmp_path, monkeypatch):
    copy = tmp_path / "tfds"
    shutil.copytree(data_dir, copy)
    with _read_only(copy, monkeypatch) as mounted:
        if mounted:
            assert subprocess.run(["touch", str(copy / "probe")], capture_output=True).returncode != 0
        result = CliRunner().invoke(main, ["build-dataset", "--manual-dir", str(sample_dir), "--data-dir", str(copy)])
        assert result.exit_code == 0, result.output
        assert "already built from identical inputs" in result.output, result.output
        assert "test: 10" in result.output
        # Rebuilding needs to write: one line naming the data dir.
        cli_fails(["build-dataset", "--manual-dir", str(sample_dir), "--data-dir", str(copy), "--overwrite"],
                  str(copy), "cannot write there")
