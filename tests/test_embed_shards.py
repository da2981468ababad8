"""Shards of `hcdtf embed --runner` are never read stale: an in-process pass into the same OUT
removes them (they describe the OUT it replaced), and shards without their finished pass's
spec.json (a pass that failed or was killed) are refused by `read_shards`."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from test_embed_scale import encoder_and_images  # noqa: F401  (the tiny encoder and 7 patches)


def test_stale_or_unfinished_shards_are_not_read(encoder_and_images, tmp_path):  # noqa: F811
    from hcdtf.cli import main
    from hcdtf.inference import embed

    encoder, images = encoder_and_images
    out = tmp_path / "E.h5"
    args = ["embed", str(encoder), "--images", str(images), "--batch-size", "4", "--out", str(out)]
    beam = CliRunner().invoke(main, [*args, "--runner", "DirectRunner", "--num-shards", "5"])
    assert beam.exit_code == 0, beam.output
    assert "3 shards (--num-shards 5 capped" in beam.output  # 3 batches (sizes 96, 64, 96 px): not silently
    shards = tmp_path / "E.h5.shards"
    spec = json.loads((shards / "spec.json").read_text())
    assert sum(len(b["id"]) for b in embed.read_shards(shards)) == spec["n"] == 7

    # unfinished: the last thing a pass writes is spec.json; a lost or extra shard is caught too
    saved = (shards / "spec.json").read_text()
    (shards / "spec.json").unlink()
    with pytest.raises(ValueError, match="did not finish"):
        embed.read_shards(shards)
    (shards / "spec.json").write_text(saved)
    (shards / "embeddings-00001-of-00003.tfrecord").unlink()
    with pytest.raises(ValueError, match="not the ones spec.json lists"):
        embed.read_shards(shards)

    # an in-process pass into the same OUT replaces it: the old pass's shards go with it
    local = CliRunner().invoke(main, args)
    assert local.exit_code == 0, local.output
    assert not shards.exists() and "removed" in local.output and out.is_file()
