"""Pathology encoders: import of published hub layouts equals the reference library.

The fixtures (tests/fixtures/encoders/, written by tools/make_encoder_fixtures.py with timm
1.0 / transformers 5 / torch 2.13 in a separate venv) are tiny randomly initialised models in
their publishers' hub layouts, three 96x96 patches, and the reference library's embeddings of
those patches (upsampled to 112 px bilinearly, normalised, float32). Here: import with
`hcdtf weights import`, embed with `hcdtf embed`, compare (relative error < 1e-5).
"""

import pathlib
import shutil

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from conftest import cli_fails as _cli_fails
from hcdtf.cli import main
from hcdtf.models.encoders import convert
from hcdtf.models.encoders import specs

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "encoders"
IMAGES = FIXTURES / "images"
# folder -> (published name whose layout it copies, what it covers)
FAMILIES = {
    "timm_hoptimus0": "H-optimus-0",  # timm, 4 registers w/o pos. emb., SwiGLU, layer scale, cls
    "timm_virchow2": "Virchow2",  # timm, SwiGLU from code, registers with pos. emb., cls + mean
    "timm_uni": "UNI",  # timm, GELU, no registers, patch 16
    "hf_midnight": "Midnight-12k",  # transformers Dinov2 (hub names), SwiGLU, cls + mean, pos. interp.
    "hf_hibou": "Hibou-B",  # transformers Dinov2WithRegisters (v5 names), antialiased pos. interp.
}
TOLERANCE = 1e-5


def relative_error(out, ref):
    return float(np.abs(out - ref).max() / np.abs(ref).max())


def run(args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def cli_fails(args, *words):
    return _cli_fails([str(a) for a in args], *words)


def read_embeddings(path):
    with h5py.File(path, "r") as f:
        assert f["features"].dtype == np.float32
        return f["features"][...], [s.decode() if isinstance(s, bytes) else s for s in f["ids"][...]]


@pytest.mark.parametrize("folder", sorted(FAMILIES))
def test_import_then_embed_equals_reference(folder, tmp_path):
    arch = FAMILIES[folder]
    encoder_file = tmp_path / f"{folder}.encoder.h5"
    out = run(["weights", "import", FIXTURES / folder, "--arch", arch, "--out", encoder_file])
    assert str(encoder_file) in out
    run(["embed", encoder_file, "--images", IMAGES, "--out", tmp_path / "e.h5", "--batch-size", 2])
    features, ids = read_embeddings(tmp_path / "e.h5")
    reference = np.load(FIXTURES / folder / "reference.npy")
    assert ids == sorted(p.stem for p in IMAGES.glob("*.png"))
    assert features.shape == reference.shape
    assert relative_error(features, reference) < TOLERANCE
    # a different encoder's weights would not pass: the comparison can fail
    other = np.load(FIXTURES / ("timm_uni" if folder != "timm_uni" else "hf_hibou") / "reference.npy")
    assert other.shape != reference.shape or relative_error(other, reference) > 1e-2


def test_bare_safetensors_with_arch(tmp_path):
    bare = tmp_path / "model.safetensors"
    shutil.copy(FIXTURES / "timm_uni" / "model.safetensors", bare)
    encoder_file = tmp_path / "uni.encoder.h5"
    run(["weights", "import", bare, "--arch", "UNI", "--out", encoder_file])
    config, weights = convert.read_checkpoint(FIXTURES / "timm_uni", "UNI")
    from hcdtf.models.encoders import files

    bare_config, bare_weights = files.read(encoder_file)
    assert bare_config == config
    assert sorted(bare_weights) == sorted(weights)
    assert all(np.array_equal(bare_weights[k], weights[k]) for k in weights)


def test_default_place_and_registry_name(tmp_path, monkeypatch):
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    cli_fails(["embed", "Hibou-B", "--images", IMAGES, "--out", tmp_path / "e.h5"],
              "Hibou-B", "hcdtf weights import", "histai/hibou-b")
    out = run(["weights", "import", FIXTURES / "hf_hibou", "--arch", "Hibou-B"])
    expected = tmp_path / "keras" / "models" / "hcdtf_hibou_b.encoder.h5"
    assert f"wrote {expected}" in out
    images = tmp_path / "images"  # mixed sizes: a 64x64 patch is resized inside the model too
    shutil.copytree(IMAGES, images)
    from PIL import Image

    Image.fromarray(np.full((64, 64, 3), 128, np.uint8)).save(images / "zz_small.png")
    run(["embed", "hibou-b", "--images", images, "--out", tmp_path / "e.h5"])
    features, ids = read_embeddings(tmp_path / "e.h5")
    assert ids[-1] == "zz_small" and features.shape == (4, 16)
    reference = np.load(FIXTURES / "hf_hibou" / "reference.npy")
    assert relative_error(features[:3], reference) < TOLERANCE
    assert np.isfinite(features[3]).all()


def test_user_errors_are_one_line(tmp_path):
    cli_fails(["weights", "import", FIXTURES / "timm_uni" / "model.safetensors"], "needs --arch")
    cli_fails(["weights", "import", FIXTURES / "timm_virchow2", "--arch", "UNI", "--out", tmp_path / "x.h5"],
              "swiglu MLP", "UNI has a gelu MLP")
    cli_fails(["weights", "import", FIXTURES / "hf_hibou"], "--out")  # no name, no default place
    cli_fails(["weights", "import", IMAGES, "--arch", "UNI"], "no model.safetensors")
    cli_fails(["embed", tmp_path / "missing.h5", "--images", IMAGES, "--out", tmp_path / "e.h5"],
              "missing.h5")
    cli_fails(["embed", FIXTURES / "timm_uni" / "config.json", "--images", tmp_path, "--out",
               tmp_path / "e.h5"], "--images")
    assert not (tmp_path / "e.h5").exists()


def test_gated_fetch_says_how_to_get_access(monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    cli_fails(["weights", "fetch", "UNI2-h"], "gated", "MahmoodLab/UNI2-h", "HF_TOKEN")


def test_registry_entries_and_cost():
    assert set(specs.ENCODERS) >= {"H-optimus-0", "Prov-GigaPath", "Midnight-12k", "Hibou-B", "Hibou-L",
                                   "Phikon-v2", "UNI", "UNI2-h", "Virchow2"}
    table = specs.format_encoders_table()
    for name in specs.ENCODERS:
        assert f"| {name} |" in table
    # parameters from the published shapes vs the publishers' own figures
    # (figure, half its last digit as the model card rounds it)
    published = {"H-optimus-0": (1.1e9, 0.05e9), "Prov-GigaPath": (1.13e9, 0.005e9),
                 "UNI": (303e6, 0.5e6), "UNI2-h": (681e6, 0.5e6), "Virchow2": (632e6, 0.5e6),
                 "Hibou-B": (86e6, 0.5e6), "Hibou-L": (304e6, 0.5e6)}
    for name, (params, rounding) in published.items():
        assert abs(specs.spec_cost(specs.get_encoder(name))[0] - params) <= rounding + 0.002 * params, name
    assert specs.get_encoder("virchow2").features == 2560
    # the guide shows the table `hcdtf models` prints, row for row
    guide = (pathlib.Path(__file__).parent.parent / "docs" / "guide" / "encoders.md").read_text()
    for row in table.split("\n\n")[0].splitlines():
        assert row in guide, f"docs/guide/encoders.md is out of step with format_encoders_table: {row}"
    # resolution: every entry says where its um/px comes from; the model cards that state one
    # resolution state 0.5 um/px (checked 2026-12-06)
    for s in specs.SPECS.values():
        assert s.mpp == 0.5 and s.mpp_note, s.name
    assert {s.name for s in specs.SPECS.values() if s.mpp_note.startswith("stated")} == {
        "H-optimus-0", "Prov-GigaPath", "UNI", "Phikon-v2"}


@pytest.mark.parametrize("folder", ["timm_virchow2", "hf_hibou"])
def test_analytic_params_match_the_keras_model(folder):
    from hcdtf.models.encoders.model import build_encoder
    from hcdtf.models.stats import count_params

    config, weights = convert.read_checkpoint(FIXTURES / folder, FAMILIES[folder])
    model = build_encoder(config, weights)
    base = model.get_layer("base")
    grid = config["image_size"] // config["patch_size"]
    params, _ = specs.vit_cost(config["dim"], config["depth"], config["mlp_hidden"], config["patch_size"],
                               grid * grid, 1 + config["registers"], config["mlp"])
    # keras-hub keeps the position embeddings twice (as trained and at the input grid), each
    # with a class-token row, which vit_cost counts as part of the class token
    total, _ = count_params(base)
    assert total - (1 + grid * grid) * config["dim"] - config["dim"] == params


def test_torch_bicubic_resampling_is_separable_and_exact_on_constants():
    pos = np.ones((25, 4), np.float32) * 3.0
    for antialias in (False, True):
        out = convert.resample_grid(pos, 8, antialias)
        assert out.shape == (64, 4) and np.allclose(out, 3.0, atol=1e-6)
    with pytest.raises(convert.ConversionError):
        convert.resample_grid(np.ones((24, 4)), 8)


def test_train_freeze_base_on_an_encoder(data_dir, tmp_path):
    """eva's linear probe end to end offline: tiny random H-optimus-0-layout weights, the
    synthetic sample, the testing config; the frozen encoder's embeddings are cached and only
    the head trains; `hcdtf embed RUN_DIR` in a fresh process embeds as the import did."""
    import json
    import subprocess
    import sys

    from conftest import CONFIGS

    encoder_file = tmp_path / "hoptimus0.encoder.h5"
    run(["weights", "import", FIXTURES / "timm_hoptimus0", "--arch", "H-optimus-0", "--out", encoder_file])
    out = run(["train", "--config", CONFIGS / "testing.yaml", "--data-dir", data_dir, "--arch", "H-optimus-0",
               "--freeze-base", "--weights", encoder_file, "--output-dir", tmp_path / "run"])
    assert "feature cache on" in out
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["arch"] == "H-optimus-0" and summary["transfer"] == "freeze_base" and summary["feature_cache"]
    # a fresh process (the encoder layers must be registered from the .keras file alone), the
    # run directory as MODEL: the frozen encoder's embeddings are still the reference's
    subprocess.run([sys.executable, "-m", "hcdtf.cli", "embed", str(tmp_path / "run"), "--images", str(IMAGES),
                    "--out", str(tmp_path / "run.h5")], check=True, timeout=300)
    features, ids = read_embeddings(tmp_path / "run.h5")
    reference = np.load(FIXTURES / "timm_hoptimus0" / "reference.npy")
    assert relative_error(features, reference) < TOLERANCE


def test_fine_tune_trains_the_encoder(data_dir, tmp_path):
    """--fine-tune on a transformers-layout SwiGLU encoder with the cls + mean embedding: the
    encoder's weights are trainable and change, so its embeddings leave the imported ones."""
    import json

    from conftest import CONFIGS
    from hcdtf.inference import loading

    encoder_file = tmp_path / "midnight.encoder.h5"
    run(["weights", "import", FIXTURES / "hf_midnight", "--arch", "Midnight-12k", "--out", encoder_file])
    run(["train", "--config", CONFIGS / "testing.yaml", "--data-dir", data_dir, "--arch", "Midnight-12k",
         "--fine-tune", "--weights", encoder_file, "--output-dir", tmp_path / "run"])
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["transfer"] == "fine_tune" and not summary["feature_cache"]
    assert summary["params_trainable"] > 1000  # the encoder, not only the 33 weights of the head
    import keras
    from PIL import Image

    model = loading.load_model(tmp_path / "run")
    pool = keras.Model(model.input, model.get_layer("head_pool").output)
    imgs = np.stack([np.asarray(Image.open(p)) for p in sorted(IMAGES.glob("*.png"))])
    reference = np.load(FIXTURES / "hf_midnight" / "reference.npy")
    assert relative_error(pool.predict(imgs, verbose=0), reference) > 1e-4


def test_flops_of_an_encoder_classifier():
    """The run summaries' cost figure counts the encoder: analytically, as for the registry."""
    from hcdtf.models.encoders.classifier import build_encoder_classifier
    from hcdtf.models.encoders.files import write
    from hcdtf.models.stats import flops_per_image

    config, weights = convert.read_checkpoint(FIXTURES / "timm_virchow2", "Virchow2")
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = write(pathlib.Path(tmp) / "v.encoder.h5", config, weights)
        model = build_encoder_classifier("Virchow2", weights=path)
    grid = config["image_size"] // config["patch_size"]
    _, encoder_flops = specs.vit_cost(config["dim"], config["depth"], config["mlp_hidden"], config["patch_size"],
                                      grid * grid, 1 + config["registers"], "swiglu")
    # the head: Dense(2 * dim -> 1)
    assert flops_per_image(model) == encoder_flops + 2 * 2 * config["dim"]
    # the count itself: 2 blocks of 69 tokens, width 16, SwiGLU 48 (24 after the gate)
    t, d = 1 + 4 + 64, 16
    block = 2 * t * (4 * d * d + d * 48 + 24 * d) + 4 * t * t * d
    assert encoder_flops == 2 * 64 * 3 * 14 * 14 * d + 2 * block


def test_metrics_report_evas_balanced_accuracy():
    from sklearn.metrics import balanced_accuracy_score

    from hcdtf.evaluation.metrics import compute_metrics

    rng = np.random.default_rng(0)
    labels = (rng.random(200) < 0.3).astype(int)  # unbalanced: accuracy and balanced accuracy differ
    scores = np.clip(0.35 * labels + rng.random(200) * 0.7, 0, 1)
    m = compute_metrics(labels, scores, threshold=0.5, n_bootstrap=0)
    assert m["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(labels, scores >= 0.5))
    assert abs(m["balanced_accuracy"] - m["accuracy"]) > 0.01


def test_slide_embed_reads_a_bare_encoder_file_at_its_resolution(tmp_path):
    """`hcdtf slide embed FILE.encoder.h5`: patches of the encoder's input size (the tiny Hibou-B
    fixture: 112 px) at its registry resolution (0.5 um/px). `--mpp 0.125` makes the synthetic
    slide's level 1 (downsample 4) exactly 0.5 um/px, so a bag row can be recomputed from that
    level read as is."""
    from hcdtf.models.encoders import files
    from hcdtf.models.encoders.model import build_encoder
    from hcdtf.slide import reader, synthetic
    from hcdtf.slide.embed import read_bag

    encoder_file = files.import_checkpoint(FIXTURES / "hf_hibou", "Hibou-B", tmp_path / "h.encoder.h5")
    slides = tmp_path / "slides"
    synthetic.write_slides(slides, n=1, seed=0, size=(384, 288), log=lambda *_: None)
    run(["slide", "embed", encoder_file, slides, "--output-dir", tmp_path / "bags", "--stride", 112,
         "--mpp", 0.125, "--batch-size", 8])
    bag = read_bag(tmp_path / "bags" / "slide_000.h5")
    f, coords, attrs = bag["features"], bag["coords"], bag["attrs"]
    assert attrs["model_mpp"] == 0.5 and "Hibou-B" in attrs["model_mpp_source"]
    assert attrs["patch_size"] == 112 and attrs["patch_level"] == 1 and f.shape == (len(coords), 16)
    assert attrs["grid"]["cell_level0"] == pytest.approx(448.0) and 0 < len(f)
    config, weights = files.read(encoder_file)
    model = build_encoder(config, weights)
    with reader.open_slide(slides / "slide_000.svs") as s:
        rows = range(len(f)) if len(f) <= 4 else (0, len(f) // 2, len(f) - 1)
        for k in rows:
            x, y = (int(v) for v in coords[k])
            patch = np.asarray(s.read_region((x, y), 1, (112, 112)))[..., :3]
            np.testing.assert_allclose(f[k], model(patch[None]).numpy()[0], rtol=1e-4, atol=1e-5)


def test_mixed_bfloat16_encoder_keeps_float32_ends():
    """`build_encoder(dtype="mixed_bfloat16")` (the benchmark's bf16 side): bfloat16 matmuls,
    float32 preprocessing and embedding, close to the float32 model but not equal to it."""
    from hcdtf.models.encoders.model import build_encoder

    config, weights = convert.read_checkpoint(FIXTURES / "timm_virchow2", "Virchow2")
    x = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    f32 = build_encoder(config, weights, input_shape=(96, 96, 3))(x).numpy()
    model = build_encoder(config, weights, input_shape=(96, 96, 3), dtype="mixed_bfloat16")
    bf16 = model(x).numpy()
    assert bf16.dtype == np.float32 and model.get_layer("base").dtype_policy.compute_dtype == "bfloat16"
    assert 1e-6 < relative_error(bf16, f32) < 5e-2
