"""`hcdtf slide predict|evaluate` end to end: outputs, kill -9 and resume, bad inputs, stale results."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from conftest import REPO, cli_fails
from hcdtf.cli import main
from hcdtf.slide import synthetic

SIZE = (576, 480)  # rendered px: 6 x 5 tiles; 18 x 15 cells at the model's resolution


@pytest.fixture(scope="module")
def small_slides(tmp_path_factory):
    out = tmp_path_factory.mktemp("slides_predict") / "slides"
    synthetic.write_slides(out, n=2, seed=0, size=SIZE, log=lambda *_: None)
    return out


def _tree(folder):
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in sorted(folder.rglob("*"))}


def _hcdtf(*args, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.Popen([sys.executable, "-m", "hcdtf.cli", *map(str, args)], env=env, cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _kill_when(proc, path, timeout=300):
    """SIGKILL ``proc`` as soon as ``path`` exists (it must still be running then)."""
    t = time.time()
    while not path.exists():
        assert proc.poll() is None, f"finished before {path} appeared:\n{proc.stdout.read()}"
        assert time.time() - t < timeout
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    out = proc.communicate()[0]
    assert proc.returncode == -signal.SIGKILL
    return out


def _same_outputs(a, b):
    for slide in ("slide_000", "slide_001"):
        for name in ("heatmap.npy", "detections.csv", "tissue_mask.png", "overlay.png"):
            assert (a / slide / name).read_bytes() == (b / slide / name).read_bytes(), (slide, name)
        sa, sb = (json.loads((x / slide / "slide_summary.json").read_text()) for x in (a, b))
        for s in (sa, sb):
            s.pop("timing")
        assert sa == sb
        assert not (b / slide / "progress.npz").exists()


def test_kill_and_resume_gives_the_uninterrupted_outputs(trained_run, small_slides, tmp_path):
    flags = ["--batch-size", "16", "--checkpoint-seconds", "0"]
    whole = tmp_path / "whole"  # the uninterrupted reference, in this process (a TensorFlow start less)
    result = CliRunner().invoke(main, ["slide", "predict", str(trained_run), str(small_slides), "--output-dir",
                                       str(whole), *flags])
    assert result.exit_code == 0, result.output
    killed = tmp_path / "killed"
    before = _tree(small_slides)
    # 1: killed inside the first slide, after its first checkpoint
    _kill_when(_hcdtf("slide", "predict", trained_run, small_slides, "--output-dir", killed, *flags),
               killed / "slide_000" / "progress.npz")
    assert not (killed / "slide_000" / "slide_summary.json").exists()
    # 2: resumes the first slide, killed inside the second
    out2 = _kill_when(_hcdtf("slide", "predict", trained_run, small_slides, "--output-dir", killed, *flags),
                      killed / "slide_001" / "progress.npz")
    assert "resuming at patch" in out2
    first = (killed / "slide_000" / "slide_summary.json").stat().st_mtime_ns
    # 3: the first slide is skipped, the second resumed
    p = _hcdtf("slide", "predict", trained_run, small_slides, "--output-dir", killed, *flags)
    out3 = p.communicate()[0]
    assert p.returncode == 0, out3
    assert "already done" in out3 and "resuming at patch" in out3
    assert (killed / "slide_000" / "slide_summary.json").stat().st_mtime_ns == first  # not scored twice
    for slide in ("slide_000", "slide_001"):
        timing = json.loads((killed / slide / "slide_summary.json").read_text())["timing"]
        total = json.loads((whole / slide / "slide_summary.json").read_text())["tissue"]["cells_scored"]
        assert 0 < timing["resumed_from_patch"] < total
        assert timing["resumed_from_patch"] + timing["patches_scored_now"] == total
    _same_outputs(whole, killed)
    assert _tree(small_slides) == before  # nothing written beside the slides


def test_outputs_and_layout(trained_run, small_slides, tmp_path):
    out = tmp_path / "pred"
    result = CliRunner().invoke(main, ["slide", "predict", str(trained_run), str(small_slides / "slide_000.svs"),
                                       "--output-dir", str(out), "--score", "p99"])
    assert result.exit_code == 0, result.output
    assert "1 scored, 0 already done, 0 failed" in result.output
    folder = out / "slide_000"
    summary = json.loads((folder / "slide_summary.json").read_text())
    heat = np.load(folder / "heatmap.npy")
    assert heat.shape == (summary["heatmap"]["rows"], summary["heatmap"]["cols"]) == (SIZE[1] // 32, SIZE[0] // 32)
    assert summary["heatmap"]["cell_level0"] == pytest.approx(128.0)
    assert summary["read"] == {"level": 1, "level_downsample": 4.0, "resize": 1.0}
    assert np.isfinite(heat).sum() == summary["tissue"]["cells_scored"] > 0
    assert 0 < summary["tissue"]["skipped_fraction"] < 1
    assert np.nanmin(heat) >= 0 and np.nanmax(heat) <= 1
    rows = [line.split(",") for line in (folder / "detections.csv").read_text().splitlines()]
    assert rows and all(len(r) == 3 for r in rows)
    probs = [float(r[0]) for r in rows]
    assert probs == sorted(probs, reverse=True)
    for _, x, y in rows:  # level-0 centres of cells that hold tissue
        i, j = int(y) // 128, int(x) // 128
        assert np.isfinite(heat[i, j]) and int(x) % 128 == 64
    assert summary["score_method"] == "p99" and summary["model_mpp"] == pytest.approx(0.972)
    csv_rows = (out / "slides.csv").read_text().splitlines()
    assert csv_rows[0].startswith("slide,status,score") and csv_rows[1].startswith("slide_000,done,")
    # new post-processing settings: detections again from the saved heat map, not a new scoring
    before = (folder / "heatmap.npy").stat().st_mtime_ns
    result = CliRunner().invoke(main, ["slide", "predict", str(trained_run), str(small_slides / "slide_000.svs"),
                                       "--output-dir", str(out), "--score", "max", "--sigma", "0"])
    assert result.exit_code == 0 and "detections and score again" in result.output, result.output
    assert (folder / "heatmap.npy").stat().st_mtime_ns == before
    assert json.loads((folder / "slide_summary.json").read_text())["score"] == pytest.approx(float(np.nanmax(heat)), abs=1e-6)
    # a finished slide with an output gone is scored again, not taken as finished
    (folder / "overlay.png").unlink()
    result = CliRunner().invoke(main, ["slide", "predict", str(trained_run), str(small_slides / "slide_000.svs"),
                                       "--output-dir", str(out), "--score", "max", "--sigma", "0"])
    assert result.exit_code == 0 and "some outputs are missing" in result.output, result.output
    assert (folder / "overlay.png").is_file() and np.array_equal(np.load(folder / "heatmap.npy"), heat, equal_nan=True)
    # other scoring settings: refused
    cli_fails(["slide", "predict", str(trained_run), str(small_slides / "slide_000.svs"), "--output-dir", str(out),
               "--stride", "48"], "another model or other settings", "stride", "--overwrite")


def _bad_slides(good, folder):
    """A folder with one good slide and each kind of bad one."""
    folder.mkdir()
    shutil.copy(good, folder / "good.svs")
    (folder / "notes.tif").write_text("not an image\n")
    data = good.read_bytes()
    (folder / "truncated.svs").write_bytes(data[: len(data) // 3])
    rendered, _ = synthetic.render(synthetic.plan_slides(1, seed=0, size=SIZE)[0])
    synthetic.write_pyramid(folder / "nompp.svs", rendered, mpp=None)
    synthetic.write_pyramid(folder / "blank.svs", np.full_like(rendered, 243))
    (folder / "readme.txt").write_text("not a slide suffix: ignored\n")


def test_bad_slides_are_named_and_the_others_finish(trained_run, small_slides, tmp_path):
    bad = tmp_path / "bad"
    _bad_slides(small_slides / "slide_000.svs", bad)
    before = _tree(bad)
    out = tmp_path / "pred"
    result = CliRunner().invoke(main, ["slide", "predict", str(trained_run), str(bad),
                                                       "--output-dir", str(out)])
    assert result.exit_code == 1, result.output
    text = result.output
    assert "Traceback" not in text
    assert "4 of 5 slide(s) failed" in result.stderr
    for name, words in [("notes.tif", "not a slide that OpenSlide can read"), ("nompp.svs", "--mpp"),
                        ("blank.svs", "no tissue found"), ("truncated.svs", "truncated.svs")]:
        line = next(line for line in result.stderr.splitlines() if name in line)
        assert words in line, line
    assert (out / "good" / "slide_summary.json").is_file()
    assert "good,done," in (out / "slides.csv").read_text()
    assert _tree(bad) == before  # nothing written beside the slides
    # the slide without MPP runs with --mpp
    result = CliRunner().invoke(main, ["slide", "predict", str(trained_run), str(bad / "nompp.svs"),
                                       "--output-dir", str(tmp_path / "mpp"), "--mpp", "0.243"])
    assert result.exit_code == 0, result.output


def test_user_errors_are_one_line(trained_run, small_slides, tmp_path):
    cli_fails(["slide", "predict", str(trained_run), str(tmp_path / "nothing"), "--output-dir", str(tmp_path / "o")],
              "does not exist")
    cli_fails(["slide", "predict", str(trained_run), str(small_slides), "--output-dir", str(small_slides / "out")],
              "inside the folder of the slide")
    cli_fails(["slide", "predict", str(tmp_path), str(small_slides), "--output-dir", str(tmp_path / "o")],
              "is not a model")
    cli_fails(["slide", "evaluate", str(tmp_path), "--annotations", str(small_slides / "annotations")],
              "no finished slide predictions")


def test_evaluate_reports_bad_annotations_by_name(trained_run, small_slides, tmp_path):
    out = tmp_path / "pred"
    result = CliRunner().invoke(main, ["slide", "predict", str(trained_run), str(small_slides), "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    annotations = tmp_path / "annotations"
    shutil.copytree(small_slides / "annotations", annotations)
    shutil.copy(annotations / "slide_000.xml", annotations / "slide_999.xml")  # a slide not predicted
    result = CliRunner().invoke(main, ["slide", "evaluate", str(out), "--annotations", str(annotations),
                                       "--reference", str(small_slides / "reference.csv"), "--n-bootstrap", "50"])
    assert result.exit_code == 0, result.output
    assert "slide_999.xml" in result.output and "no prediction" in result.output
    metrics = json.loads((out / "slide_metrics.json").read_text())
    assert metrics["slide_auc"]["n_tumour"] == 1 and metrics["slide_auc"]["n_normal"] == 1
    # The lesions the synthetic tumour slide was planned with (single-tile ones are ITCs; a slide
    # this small gets one lesion and no ITC).
    (planned,) = [spec for spec in synthetic.plan_slides(2, seed=0, size=SIZE) if spec.tumour]
    n_itc = sum(radius == 0 for _, _, radius in planned.lesions)
    assert metrics["froc"]["n_itc"] == n_itc
    assert metrics["froc"]["n_lesions"] == len(planned.lesions) - n_itc >= 1
    assert (out / "froc.png").is_file() and (out / "slide_roc.png").is_file()
    assert "FROC score" in (out / "slide_report.md").read_text()
    text = (annotations / "slide_000.xml").read_text().replace('PartOfGroup="_0"', 'PartOfGroup="Lymphocytes"', 1)
    (annotations / "slide_000.xml").write_text(text)
    result = CliRunner().invoke(main, ["slide", "evaluate", str(out), "--annotations", str(annotations),
                                       "--n-bootstrap", "0"])
    assert result.exit_code == 1, result.output
    assert "slide_000.xml" in result.output and "'Lymphocytes'" in result.output
    assert json.loads((out / "slide_metrics.json").read_text())["failed"]


def test_beam_direct_runner_writes_the_same_outputs(trained_run, small_slides, tmp_path):
    local, on_beam = tmp_path / "local", tmp_path / "beam"
    for out, extra in ((local, []), (on_beam, ["--runner", "DirectRunner"])):
        result = CliRunner().invoke(main, ["slide", "predict", str(trained_run), str(small_slides), "--output-dir",
                                           str(out), "--batch-size", "16", *extra])
        assert result.exit_code == 0, result.output
    _same_outputs(local, on_beam)
    rows = (on_beam / "slides.csv").read_text().splitlines()
    assert [r.split(",")[:2] for r in rows[1:]] == [["slide_000", "done"], ["slide_001", "done"]]
    cli_fails(["slide", "predict", str(trained_run), str(small_slides), "--output-dir", str(on_beam),
               "--pipeline-option=--x=1"], "--pipeline-option applies to Beam")


def test_demo_writes_slides_predicts_and_evaluates(trained_run, tmp_path):
    from hcdtf.slide import demo

    result = demo(trained_run, tmp_path / "demo", log=lambda *_: None, n=2, size=SIZE)
    assert (tmp_path / "demo" / "slides" / "slide_000.svs").is_file()
    assert pathlib.Path(result["report"]).is_file() and result["slide_auc"]["n_tumour"] == 1
    again = demo(trained_run, tmp_path / "demo", log=lambda *_: None, n=2, size=SIZE)  # resumes: nothing to do
    assert again["slides"] == result["slides"]


def test_progress_line_has_rate_and_eta():
    from hcdtf.slide.inference import _bar

    line = _bar(300, 1200, 30.0)
    assert line.startswith("[#####...............] 300/1200 patches") and "30 patches/s" in line
    assert line.endswith("ETA 00:00:30")


def test_tta_and_a_slide_read_with_resizing(trained_run, small_slides, tmp_path):
    slide = str(small_slides / "slide_001.svs")
    plain, tta = tmp_path / "plain", tmp_path / "tta"
    for out, extra in ((plain, []), (tta, ["--tta"])):
        result = CliRunner().invoke(main, ["slide", "predict", str(trained_run), slide, "--output-dir", str(out), *extra])
        assert result.exit_code == 0, result.output
    a, b = (np.load(o / "slide_001" / "heatmap.npy") for o in (plain, tta))
    assert np.array_equal(np.isfinite(a), np.isfinite(b)) and not np.allclose(a, b, equal_nan=True)
    cli_fails(["slide", "predict", str(trained_run), slide, "--output-dir", str(plain), "--tta"], "differs in: tta")
    # --mpp 0.486: the model's 0.972 um/px is level 0 shrunk 2x (no level is that fine but coarser)
    half = tmp_path / "half"
    result = CliRunner().invoke(main, ["slide", "predict", str(trained_run), slide, "--output-dir", str(half),
                                       "--mpp", "0.486"])
    assert result.exit_code == 0, result.output
    s = json.loads((half / "slide_001" / "slide_summary.json").read_text())
    assert s["read"] == {"level": 0, "level_downsample": 1.0, "resize": 2.0}
    assert (s["heatmap"]["rows"], s["heatmap"]["cols"]) == (SIZE[1] * 4 // 64, SIZE[0] * 4 // 64)
    assert s["slide_mpp_source"] == "--mpp" and s["heatmap"]["cell_level0"] == pytest.approx(64.0)
