"""Ground truth of slides: ASAP XML annotations and binary mask TIFFs, as tumour masks.

ASAP XML (Camelyon16's format)::

    <ASAP_Annotations><Annotations>
      <Annotation Name="Annotation 0" Type="Polygon" PartOfGroup="_0" Color="#F4FA58">
        <Coordinates><Coordinate Order="0" X="1234.5" Y="678.9"/>...</Coordinates>
      </Annotation>
    </Annotations><AnnotationGroups>...</AnnotationGroups></ASAP_Annotations>

Coordinates are level-0 px. Groups ``_0``, ``_1`` and ``Tumor`` are tumour, ``_2`` and
``Exclusion`` are excluded from the tumour (holes in it); any other group is an error, as is a
polygon with fewer than three points or a coordinate that is not a number. ``Dot`` annotations
are points, not regions: :func:`read_asap` skips them and :func:`read_asap_detections` reads
those with a ``Probability`` attribute (the detections ``hcdtf slide annotations`` writes).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import xml.etree.ElementTree as ET

import numpy as np

TUMOUR_GROUPS = ("_0", "_1", "Tumor")
EXCLUDED_GROUPS = ("_2", "Exclusion")
POLYGON_TYPES = ("Polygon", "Spline", "Rectangle")
MASK_SUFFIXES = ("_mask.tif", "_mask.tiff", ".tif", ".tiff")


class AnnotationError(ValueError):
    """An annotation file is malformed or does not fit its slide; the message names it."""


@dataclasses.dataclass(frozen=True)
class Polygon:
    group: str
    points: np.ndarray  # float64 [n, 2]: level-0 (x, y)

    @property
    def tumour(self) -> bool:
        return self.group.lower() in {g.lower() for g in TUMOUR_GROUPS}


def _group_kind(path, name: str, group: str) -> None:
    known = {g.lower() for g in TUMOUR_GROUPS + EXCLUDED_GROUPS}
    if group.lower() not in known:
        raise AnnotationError(f"{path}: annotation {name!r} is in group {group!r}, which is neither tumour "
                              f"({', '.join(TUMOUR_GROUPS)}) nor excluded ({', '.join(EXCLUDED_GROUPS)})")


def _points(path, name: str, element) -> np.ndarray:
    coords = element.find("Coordinates")
    items = [] if coords is None else coords.findall("Coordinate")
    rows = []
    for k, c in enumerate(items):
        try:
            order = float(c.get("Order", k))
            x, y = float(c.get("X")), float(c.get("Y"))
        except (TypeError, ValueError):
            raise AnnotationError(f"{path}: annotation {name!r}, coordinate {k}: X and Y must be numbers, got "
                                  f"X={c.get('X')!r} Y={c.get('Y')!r}") from None
        if not (np.isfinite(x) and np.isfinite(y)):
            raise AnnotationError(f"{path}: annotation {name!r}, coordinate {k} is not finite ({x}, {y})")
        rows.append((order, x, y))
    if len(rows) < 3:
        raise AnnotationError(f"{path}: annotation {name!r} is not a polygon: it has {len(rows)} coordinate(s), "
                              "at least 3 are needed")
    rows.sort(key=lambda r: r[0])
    return np.array([(x, y) for _, x, y in rows], np.float64)


def read_asap(path: str | os.PathLike) -> list[Polygon]:
    """The polygons of an ASAP XML file (level-0 px), in file order."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise AnnotationError(f"{path}: not well-formed XML ({e})") from None
    except OSError as e:
        raise AnnotationError(f"{path}: cannot be read ({e})") from None
    if root.tag != "ASAP_Annotations":
        raise AnnotationError(f"{path}: not an ASAP annotation file (root element <{root.tag}>, expected "
                              "<ASAP_Annotations>)")
    out = []
    for k, a in enumerate(root.iter("Annotation")):
        name = a.get("Name", f"#{k}")
        kind = a.get("Type", "Polygon")
        if kind == "Dot":
            continue  # a point, not a region (read_asap_detections reads them)
        if kind not in POLYGON_TYPES:
            raise AnnotationError(f"{path}: annotation {name!r} has Type {kind!r}; only "
                                  f"{', '.join(POLYGON_TYPES)} outline a region")
        group = a.get("PartOfGroup", "")
        _group_kind(path, name, group)
        out.append(Polygon(group, _points(path, name, a)))
    return out


def read_asap_detections(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(probability, x, y) of the ``Dot`` annotations of an ASAP XML file that carry a
    ``Probability`` attribute, in file order: detections, as ``detections.csv`` holds them."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise AnnotationError(f"{path}: not well-formed XML ({e})") from None
    except OSError as e:
        raise AnnotationError(f"{path}: cannot be read ({e})") from None
    rows = []
    for k, a in enumerate(root.iter("Annotation")):
        if a.get("Type") != "Dot" or a.get("Probability") is None:
            continue
        name = a.get("Name", f"#{k}")
        c = a.find("Coordinates/Coordinate")
        try:
            p, x, y = float(a.get("Probability")), float(c.get("X")), float(c.get("Y"))
        except (AttributeError, TypeError, ValueError):
            raise AnnotationError(f"{path}: detection {name!r} needs a numeric Probability and one "
                                  "Coordinate with numeric X and Y") from None
        if not (0.0 <= p <= 1.0 and np.isfinite(x) and np.isfinite(y)):
            raise AnnotationError(f"{path}: detection {name!r}: probability must be in [0, 1] and X, Y finite")
        rows.append((p, x, y))
    a = np.array(rows, np.float64).reshape(-1, 3)
    return a[:, 0], a[:, 1], a[:, 2]


def write_asap(path: str | os.PathLike, polygons: list[Polygon]) -> None:
    """Writes ``polygons`` as an ASAP XML file (atomically)."""
    root = ET.Element("ASAP_Annotations")
    annotations = ET.SubElement(root, "Annotations")
    for k, p in enumerate(polygons):
        a = ET.SubElement(annotations, "Annotation", Name=f"Annotation {k}", Type="Polygon",
                          PartOfGroup=p.group, Color="#F4FA58" if p.tumour else "#64FE2E")
        coords = ET.SubElement(a, "Coordinates")
        for n, (x, y) in enumerate(p.points):
            ET.SubElement(coords, "Coordinate", Order=str(n), X=f"{x:.2f}", Y=f"{y:.2f}")
    groups = ET.SubElement(root, "AnnotationGroups")
    for g in sorted({p.group for p in polygons}):
        ET.SubElement(ET.SubElement(groups, "Group", Name=g, PartOfGroup="None", Color="#FF0000"), "Attributes")
    ET.indent(root)
    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    ET.ElementTree(root).write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, path)


def rasterize(polygons: list[Polygon], width: int, height: int, downsample: float) -> np.ndarray:
    """bool [height, width]: tumour polygons minus excluded ones, at ``downsample`` level-0 px per px."""
    from PIL import Image, ImageDraw

    tumour = Image.new("1", (width, height), 0)
    excluded = Image.new("1", (width, height), 0)
    for p in polygons:
        xy = [(float(x) / downsample, float(y) / downsample) for x, y in p.points]
        ImageDraw.Draw(tumour if p.tumour else excluded).polygon(xy, fill=1, outline=1)
    return np.asarray(tumour, bool) & ~np.asarray(excluded, bool)


def find_annotation(directory: pathlib.Path, slide_id: str) -> pathlib.Path | None:
    """``<id>.xml`` or a mask TIFF (``<id>_mask.tif``, ``<id>.tif``) of a slide in ``directory``."""
    for suffix in (".xml", *MASK_SUFFIXES):
        p = directory / f"{slide_id}{suffix}"
        if p.is_file():
            return p
    return None


def annotation_id(path: pathlib.Path) -> str | None:
    """The slide id an annotation file belongs to, or None if the name is not an annotation's."""
    name = path.name
    for suffix in (".xml", *MASK_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return None


def tumour_mask(path: pathlib.Path, width0: int, height0: int, downsample: float) -> np.ndarray:
    """bool [ceil(height0 / downsample), ceil(width0 / downsample)]: the slide's tumour from an
    ASAP XML or a binary mask TIFF (any non-zero pixel is tumour)."""
    import math

    w, h = math.ceil(width0 / downsample), math.ceil(height0 / downsample)
    if path.suffix.lower() == ".xml":
        polygons = read_asap(path)
        return rasterize(polygons, w, h, downsample)
    return _mask_tiff(path, width0, height0, downsample, w, h)


def _mask_tiff(path, width0, height0, downsample, w, h) -> np.ndarray:
    from hcdtf.slide import reader

    try:
        slide = reader.open_slide(path)
    except reader.SlideError as e:
        raise AnnotationError(str(e)) from None
    with slide:
        mw, mh = slide.dimensions
        if abs(mw - width0) > downsample or abs(mh - height0) > downsample:
            raise AnnotationError(f"{path}: the mask is {mw}x{mh} px but its slide is {width0}x{height0} px at "
                                  "level 0; a mask must cover its slide at level 0")
        plan = reader.plan_level(slide, 1.0, float(downsample))
        rgb = reader.read_downsampled(slide, plan, w, h, background=0)
    return rgb.max(axis=-1) > 0
