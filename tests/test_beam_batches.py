"""Issue 21, case 8: the Beam DirectRunner's submission is byte-identical to the local one for the
same --batch-size, batches of several patches included: both paths score the same batches (sorted
ids, fixed boundaries), since the last bits of a probability depend on the batch it was computed
in."""

from __future__ import annotations

from hcdtf.inference import beam as beam_predict, predict


def test_beam_submission_is_byte_identical_to_the_local_one_with_uneven_batches(trained_run, sample_dir, tmp_path):
    images = sample_dir / "test"  # 8 patches: batches of 3, 3 and 2
    files = beam_predict.list_patch_files(str(images))
    assert [len(chunk) for _, chunk in beam_predict.fixed_batches(files, 3)] == [3, 3, 2]
    local, beam = tmp_path / "local.csv", tmp_path / "beam" / "beam.csv"
    predict.predict(trained_run, images, local, batch_size=3, log=lambda *_: None)
    beam_predict.predict_beam(trained_run, str(images), str(beam), "DirectRunner", batch_size=3, log=lambda *_: None)
    assert beam.read_bytes() == local.read_bytes()
    assert len(local.read_text().splitlines()) == 9
    assert sorted(p.name for p in beam.parent.iterdir()) == ["beam.csv"]  # no temporary left
