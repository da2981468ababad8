"""Unwritable output directories are one clear line (exit 2) for every command that writes, also
when the suite runs as root (CI does): the directory is a read-only mount then (tests/readonly.py),
since root ignores mode bits and a chmod-based case would be skipped."""

from __future__ import annotations

from conftest import cli_fails
from readonly import read_only_dir


def test_export_into_a_read_only_directory(trained_run, tmp_path):
    with read_only_dir(tmp_path / "ro") as ro:
        cli_fails(["export", str(trained_run), "--export-dir", str(ro / "hcd")], str(ro / "hcd"), "cannot be created")
        cli_fails(["export", str(trained_run), "--export-dir", str(ro)], "not writable", str(ro))
        assert list(ro.iterdir()) == []


def test_predict_into_a_read_only_directory(trained_run, sample_dir, tmp_path):
    with read_only_dir(tmp_path / "ro") as ro:
        images = str(sample_dir / "test")
        cli_fails(["predict", str(trained_run), "--images", images, "--out", str(ro / "sub.csv")],
                  "not writable", str(ro))
        cli_fails(["predict", str(trained_run), "--images", images, "--out", str(ro / "d" / "sub.csv")],
                  "cannot create", str(ro / "d"))
        assert list(ro.iterdir()) == []
