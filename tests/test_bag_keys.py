"""What a bag of embeddings is keyed on: an encoder file's settings as well as its weights. A file
re-imported with the same weights but another mean/std (or embedding rule) makes other features,
so its bags must not pass for the old ones."""

import pathlib

from hcdtf.models.encoders import convert, files
from hcdtf.slide import embed

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "encoders"


def test_an_encoder_files_settings_are_part_of_its_fingerprint(tmp_path):
    config, weights = convert.read_checkpoint(FIXTURES / "timm_uni", "UNI")
    same = [embed.load_encoder(files.write(tmp_path / f"{n}.encoder.h5", config, weights)).fingerprint
            for n in ("a", "b")]
    assert same[0] == same[1]  # the file's name and place are not part of it
    other_mean = embed.load_encoder(files.write(tmp_path / "c.encoder.h5", {**config, "mean": [0.5, 0.5, 0.5]},
                                                weights)).fingerprint
    other_rule = embed.load_encoder(files.write(tmp_path / "d.encoder.h5", {**config, "embedding": "cls_mean"},
                                                weights)).fingerprint
    assert len({same[0], other_mean, other_rule}) == 3
