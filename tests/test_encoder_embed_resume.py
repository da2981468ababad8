"""`hcdtf embed` killed mid-way resumes to the same bytes (the parts machinery of `hcdtf slide
embed`, `hcdtf.inference.parts`), and refuses parts of other images in one line."""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np

from conftest import REPO, cli_fails

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "encoders"


def _hcdtf(*args, kill_at=None):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    if kill_at:
        env["HCDTF_KILL_AT"] = kill_at
    return subprocess.run([sys.executable, "-m", "hcdtf.cli", *map(str, args)], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)


def test_killed_embedding_resumes_to_the_same_bytes(tmp_path):
    from PIL import Image

    from hcdtf.models.encoders import files

    encoder = files.import_checkpoint(FIXTURES / "hf_hibou", "Hibou-B", out=tmp_path / "hibou.encoder.h5")
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(9):
        Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(images / f"p{i:02d}.png")
    args = [encoder, "--images", images, "--batch-size", 2, "--checkpoint-seconds", 0]

    from click.testing import CliRunner

    from hcdtf.cli import main

    def in_process(*more):
        result = CliRunner().invoke(main, ["embed", *map(str, args), *map(str, more)])
        assert result.exit_code == 0, result.output
        return result.output

    in_process("--out", tmp_path / "straight.h5")
    out = tmp_path / "resumed.h5"
    killed = _hcdtf("embed", *args, "--out", out, kill_at="embed-part:3")
    assert killed.returncode == -9, killed.stdout + killed.stderr[-2000:]
    assert not out.exists() and (tmp_path / "resumed.h5.partial" / "key.json").is_file()
    done = _hcdtf("embed", *args, "--batch-size", 4, "--out", out)  # the saved batch size wins
    assert done.returncode == 0, done.stdout + done.stderr[-2000:]
    assert "resuming at patch 4 of 9 (batch size 2" in done.stdout, done.stdout
    assert out.read_bytes() == (tmp_path / "straight.h5").read_bytes()
    assert not (tmp_path / "resumed.h5.partial").exists()
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]  # the killed pass's temporary is gone

    # parts of other images are refused, not mixed in
    out2 = tmp_path / "other.h5"
    assert _hcdtf("embed", *args, "--out", out2, kill_at="embed-part:2").returncode == -9
    os.utime(images / "p08.png", ns=(1, 1))
    cli_fails(["embed", str(encoder), "--images", str(images), "--out", str(out2)],
              "other.h5.partial", "images_sha256", "--overwrite")
    assert "resuming" not in in_process("--out", out2, "--overwrite")
    assert out2.read_bytes() == (tmp_path / "straight.h5").read_bytes()  # same rows, same bytes
