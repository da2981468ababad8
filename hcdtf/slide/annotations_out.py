"""A slide's findings in the formats slide viewers open: QuPath GeoJSON and ASAP XML.

Per slide of a ``slide predict`` folder, in level-0 px:

- **detections**: the rows of ``detections.csv`` (local maxima of the smoothed heat map), as
  points with their probability;
- **tumour regions**: the outlines of the smoothed heat map (the one detections come from, NaN
  glass counted as 0) at ``threshold`` (:data:`REGION_THRESHOLD`, 0.5 by default: the level at
  which the ``tumour_area`` slide score counts a cell as tumour), traced with
  ``skimage.measure.find_contours`` between cell centres (cell ``(i, j)``'s centre is level-0
  ``((j + 0.5) c, (i + 0.5) c)`` with ``c = cell_level0``). Every cell centre above the threshold
  lies inside a region and every other one outside it; tissue holes inside a region are its holes.
  A region's measurements are its area (um^2) and the highest smoothed probability inside it.

``annotations.geojson`` is a GeoJSON FeatureCollection as QuPath (0.4+) imports it: each feature
has ``properties.objectType`` "annotation", ``classification {"name": "Tumor"}`` and
``measurements`` (``probability`` for a point; ``max probability`` and ``area um^2`` for a
region); polygons are closed rings, outer ring counter-clockwise, holes clockwise (RFC 7946).
``annotations.xml`` is ASAP XML, the format ``slide evaluate`` reads
(:mod:`hcdtf.slide.annotations`): regions are Polygons of group ``Tumor``, their holes Polygons
of group ``Exclusion``, detections Dots of group ``Detections`` with a ``Probability`` attribute
(:func:`hcdtf.slide.annotations.read_asap_detections` reads them back). ASAP subtracts every
Exclusion polygon from every Tumor one, so a region that lies inside another region's hole is lost
in the XML (not in the GeoJSON); smoothed heat maps rarely have one.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import uuid
import xml.etree.ElementTree as ET

import numpy as np

REGION_THRESHOLD = 0.5
FORMATS = ("geojson", "asap")
FILES = {"geojson": "annotations.geojson", "asap": "annotations.xml"}
TUMOUR_CLASS = "Tumor"
DETECTION_GROUP = "Detections"
HOLE_GROUP = "Exclusion"
_COLOUR = [200, 0, 0]


@dataclasses.dataclass(frozen=True)
class Region:
    outer: np.ndarray          # float64 [n, 2] level-0 (x, y), closed (first == last), counter-clockwise
    holes: tuple[np.ndarray, ...]  # each closed, clockwise
    max_probability: float
    area_um2: float


def _signed_area(ring: np.ndarray) -> float:
    x, y = ring[:, 0], ring[:, 1]
    return 0.5 * float(np.sum(x[:-1] * y[1:] - x[1:] * y[:-1]))


def _closed(ring: np.ndarray) -> np.ndarray:
    return ring if np.array_equal(ring[0], ring[-1]) else np.vstack([ring, ring[:1]])


def tumour_regions(smoothed: np.ndarray, cell_level0: float, slide_mpp: float,
                   threshold: float = REGION_THRESHOLD) -> list[Region]:
    """The regions of ``smoothed`` [rows, cols] above ``threshold``, largest first."""
    from skimage import measure

    if not 0.0 < threshold < 1.0:
        raise ValueError(f"--threshold must be between 0 and 1 (exclusive), got {threshold}")
    values = np.where(np.isfinite(smoothed), smoothed, 0.0).astype(np.float64)
    if not (values > threshold).any():
        return []
    padded = np.pad(values, 1, constant_values=0.0)  # every contour closes inside the padding
    outers, holes = [], []
    for c in measure.find_contours(padded, threshold, fully_connected="high", positive_orientation="high"):
        # padded (row, col) -> level-0 (x, y) of the cell-centre lattice
        c = measure.approximate_polygon(c, tolerance=0)  # drops collinear points only: the same outline
        ring = _closed(np.stack([(c[:, 1] - 0.5) * cell_level0, (c[:, 0] - 0.5) * cell_level0], axis=1))
        if len(ring) < 4:
            continue
        # find_contours winds around high values one way and around holes the other; in (x, y) with
        # y down, its outer rings come out with a negative shoelace sum: flip them to RFC 7946's order
        # (counter-clockwise outer rings, clockwise holes, as written in numbers)
        (outers if _signed_area(ring) < 0 else holes).append(ring[::-1])
    from skimage.measure import points_in_poly

    owned: list[list[np.ndarray]] = [[] for _ in outers]
    areas = [abs(_signed_area(o)) for o in outers]
    for h in holes:
        probe = h[:1]
        inside = [k for k, o in enumerate(outers) if points_in_poly(probe, o)[0]]
        if inside:
            owned[min(inside, key=lambda k: areas[k])].append(h)
    rows, cols = smoothed.shape
    out = []
    for o, hs, area in zip(outers, owned, areas):
        j0, i0 = np.floor(o.min(axis=0) / cell_level0 - 0.5).astype(int)
        j1, i1 = np.ceil(o.max(axis=0) / cell_level0 - 0.5).astype(int)
        i = np.arange(max(i0, 0), min(i1, rows - 1) + 1)
        j = np.arange(max(j0, 0), min(j1, cols - 1) + 1)
        ii, jj = np.meshgrid(i, j, indexing="ij")
        centres = np.stack([(jj.ravel() + 0.5) * cell_level0, (ii.ravel() + 0.5) * cell_level0], axis=1)
        inside = points_in_poly(centres, o)
        for h in hs:
            inside &= ~points_in_poly(centres, h)
        v = values[ii.ravel()[inside], jj.ravel()[inside]]
        area_px = area - sum(abs(_signed_area(h)) for h in hs)
        out.append(Region(o, tuple(h[::-1] if _signed_area(h) > 0 else h for h in hs),
                          float(v.max()) if v.size else float(threshold), area_px * slide_mpp ** 2))
    return sorted(out, key=lambda r: -r.area_um2)


def region_mask(regions: list[Region], rows: int, cols: int, cell_level0: float) -> np.ndarray:
    """bool [rows, cols]: the cells whose centre lies inside a region (outside its holes)."""
    from skimage.measure import points_in_poly

    ii, jj = np.mgrid[0:rows, 0:cols]
    centres = np.stack([(jj.ravel() + 0.5) * cell_level0, (ii.ravel() + 0.5) * cell_level0], axis=1)
    mask = np.zeros(rows * cols, bool)
    for r in regions:
        inside = points_in_poly(centres, r.outer)
        for h in r.holes:
            inside &= ~points_in_poly(centres, h)
        mask |= inside
    return mask.reshape(rows, cols)


# --------------------------------------------------------------------------- documents
def _uuid(slide: str, kind: str, k: int) -> str:
    # QuPath reads a feature's id as a UUID: a stable one, so the same results give the same file
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"hcdtf:{slide}:{kind}:{k}"))


def _ring(ring: np.ndarray) -> list[list[float]]:
    return [[round(float(x), 2), round(float(y), 2)] for x, y in ring]


def geojson(slide: str, regions: list[Region], detections: tuple[np.ndarray, np.ndarray, np.ndarray],
            threshold: float = REGION_THRESHOLD) -> dict:
    """The QuPath GeoJSON FeatureCollection of a slide's regions and detections."""
    classification = {"name": TUMOUR_CLASS, "color": _COLOUR}
    features = []
    for k, r in enumerate(regions, 1):
        features.append({
            "type": "Feature", "id": _uuid(slide, "region", k),
            "geometry": {"type": "Polygon", "coordinates": [_ring(r.outer), *(_ring(h) for h in r.holes)]},
            "properties": {"objectType": "annotation", "name": f"tumour region {k} (p > {threshold:g})",
                           "classification": classification, "isLocked": False,
                           "measurements": {"max probability": round(r.max_probability, 6),
                                            "area um^2": round(r.area_um2, 1)}}})
    probs, xs, ys = detections
    for k, (p, x, y) in enumerate(zip(probs.tolist(), xs.tolist(), ys.tolist()), 1):
        features.append({
            "type": "Feature", "id": _uuid(slide, "detection", k),
            "geometry": {"type": "Point", "coordinates": [float(x), float(y)]},
            "properties": {"objectType": "annotation", "name": f"detection {k}: p={p:.3f}",
                           "classification": classification, "isLocked": False,
                           "measurements": {"probability": round(p, 6)}}})
    return {"type": "FeatureCollection", "features": features}


def asap_xml(regions: list[Region], detections: tuple[np.ndarray, np.ndarray, np.ndarray]) -> str:
    """ASAP XML of a slide's regions (Tumor, holes Exclusion) and detections (Dots with Probability)."""
    root = ET.Element("ASAP_Annotations")
    annotations = ET.SubElement(root, "Annotations")

    def add(name, kind, group, colour, points, **extra):
        a = ET.SubElement(annotations, "Annotation", Name=name, Type=kind, PartOfGroup=group, Color=colour, **extra)
        coords = ET.SubElement(a, "Coordinates")
        for n, (x, y) in enumerate(points):
            ET.SubElement(coords, "Coordinate", Order=str(n), X=f"{x:.2f}", Y=f"{y:.2f}")

    for k, r in enumerate(regions, 1):
        add(f"tumour region {k}", "Polygon", TUMOUR_CLASS, "#F4FA58", r.outer[:-1],
            Probability=f"{r.max_probability:.6f}")
        for m, h in enumerate(r.holes, 1):
            add(f"tumour region {k} hole {m}", "Polygon", HOLE_GROUP, "#64FE2E", h[:-1])
    probs, xs, ys = detections
    for k, (p, x, y) in enumerate(zip(probs.tolist(), xs.tolist(), ys.tolist()), 1):
        add(f"detection {k}: p={p:.3f}", "Dot", DETECTION_GROUP, "#FF0000", [(x, y)], Probability=f"{p:.6f}")
    groups = ET.SubElement(root, "AnnotationGroups")
    for name, colour in ((TUMOUR_CLASS, "#F4FA58"), (HOLE_GROUP, "#64FE2E"), (DETECTION_GROUP, "#FF0000")):
        ET.SubElement(ET.SubElement(groups, "Group", Name=name, PartOfGroup="None", Color=colour), "Attributes")
    ET.indent(root)
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# --------------------------------------------------------------------------- slides
def write_slide(folder: pathlib.Path, slide: str, smoothed: np.ndarray, detections, cell_level0: float,
                slide_mpp: float, threshold: float = REGION_THRESHOLD, formats=FORMATS,
                out: dict[str, pathlib.Path] | None = None) -> dict[str, pathlib.Path]:
    """Writes the slide's annotation files (atomically): ``folder/annotations.geojson|xml``, or the
    paths of ``out`` (format -> path). Returns format -> path written."""
    from hcdtf.atomic import write_text

    regions = tumour_regions(smoothed, cell_level0, slide_mpp, threshold)
    paths = out or {f: folder / FILES[f] for f in formats}
    for f, path in paths.items():
        if f == "geojson":
            write_text(path, json.dumps(geojson(slide, regions, detections, threshold), indent=1) + "\n")
        elif f == "asap":
            write_text(path, asap_xml(regions, detections))
        else:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {f!r}")
    return paths
