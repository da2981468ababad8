"""Synthetic slides through OpenSlide, resolution matching, the grid, tissue, annotations (no model)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import cli_fails
from hcdtf.slide import annotations as ann
from hcdtf.slide import grid as grid_lib
from hcdtf.slide import reader, synthetic, tissue

SIZE = (960, 768)  # rendered px: 10 x 8 tiles, 3840 x 3072 px at level 0


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    out = tmp_path_factory.mktemp("slides_io") / "slides"
    synthetic.write_slides(out, n=2, seed=0, size=SIZE, log=lambda *_: None)
    return out


def test_sample_slides_are_aperio_pyramids_with_mpp(slides):
    import openslide

    path = slides / "slide_000.svs"
    assert openslide.OpenSlide.detect_format(str(path)) == "aperio"
    with openslide.OpenSlide(str(path)) as s:
        assert s.level_count >= 3
        assert s.dimensions == (SIZE[0] * 4, SIZE[1] * 4)
        assert [round(d) for d in s.level_downsamples[:3]] == [1, 4, 16]
        assert float(s.properties["openslide.mpp-x"]) == pytest.approx(0.243)
        rendered, _ = synthetic.render(synthetic.plan_slides(2, seed=0, size=SIZE)[0])
        level1 = np.asarray(s.read_region((0, 0), 1, s.level_dimensions[1]))[..., :3]
        assert np.array_equal(level1, rendered)  # level 1 gives back the rendered pixels
    assert (slides / "reference.csv").read_text() == "name,class\nslide_000,Tumor\nslide_001,Normal\n"
    polygons = ann.read_asap(slides / "annotations" / "slide_000.xml")
    sizes_um = [np.ptp(p.points, axis=0).max() * 0.243 for p in polygons]
    assert min(sizes_um) < 200 < max(sizes_um)  # an ITC-sized region and a real metastasis
    assert not (slides / "annotations" / "slide_001.xml").exists()


def test_sample_slides_resume_and_cli(slides, tmp_path):
    before = {p.name: p.stat().st_mtime_ns for p in slides.iterdir() if p.is_file()}
    synthetic.write_slides(slides, n=2, seed=0, size=SIZE, log=lambda *_: None)  # nothing to do
    after = {p.name: p.stat().st_mtime_ns for p in slides.iterdir() if p.is_file()}
    assert {k: v for k, v in after.items() if k.endswith(".svs")} == {k: v for k, v in before.items() if k.endswith(".svs")}
    cli_fails(["sample-slides", str(tmp_path / "x"), "--n", "0"], "--n")


@pytest.mark.parametrize("out_mpp,level,scale", [(0.972, 1, 1.0), (0.486, 0, 2.0), (1.944, 1, 2.0), (0.2, 0, 0.2 / 0.243)])
def test_resolution_matching_reads_the_best_level_and_resizes_the_rest(slides, out_mpp, level, scale):
    rendered, _ = synthetic.render(synthetic.plan_slides(2, seed=0, size=SIZE)[0])
    with reader.open_slide(slides / "slide_000.svs") as s:
        plan = reader.plan_level(s, 0.243, out_mpp)
        assert (plan.level, plan.scale) == (level, pytest.approx(scale))
        x, y, w, h = 40, 24, 64, 48
        got = reader.read_resampled(s, plan, x, y, w, h)
        assert got.shape == (h, w, 3)
        if out_mpp == 0.972:  # level 1 read as is (the path of all slide inference) = rendered pixels
            assert np.array_equal(got, rendered[y:y + h, x:x + w])
            edge = reader.read_resampled(s, plan, SIZE[0] - 8, 0, 16, 4)  # past the right edge: white glass
            assert np.array_equal(edge[:, :8], rendered[:4, -8:]) and (edge[:, 8:] == 255).all()
        if out_mpp == 0.486:  # level 0 (rendered x4, nearest) shrunk 2x = rendered x2
            want = rendered.repeat(2, 0).repeat(2, 1)[y:y + h, x:x + w]
            assert np.array_equal(got, want)
        if out_mpp == 1.944:  # rendered shrunk 2x: 2x2 means
            want = rendered[2 * y:2 * (y + h), 2 * x:2 * (x + w)].reshape(h, 2, w, 2, 3).mean(axis=(1, 3))
            assert np.abs(got - want).max() <= 1.0


def test_grid_is_dense_and_each_patch_is_centred_on_its_cell(slides):
    with reader.open_slide(slides / "slide_000.svs") as s:
        plan = reader.plan_level(s, 0.243, 0.972)
        g = grid_lib.Grid.for_slide(*s.dimensions, plan.factor, stride=32, tile_cells=5)
        assert (g.rows, g.cols) == (math.ceil(SIZE[1] / 32), math.ceil(SIZE[0] / 32))
        i, j = g.order(np.ones((g.rows, g.cols), bool))
        assert len(set(zip(i.tolist(), j.tolist()))) == g.rows * g.cols  # every cell once
        for ti, tj in [(0, 0), (1, 2), ((g.rows - 1) // 5, (g.cols - 1) // 5)]:  # the last tile too
            pick = (i // 5 == ti) & (j // 5 == tj)
            region = reader.read_resampled(s, plan, *g.tile_region(ti, tj))
            patches = g.cut(region, ti, tj, i[pick], j[pick])
            for k in (0, -1):
                ci, cj = int(i[pick][k]), int(j[pick][k])
                direct = reader.read_resampled(s, plan, cj * 32 - 32, ci * 32 - 32, 96, 96)
                assert np.array_equal(patches[k], direct)
        x0, y0 = g.centres_level0(np.array([0, 2]), np.array([0, 3]))
        assert x0.tolist() == [64, 3 * 128 + 64] and y0.tolist() == [64, 2 * 128 + 64]


def test_tissue_mask_finds_the_islands_not_the_glass(slides):
    spec = synthetic.plan_slides(2, seed=0, size=SIZE)[1]
    with reader.open_slide(slides / "slide_001.svs") as s:
        plan = reader.plan_level(s, 0.243, 0.972 * 8)
        thumb = reader.read_downsampled(s, plan, SIZE[0] // 8, SIZE[1] // 8)
    mask, threshold = tissue.tissue_mask(thumb)
    truth = synthetic._tissue(spec, 0, 0, n=max(SIZE))[:SIZE[1], :SIZE[0]][4::8, 4::8]
    outside = (mask & ~truth).sum() / mask.sum()   # glass taken for tissue
    found = (mask & truth).sum() / truth.sum()      # tissue found (fat and empty spots in it are not)
    assert outside < 0.03 and found > 0.7, (outside, found)
    blank = np.full((50, 60, 3), 242, np.uint8)
    assert not tissue.tissue_mask(blank)[0].any()
    fractions = tissue.cell_fractions(mask, SIZE[1] // 32, SIZE[0] // 32, 4)
    assert fractions.shape == (SIZE[1] // 32, SIZE[0] // 32) and 0 < fractions.mean() < 1


# --------------------------------------------------------------------------- annotations
XML = """<?xml version="1.0"?>
<ASAP_Annotations><Annotations>
<Annotation Name="A" Type="Polygon" PartOfGroup="{group}"><Coordinates>{coords}</Coordinates></Annotation>
</Annotations></ASAP_Annotations>"""
SQUARE = ('<Coordinate Order="0" X="64" Y="64"/><Coordinate Order="1" X="640" Y="64"/>'
          '<Coordinate Order="2" X="640" Y="320"/><Coordinate Order="3" X="64" Y="320"/>')


def test_asap_round_trip_and_rasterize(tmp_path):
    p = tmp_path / "s.xml"
    p.write_text(XML.format(group="Tumor", coords=SQUARE))
    (poly,) = ann.read_asap(p)
    assert poly.tumour and poly.points.shape == (4, 2)
    hole = ann.Polygon("_2", np.array([[256.0, 128.0], [384.0, 128.0], [384.0, 256.0], [256.0, 256.0]]))
    ann.write_asap(tmp_path / "t.xml", [poly, hole])
    back = ann.read_asap(tmp_path / "t.xml")
    assert [b.group for b in back] == ["Tumor", "_2"] and np.allclose(back[1].points, hole.points)
    mask = ann.tumour_mask(tmp_path / "t.xml", 1024, 512, 32)
    assert mask.shape == (16, 32)
    assert mask[5, 5] and not mask[6, 10] and not mask[0, 0]  # inside, in the excluded hole, outside


@pytest.mark.parametrize("text,words", [
    (XML.format(group="_0", coords=SQUARE.split('<Coordinate Order="2"')[0]), ["2 coordinate", "'A'"]),
    (XML.format(group="_0", coords=SQUARE.replace('X="640"', 'X="six"', 1)), ["X and Y must be numbers"]),
    (XML.format(group="Stroma", coords=SQUARE), ["'Stroma'", "neither tumour"]),
    ("<ASAP_Annotations><Annotations>", ["not well-formed XML"]),
    ("<Other/>", ["not an ASAP annotation file"]),
])
def test_malformed_annotations_are_named(tmp_path, text, words):
    p = tmp_path / "bad.xml"
    p.write_text(text)
    with pytest.raises(ann.AnnotationError) as e:
        ann.read_asap(p)
    for w in [str(p), *words]:
        assert w in str(e.value)


def test_mask_tiff_reads_as_tumour(tmp_path):
    rendered = np.zeros((576, 768), np.uint8)
    rendered[100:180, 200:260] = 255
    synthetic.write_pyramid(tmp_path / "m_mask.tif", rendered, aperio=False)
    mask = ann.tumour_mask(tmp_path / "m_mask.tif", 3072, 2304, 32)
    want = np.zeros((72, 96), bool)
    want[100 * 4 // 32:(180 * 4 - 1) // 32 + 1, 200 * 4 // 32:(260 * 4 - 1) // 32 + 1] = True
    assert np.array_equal(mask, want)
    with pytest.raises(ann.AnnotationError, match="must cover its slide"):
        ann.tumour_mask(tmp_path / "m_mask.tif", 4096, 2304, 32)
