"""Findings out for viewers (hcdtf.slide.annotations_out): tumour regions traced from heat maps,
QuPath GeoJSON and ASAP XML, read back through the reader `slide evaluate` uses."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from hcdtf.slide import annotations as ann
from hcdtf.slide import annotations_out as ao
from hcdtf.slide import heatmap


def _random_map(seed, shape=(40, 52)):
    rng = np.random.default_rng(seed)
    heat = rng.random(shape).astype(np.float32)
    heat[:4, :] = np.nan                       # glass at the top
    heat[20:24, 10:30] = np.nan                # and a hole of glass inside the tissue
    return heatmap.smooth(heat, 1.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("threshold", [0.45, 0.5, 0.55])
def test_regions_hold_exactly_the_cells_above_the_threshold(seed, threshold):
    smoothed = _random_map(seed)
    regions = ao.tumour_regions(smoothed, 128.0, 0.243, threshold)
    assert regions, "a random map has cells above the threshold"
    mask = ao.region_mask(regions, *smoothed.shape, 128.0)
    assert np.array_equal(mask, np.nan_to_num(smoothed, nan=0.0) > threshold)
    for r in regions:
        assert ao._signed_area(r.outer) > 0 and all(ao._signed_area(h) < 0 for h in r.holes)
        assert np.array_equal(r.outer[0], r.outer[-1])
        assert threshold < r.max_probability <= np.nanmax(smoothed)
    assert [r.area_um2 for r in regions] == sorted((r.area_um2 for r in regions), reverse=True)


def test_a_ring_of_tumour_has_its_hole_and_level0_coordinates():
    heat = np.zeros((12, 14), np.float32)
    heat[2:10, 3:11] = 0.9
    heat[5:7, 6:8] = 0.1                        # a 2x2 hole
    heat[4, 5] = 0.97
    cell, mpp = 100.0, 0.25
    (region,) = ao.tumour_regions(heat, cell, mpp)
    assert len(region.holes) == 1
    # level 0.5 is crossed between the border cells' centres (0.9) and their neighbours' (0), 5/9 of
    # the way from 0: columns 3..10, rows 2..9 of 100 px cells, centres at (j + 0.5) * 100
    xs, ys = region.outer[:, 0], region.outer[:, 1]
    step = 100 * 0.5 / 0.9
    assert xs.min() == pytest.approx(250 + step) and xs.max() == pytest.approx(1150 - step)
    assert ys.min() == pytest.approx(150 + step) and ys.max() == pytest.approx(1050 - step)
    assert region.max_probability == pytest.approx(0.97)
    assert region.area_um2 == pytest.approx((ao._signed_area(region.outer) + ao._signed_area(region.holes[0]))
                                            * mpp ** 2)
    assert ao.tumour_regions(np.full((5, 5), 0.2, np.float32), cell, mpp) == []
    with pytest.raises(ValueError, match="--threshold"):
        ao.tumour_regions(heat, cell, mpp, 1.0)


def _valid_geojson(doc):
    """The FeatureCollection structure (RFC 7946) and QuPath's properties; returns the features by kind."""
    assert doc["type"] == "FeatureCollection" and isinstance(doc["features"], list)
    kinds = {"Point": [], "Polygon": []}
    ids = set()
    for f in doc["features"]:
        assert f["type"] == "Feature" and set(f) == {"type", "id", "geometry", "properties"}
        ids.add(f["id"])
        g, props = f["geometry"], f["properties"]
        assert props["objectType"] == "annotation" and props["classification"]["name"] == "Tumor"
        assert all(isinstance(v, (int, float)) and math.isfinite(v) for v in props["measurements"].values())
        if g["type"] == "Point":
            assert len(g["coordinates"]) == 2 and all(math.isfinite(c) for c in g["coordinates"])
            assert 0.0 <= props["measurements"]["probability"] <= 1.0
        else:
            assert g["type"] == "Polygon" and len(g["coordinates"]) >= 1
            for k, ring in enumerate(g["coordinates"]):
                assert len(ring) >= 4 and ring[0] == ring[-1]
                area = ao._signed_area(np.array(ring))
                assert area > 0 if k == 0 else area < 0  # outer ring counter-clockwise, holes clockwise
            assert set(props["measurements"]) == {"max probability", "area um^2"}
        kinds[g["type"]].append(f)
    assert len(ids) == len(doc["features"])
    return kinds


def test_geojson_and_asap_carry_the_same_regions_and_detections(tmp_path):
    smoothed = _random_map(3)
    i, j = heatmap.local_maxima(smoothed)
    cell = 131.69
    detections = (smoothed[i, j].astype(np.float64), np.floor((j + 0.5) * cell), np.floor((i + 0.5) * cell))
    paths = ao.write_slide(tmp_path, "s1", smoothed, detections, cell, 0.243)
    assert set(paths) == {"geojson", "asap"} and not list(tmp_path.glob(".*"))  # no temporary file left
    doc = json.loads(paths["geojson"].read_text())
    kinds = _valid_geojson(doc)
    regions = ao.tumour_regions(smoothed, cell, 0.243)
    assert len(kinds["Polygon"]) == len(regions) and len(kinds["Point"]) == len(i)
    probs = [f["properties"]["measurements"]["probability"] for f in kinds["Point"]]
    assert probs == [round(float(p), 6) for p in detections[0]]

    # ASAP: the reader slide evaluate uses sees the regions (Tumor) and their holes (Exclusion)
    polygons = ann.read_asap(paths["asap"])
    tumour = [p for p in polygons if p.tumour]
    assert len(tumour) == len(regions) and len(polygons) == len(regions) + sum(len(r.holes) for r in regions)
    for p, r in zip(tumour, regions):
        assert np.allclose(p.points, r.outer[:-1], atol=0.006)
    p, x, y = ann.read_asap_detections(paths["asap"])
    assert np.array_equal(p, np.round(detections[0], 6)) and np.array_equal(x, detections[1])
    assert np.array_equal(y, detections[2])
    # rasterised as ground truth is (slide evaluate's tumour mask), 8 px a cell, the regions cover the
    # centres of the cells above the threshold; a centre may fall either way only where an outline
    # passes within 1.5 px of it (PIL draws outlines into the polygon)
    rows, cols = smoothed.shape
    px = cell / 8
    mask = ann.rasterize(polygons, cols * 8, rows * 8, px)
    differ = np.argwhere(mask[4::8, 4::8] != (np.nan_to_num(smoothed, nan=0.0) > ao.REGION_THRESHOLD))
    edges = np.concatenate([np.stack([q.points, np.roll(q.points, -1, axis=0)], 1) for q in polygons])
    for i, j in differ:
        assert _distance((j + 0.5) * cell, (i + 0.5) * cell, edges) < 1.5 * px, (i, j)
    assert len(differ) < 0.02 * rows * cols


def _distance(x, y, edges):
    """Distance of (x, y) to the nearest of ``edges`` [n, 2 (ends), 2 (x, y)]."""
    a, b = edges[:, 0], edges[:, 1]
    d = b - a
    t = np.clip(((x - a[:, 0]) * d[:, 0] + (y - a[:, 1]) * d[:, 1]) / np.maximum((d ** 2).sum(1), 1e-12), 0, 1)
    return float(np.hypot(a[:, 0] + t * d[:, 0] - x, a[:, 1] + t * d[:, 1] - y).min())

def test_read_asap_detections_names_a_bad_dot(tmp_path):
    p = tmp_path / "d.xml"
    p.write_text('<ASAP_Annotations><Annotations><Annotation Name="d1" Type="Dot" PartOfGroup="Detections" '
                 'Probability="high"><Coordinates><Coordinate Order="0" X="1" Y="2"/></Coordinates></Annotation>'
                 '</Annotations></ASAP_Annotations>')
    with pytest.raises(ann.AnnotationError, match="'d1'.*numeric Probability"):
        ann.read_asap_detections(p)
    assert ann.read_asap(p) == []  # a Dot outlines no region
