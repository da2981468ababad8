"""`hcdtf slide view`: a local, read-only web viewer of slides with their heat maps and findings.

A standard-library ``ThreadingHTTPServer`` (127.0.0.1 by default) serves:

- ``/``: the slides (from ``--slides``, from the ``slide predict`` folder and its ``slides.csv``)
  with their status, score and detection count;
- ``/slide/<id>``: a deep-zoom view (OpenSlide's ``DeepZoomGenerator``, JPEG tiles of 254 px +
  1 px overlap, level-0 coordinates: ``limit_bounds`` is off) in OpenSeadragon, with the heat map
  as an image layer (opacity slider, colour bar), the tumour regions and detections of
  :mod:`hcdtf.slide.annotations_out` and, with ``--annotations``, the ground truth drawn on top;
  clicking a detection shows its probability;
- ``/dz/<id>.dzi`` and ``/dz/<id>_files/<level>/<col>_<row>.jpeg`` (tiles), ``/heat/<id>.png``
  (one pixel per heat-map cell, jet colours, transparent glass), ``/features/<id>.json``,
  ``/overview/<id>.png`` (the prediction's ``overlay.png``) and ``/static/...`` (the page's script
  and OpenSeadragon, vendored from the npm registry: no CDN).

It only reads. A URL never becomes a file path: slide ids and static files are looked up in
tables made from the given folders, and a path holding ``..``, a backslash or a doubled slash is
refused (403) before that. On loopback, a request whose ``Host`` is not a loopback name is refused
too (a page elsewhere cannot read the slides through DNS rebinding). A slide that is missing or
that OpenSlide cannot read is a message on its page (with the prediction's overview image when
there is one), not an error of the server.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import html
import io
import json
import pathlib
import threading
import urllib.parse
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import numpy as np

OPENSEADRAGON_VERSION = "6.1.1"
STATIC = pathlib.Path(__file__).parent / "static"
TILE_SIZE, OVERLAP, JPEG_QUALITY = 254, 1, 75  # openslide-python's deep-zoom example's choices
OPEN_SLIDES = 8  # slides kept open (least recently used closed first)
LOOPBACK = ("127.0.0.1", "localhost", "::1")
COLOURMAP = "jet"  # as overlay.png


class Refused(Exception):
    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------- what is there
@dataclasses.dataclass
class Entry:
    slide: str
    path: pathlib.Path | None          # the slide file in --slides, if there
    folder: pathlib.Path | None        # its prediction folder, if finished
    summary: dict | None
    row: dict | None                   # its slides.csv row, if any

    @property
    def status(self) -> str:
        if self.summary is not None:
            return "predicted"
        if self.row is not None and self.row.get("status") == "failed":
            return "failed"
        return "not predicted"


def _slide_files(slides_dir: pathlib.Path) -> dict[str, pathlib.Path]:
    from hcdtf.slide.reader import SLIDE_SUFFIXES

    return {f.stem: f for f in sorted(slides_dir.iterdir())
            if f.is_file() and f.suffix.lower() in SLIDE_SUFFIXES and not f.name.startswith(".")}


def catalogue(pred_dir: pathlib.Path, slides_dir: pathlib.Path) -> dict[str, Entry]:
    """slide id -> :class:`Entry`, for every slide in ``slides_dir`` or ``pred_dir``."""
    from hcdtf.slide.inference import SUMMARY

    files = _slide_files(slides_dir)
    summaries = {}
    for s in sorted(pred_dir.glob(f"*/{SUMMARY}")):
        try:
            summaries[s.parent.name] = json.loads(s.read_text())
        except (OSError, ValueError):
            continue  # being written, or broken: shown as not predicted
    rows = {}
    if (pred_dir / "slides.csv").is_file():
        try:
            with open(pred_dir / "slides.csv", newline="", encoding="utf-8") as f:
                rows = {r["slide"]: r for r in csv.DictReader(f) if r.get("slide")}
        except (OSError, ValueError, KeyError):
            rows = {}
    ids = sorted(set(files) | set(summaries) | set(rows))
    return {i: Entry(i, files.get(i), pred_dir / i if i in summaries else None, summaries.get(i), rows.get(i))
            for i in ids}


def _static_files() -> dict[str, pathlib.Path]:
    return {p.relative_to(STATIC).as_posix(): p for p in STATIC.rglob("*")
            if p.is_file() and p.suffix in (".js", ".css", ".png", ".txt")}


# --------------------------------------------------------------------------- the data
def heat_png(heat: np.ndarray) -> bytes:
    """RGBA PNG, one pixel per cell: jet colours of the probability, transparent where NaN."""
    import matplotlib
    from PIL import Image

    rgba = matplotlib.colormaps[COLOURMAP](np.nan_to_num(heat, nan=0.0).clip(0, 1), bytes=True)
    rgba[..., 3] = np.where(np.isfinite(heat), 255, 0)
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA").save(buf, format="PNG")
    return buf.getvalue()


def colour_stops(n: int = 11) -> list[str]:
    """CSS colours of the heat map's colour bar, probability 0 to 1."""
    import matplotlib

    cmap = matplotlib.colormaps[COLOURMAP]
    return ["#%02x%02x%02x" % tuple(int(255 * c) for c in cmap(k / (n - 1))[:3]) for k in range(n)]


def _rings(a: np.ndarray) -> list[list[float]]:
    return [[round(float(x), 1), round(float(y), 1)] for x, y in a]


def _truth(annotations_dir: pathlib.Path | None, slide: str, size0: tuple[int, int] | None) -> tuple[list, list]:
    """(ground-truth outlines, messages) of a slide from ``--annotations``."""
    from hcdtf.slide import annotations as ann

    if annotations_dir is None:
        return [], []
    path = ann.find_annotation(annotations_dir, slide)
    if path is None:
        return [], [f"no ground truth for {slide} in --annotations"]
    try:
        if path.suffix.lower() == ".xml":
            return [{"tumour": p.tumour, "rings": [_rings(p.points)]} for p in ann.read_asap(path)], []
        if size0 is None:
            return [], [f"{path.name}: a mask needs its slide's size (the slide is not readable)"]
        from skimage import measure

        ds = max(1, -(-max(size0) // 2048))  # a mask of at most 2,048 px a side
        mask = ann.tumour_mask(path, size0[0], size0[1], ds)
        out = []
        for c in measure.find_contours(np.pad(mask.astype(np.float32), 1), 0.5):
            c = measure.approximate_polygon(c, tolerance=0.5)
            out.append({"tumour": True, "rings": [_rings(np.stack([(c[:, 1] - 0.5) * ds, (c[:, 0] - 0.5) * ds], 1))]})
        return out, []
    except (ann.AnnotationError, OSError, ValueError) as e:
        return [], [f"ground truth not shown: {e}"]


def features(entry: Entry, annotations_dir: pathlib.Path | None, size0: tuple[int, int] | None) -> dict:
    """Detections, tumour regions and ground truth of a slide, in level-0 px, for the page."""
    from hcdtf.slide import annotations_out, heatmap
    from hcdtf.slide.evaluate import read_detections

    out: dict = {"detections": [], "regions": [], "truth": [], "messages": [],
                 "threshold": annotations_out.REGION_THRESHOLD}
    if entry.summary is not None:
        try:
            probs, xs, ys = read_detections(entry.folder / "detections.csv")
            out["detections"] = [{"x": x, "y": y, "p": p} for p, x, y in zip(probs.tolist(), xs.tolist(), ys.tolist())]
            heat = np.load(entry.folder / entry.summary["heatmap"]["file"])
            smoothed = heatmap.smooth(heat, entry.summary.get("post", {}).get("sigma", heatmap.DEFAULT_SIGMA))
            regions = annotations_out.tumour_regions(smoothed, entry.summary["heatmap"]["cell_level0"],
                                                     entry.summary["slide_mpp"])
            out["regions"] = [{"rings": [_rings(r.outer), *(_rings(h) for h in r.holes)], "p": r.max_probability,
                               "area_um2": round(r.area_um2, 1)} for r in regions]
        except (OSError, ValueError, KeyError) as e:
            out["messages"].append(f"findings not shown: {e}")
    truth, messages = _truth(annotations_dir, entry.slide, size0)
    out["truth"], out["messages"] = truth, out["messages"] + messages
    return out


# --------------------------------------------------------------------------- the server
class Viewer:
    """What the request handlers share: the folders, the open slides (LRU) and cached responses."""

    def __init__(self, pred_dir, slides_dir, annotations_dir=None):
        self.pred_dir = pathlib.Path(pred_dir)
        self.slides_dir = pathlib.Path(slides_dir)
        self.annotations_dir = pathlib.Path(annotations_dir) if annotations_dir else None
        for flag, d in (("PRED_DIR", self.pred_dir), ("--slides", self.slides_dir),
                        ("--annotations", self.annotations_dir)):
            if d is not None and not d.is_dir():
                raise FileNotFoundError(f"{flag} {str(d)!r} is not a directory")
        self.static = _static_files()
        self.lock = threading.Lock()
        self.open: collections.OrderedDict = collections.OrderedDict()  # id -> (OpenSlide, DeepZoomGenerator)
        self.cache: dict[tuple[str, str], bytes] = {}
        self.entries = catalogue(self.pred_dir, self.slides_dir)

    def refresh(self) -> dict[str, Entry]:
        entries = catalogue(self.pred_dir, self.slides_dir)
        with self.lock:
            self.entries = entries
            self.cache.clear()
        return entries

    def entry(self, slide: str) -> Entry:
        entry = self.entries.get(slide)
        if entry is None:
            raise Refused(HTTPStatus.NOT_FOUND, f"no slide {slide!r}")
        return entry

    def deepzoom(self, slide: str):
        """The slide's DeepZoomGenerator; a :class:`hcdtf.slide.reader.SlideError` if it cannot be read."""
        from openslide.deepzoom import DeepZoomGenerator

        from hcdtf.slide import reader

        with self.lock:
            if slide in self.open:
                self.open.move_to_end(slide)
                return self.open[slide][1]
        entry = self.entry(slide)
        if entry.path is None:
            raise reader.SlideError(f"the slide file of {slide} is not in --slides {self.slides_dir}")
        handle = reader.open_slide(entry.path)
        dz = DeepZoomGenerator(handle, tile_size=TILE_SIZE, overlap=OVERLAP, limit_bounds=False)
        with self.lock:
            if slide in self.open:  # another thread opened it meanwhile
                handle.close()
                return self.open[slide][1]
            self.open[slide] = (handle, dz)
            while len(self.open) > OPEN_SLIDES:
                self.open.popitem(last=False)[1][0].close()
        return dz

    def close(self) -> None:
        with self.lock:
            for handle, _ in self.open.values():
                handle.close()
            self.open.clear()

    def cached(self, key: tuple[str, str], make: Callable[[], bytes]) -> bytes:
        with self.lock:
            if key in self.cache:
                return self.cache[key]
        data = make()
        with self.lock:
            self.cache[key] = data
        return data

    def slide_state(self, slide: str) -> tuple[dict | None, str | None]:
        """(DZI geometry, None) or (None, why the slide cannot be shown)."""
        import openslide

        from hcdtf.slide import reader

        try:
            dz = self.deepzoom(slide)
        except (reader.SlideError, openslide.OpenSlideError, OSError) as e:
            return None, str(e)
        return {"width": dz.level_dimensions[-1][0], "height": dz.level_dimensions[-1][1]}, None


def _refuse_path(raw: str) -> str:
    """The decoded path of a request URL, or :class:`Refused` for one that tries to leave the tables."""
    path = urllib.parse.urlsplit(raw).path
    decoded = urllib.parse.unquote(path)
    if not decoded.startswith("/") or raw.startswith("//") or "\\" in decoded or "\0" in decoded:
        raise Refused(HTTPStatus.FORBIDDEN, "absolute or malformed path refused")
    parts = decoded.split("/")[1:]
    if any(p in ("..", ".") for p in parts) or "//" in decoded:
        raise Refused(HTTPStatus.FORBIDDEN, "relative path segments refused")
    return decoded


def _page(title: str, body: str, head: str = "") -> bytes:
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{html.escape(title)}</title>"
            f"<link rel=stylesheet href=/static/viewer.css>{head}</head><body>{body}</body></html>").encode()


def _fmt(v, digits=4) -> str:
    try:
        return f"{float(v):.{digits}f}"
    except (TypeError, ValueError):
        return ""


def index_page(viewer: Viewer) -> bytes:
    entries = viewer.refresh()
    rows = []
    for e in entries.values():
        s, r = e.summary or {}, e.row or {}
        state = "slide file missing" if e.path is None else ""
        note = r.get("error") if e.status == "failed" else state
        rows.append(
            f"<tr><td><a href=\"/slide/{urllib.parse.quote(e.slide)}\">{html.escape(e.slide)}</a></td>"
            f"<td class=status-{e.status.replace(' ', '-')}>{html.escape(e.status)}</td>"
            f"<td class=num>{_fmt(s.get('score'))}</td><td>{html.escape(str(s.get('score_method') or ''))}</td>"
            f"<td class=num>{s.get('n_detections', '')}</td>"
            f"<td class=num>{s.get('tissue', {}).get('cells_scored', '')}</td>"
            f"<td>{html.escape(note or '')}</td></tr>")
    body = (f"<h1>hcdtf slides</h1><p class=where>predictions {html.escape(str(viewer.pred_dir))}; slides "
            f"{html.escape(str(viewer.slides_dir))}</p><table id=slides><thead><tr><th>slide</th><th>status</th>"
            "<th>score</th><th>method</th><th>detections</th><th>patches</th><th>note</th></tr></thead><tbody>"
            + "".join(rows) + "</tbody></table>")
    if not rows:
        body += "<p class=message>No slides: --slides has no slide files and PRED_DIR no predictions.</p>"
    return _page("hcdtf slides", body)


def slide_page(viewer: Viewer, slide: str) -> bytes:
    entry = viewer.entry(slide)
    geometry, problem = viewer.slide_state(slide)
    s = entry.summary or {}
    quoted = urllib.parse.quote(slide)
    messages = [] if problem is None else [f"The slide cannot be shown: {problem}"]
    if entry.summary is None:
        messages.append("No finished prediction of this slide in PRED_DIR: no heat map or detections.")
    config = {"slide": slide, "features": f"/features/{quoted}.json", "dzi": None, "heat": None}
    if geometry is not None:
        config["dzi"] = f"/dz/{quoted}.dzi"
        config["size"] = [geometry["width"], geometry["height"]]
        if entry.summary is not None:
            h = entry.summary["heatmap"]
            config["heat"] = {"url": f"/heat/{quoted}.png", "width": h["cols"] * h["cell_level0"] / geometry["width"]}
    stops = colour_stops()
    bar = (f"<div id=colourbar><span>0</span><div class=bar style=\"background:linear-gradient(to right,"
           f"{','.join(stops)})\"></div><span>1</span><div class=label>P(tumour), heat map</div></div>")
    controls = ("<div id=controls><label>heat map <input id=heat-on type=checkbox checked></label>"
                "<label>opacity <input id=opacity type=range min=0 max=100 value=45></label>" + bar +
                "<label><input id=regions-on type=checkbox checked> regions</label>"
                "<label><input id=detections-on type=checkbox checked> detections</label>"
                "<label><input id=truth-on type=checkbox checked> ground truth</label>"
                "<span id=tile-state>loading</span></div>")
    headline = (f"{html.escape(s.get('score_method') or 'score')} {_fmt(s.get('score'))}, "
                f"{s.get('n_detections', 0)} detections" if entry.summary else html.escape(entry.status))
    body = (f"<header><a href=/>slides</a> / <b>{html.escape(slide)}</b> <span class=headline>{headline}</span>"
            "</header>" + "".join(f"<p class=message>{html.escape(m)}</p>" for m in messages))
    if geometry is not None:
        body += controls + "<div id=view></div><div id=popup hidden></div>"
    elif entry.folder is not None and (entry.folder / "overlay.png").is_file():
        body += f"<p>The prediction's overview:</p><img id=overview src=\"/overview/{quoted}.png\" alt=overview>"
    data = json.dumps(config).replace("</", "<\\/")
    body += f"<script id=hcdtf-config type=application/json>{data}</script>"
    if geometry is not None:
        body += ("<script src=/static/openseadragon/openseadragon.min.js></script>"
                 "<script src=/static/viewer.js></script>")
    return _page(f"{slide} - hcdtf", body)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a page asks for hundreds of tiles
    server_version = "hcdtf-slide-view"
    viewer: Viewer  # set on the subclass made by make_server

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self):  # noqa: N802 - http.server's naming
        self.do_GET()

    def do_GET(self):  # noqa: N802
        try:
            self._check_host()
            path = _refuse_path(self.path)
            body, content_type = self.route(path)
            self._send(HTTPStatus.OK, body, content_type)
        except Refused as e:
            self._send(e.status, f"{e.status.value} {e.status.phrase}: {e}\n".encode(), "text/plain; charset=utf-8")
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _check_host(self) -> None:
        """On loopback, a request must name a loopback host: a web page elsewhere that points a
        name of its own at 127.0.0.1 (DNS rebinding) gets nothing."""
        if self.server.server_address[0] not in ("127.0.0.1", "::1"):
            return
        host = urllib.parse.urlsplit("//" + (self.headers.get("Host") or "")).hostname or ""
        if host not in LOOPBACK:
            raise Refused(HTTPStatus.FORBIDDEN, f"host {host!r} refused: this server answers to 127.0.0.1/localhost")

    def route(self, path: str) -> tuple[bytes, str]:
        v = self.viewer
        if path == "/":
            return index_page(v), "text/html; charset=utf-8"
        head, _, rest = path[1:].partition("/")
        if head == "static" and rest in v.static:
            types = {".js": "text/javascript", ".css": "text/css", ".png": "image/png", ".txt": "text/plain"}
            return v.static[rest].read_bytes(), types[v.static[rest].suffix]
        if head == "slide" and rest:
            return slide_page(v, rest), "text/html; charset=utf-8"
        if head == "dz":
            return self.deepzoom(rest)
        if head == "heat" and rest.endswith(".png"):
            entry = v.entry(rest[:-4])
            if entry.summary is None:
                raise Refused(HTTPStatus.NOT_FOUND, f"no heat map of {entry.slide}")
            return v.cached(("heat", entry.slide), lambda: heat_png(
                np.load(entry.folder / entry.summary["heatmap"]["file"]))), "image/png"
        if head == "overview" and rest.endswith(".png"):
            entry = v.entry(rest[:-4])
            if entry.folder is None or not (entry.folder / "overlay.png").is_file():
                raise Refused(HTTPStatus.NOT_FOUND, f"no overview of {entry.slide}")
            return (entry.folder / "overlay.png").read_bytes(), "image/png"
        if head == "features" and rest.endswith(".json"):
            entry = v.entry(rest[:-5])
            geometry, _ = v.slide_state(entry.slide)
            size = None if geometry is None else (geometry["width"], geometry["height"])
            return v.cached(("features", entry.slide), lambda: json.dumps(
                features(entry, v.annotations_dir, size)).encode()), "application/json"
        raise Refused(HTTPStatus.NOT_FOUND, "not found")

    def deepzoom(self, rest: str) -> tuple[bytes, str]:
        v = self.viewer
        if rest.endswith(".dzi"):
            slide = rest[:-4]
            v.entry(slide)
            return self._dz(slide).get_dzi("jpeg").encode(), "application/xml"
        slide, sep, tile = rest.rpartition("_files/")
        level, _, name = tile.partition("/")
        col, _, row = name.removesuffix(".jpeg").partition("_")
        if not (sep and name.endswith(".jpeg") and level.isdigit() and col.isdigit() and row.isdigit()):
            raise Refused(HTTPStatus.NOT_FOUND, "not a tile address")
        v.entry(slide)
        dz = self._dz(slide)
        try:
            image = dz.get_tile(int(level), (int(col), int(row)))
        except ValueError:
            raise Refused(HTTPStatus.NOT_FOUND, "no such tile") from None
        buf = io.BytesIO()
        image.save(buf, "jpeg", quality=JPEG_QUALITY)
        return buf.getvalue(), "image/jpeg"

    def _dz(self, slide: str):
        import openslide

        from hcdtf.slide import reader

        try:
            return self.viewer.deepzoom(slide)
        except (reader.SlideError, openslide.OpenSlideError, OSError) as e:
            raise Refused(HTTPStatus.NOT_FOUND, str(e)) from None


def make_server(pred_dir, slides_dir, annotations_dir=None, host: str = "127.0.0.1", port: int = 8000):
    """The server (not yet serving); ``port`` 0 picks a free one (``server.server_address``)."""
    viewer = Viewer(pred_dir, slides_dir, annotations_dir)
    handler = type("BoundHandler", (Handler,), {"viewer": viewer})
    try:
        server = ThreadingHTTPServer((host, port), handler)
    except OSError as e:
        raise ValueError(f"--host {host} --port {port}: cannot listen there ({e.strerror or e}); "
                         "choose another --port") from None
    server.daemon_threads = True
    server.viewer = viewer
    return server


def serve(pred_dir, slides_dir, annotations_dir=None, host: str = "127.0.0.1", port: int = 8000,
          log: Callable[[str], None] = print) -> None:
    """Serves until interrupted (Ctrl-C)."""
    server = make_server(pred_dir, slides_dir, annotations_dir, host, port)
    h, p = server.server_address[:2]
    if host not in LOOPBACK:
        log(f"warning: serving on {host}, not loopback: anyone who can reach this machine can view these slides")
    url = f"http://{'[' + h + ']' if ':' in h else h}:{p}/"
    log(f"{len(server.viewer.entries)} slide(s); open {url} (Ctrl-C stops)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        server.viewer.close()
