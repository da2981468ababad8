"""`slide predict` writes QuPath/ASAP annotations; `slide annotations`; `slide view` served over
loopback, read by plain HTTP requests and by a real headless Chromium (Debian's package, driven by
Selenium with Debian's chromedriver)."""

from __future__ import annotations

import http.client
import io
import json
import os
import pathlib
import shutil
import socket
import threading
import time

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from conftest import cli_fails
from hcdtf.cli import main
from hcdtf.slide import annotations as ann
from hcdtf.slide import evaluate, synthetic, viewer
from test_slide_annotations_out import _valid_geojson

SIZE = (576, 480)  # rendered px: 2,304 x 1,920 px at level 0; with seed 0, slide_000 has a lesion, not only an ITC
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def predicted(trained_run, tmp_path_factory):
    """Two synthetic slides (slide_000 with tumour) and `hcdtf slide predict` of them."""
    root = tmp_path_factory.mktemp("slide_view")
    slides = root / "slides"
    synthetic.write_slides(slides, n=2, seed=0, size=SIZE, log=lambda *_: None)
    pred = root / "pred"
    result = CliRunner().invoke(main, ["slide", "predict", str(trained_run), str(slides), "--output-dir", str(pred)])
    assert result.exit_code == 0, result.output
    return {"slides": slides, "pred": pred, "annotations": slides / "annotations"}


def _tree(*folders):
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for f in folders for p in sorted(f.rglob("*"))}


# --------------------------------------------------------------------------- annotations out
def test_predict_writes_annotations_and_asap_round_trip_gives_the_same_froc(predicted, tmp_path):
    pred, gt = predicted["pred"], predicted["annotations"]
    for slide in ("slide_000", "slide_001"):
        folder = pred / slide
        probs, xs, ys = evaluate.read_detections(folder / "detections.csv")
        kinds = _valid_geojson(json.loads((folder / "annotations.geojson").read_text()))
        assert [f["geometry"]["coordinates"] for f in kinds["Point"]] == [[x, y] for x, y in zip(xs, ys)]
        p, x, y = ann.read_asap_detections(folder / "annotations.xml")
        assert np.array_equal(p, probs) and np.array_equal(x, xs) and np.array_equal(y, ys)

    # the FROC of the detections read back from the ASAP files is the FROC of detections.csv
    before = evaluate.evaluate_slides(pred, gt, predicted["slides"] / "reference.csv", tmp_path / "a", 20,
                                      log=lambda *_: None)
    copy = shutil.copytree(pred, tmp_path / "from_asap")
    for slide in ("slide_000", "slide_001"):
        p, x, y = ann.read_asap_detections(copy / slide / "annotations.xml")
        (copy / slide / "detections.csv").write_text("".join(f"{a:.6f},{b:g},{c:g}\n" for a, b, c in zip(p, x, y)))
    after = evaluate.evaluate_slides(copy, gt, predicted["slides"] / "reference.csv", tmp_path / "b", 20,
                                     log=lambda *_: None)
    assert before["froc"]["n_lesions"] > 0 and len(before["froc"]["curve"]["avg_fp"]) > 1
    assert after["froc"] == before["froc"] and after["slide_auc"]["auc"] == before["slide_auc"]["auc"]

    # `slide annotations` writes the same files for existing results, named for QuPath / evaluate
    out = tmp_path / "viewers"
    result = CliRunner().invoke(main, ["slide", "annotations", str(pred), "--output-dir", str(out)])
    assert result.exit_code == 0, result.output
    assert sorted(f.name for f in out.iterdir()) == ["slide_000.geojson", "slide_000.xml", "slide_001.geojson",
                                                     "slide_001.xml"]
    for slide in ("slide_000", "slide_001"):
        assert (out / f"{slide}.geojson").read_bytes() == (pred / slide / "annotations.geojson").read_bytes()
        assert (out / f"{slide}.xml").read_bytes() == (pred / slide / "annotations.xml").read_bytes()
    result = CliRunner().invoke(main, ["slide", "annotations", str(pred), "--format", "geojson", "--threshold", "0.3",
                                       "--output-dir", str(tmp_path / "low")])
    assert result.exit_code == 0 and sorted(f.suffix for f in (tmp_path / "low").iterdir()) == [".geojson"] * 2


def test_annotation_command_errors_are_one_line(tmp_path):
    cli_fails(["slide", "annotations", str(tmp_path)], str(tmp_path), "no finished slide predictions")
    cli_fails(["slide", "annotations", str(tmp_path / "nope")], "PRED_DIR", "is not a directory")
    cli_fails(["slide", "annotations", str(tmp_path), "--threshold", "1"], "--threshold")


# --------------------------------------------------------------------------- the server over HTTP
@pytest.fixture
def serve():
    servers = []

    def start(pred, slides, annotations=None):
        server = viewer.make_server(pred, slides, annotations, port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return server

    yield start
    for s in servers:
        s.shutdown()
        s.server_close()
        s.viewer.close()


@pytest.fixture(scope="module")
def server(predicted):
    """`slide view` of the predicted slides with their ground truth, on a free loopback port."""
    server = viewer.make_server(predicted["pred"], predicted["slides"], predicted["annotations"], port=0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()
    server.viewer.close()


def _get(server, path):
    """(status, headers, body) of GET ``path`` sent as is (http.client does not normalise it)."""
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    conn.request("GET", path)
    r = conn.getresponse()
    out = r.status, dict(r.getheaders()), r.read()
    conn.close()
    return out


def test_pages_tiles_and_layers_are_served_read_only_on_loopback(predicted, server):
    before = _tree(predicted["slides"], predicted["pred"])
    assert server.server_address[0] == "127.0.0.1"
    status, _, body = _get(server, "/")
    summary = json.loads((predicted["pred"] / "slide_000" / "slide_summary.json").read_text())
    assert status == 200 and b"/slide/slide_000" in body and b"/slide/slide_001" in body
    assert f"{summary['score']:.4f}".encode() in body and b"predicted" in body
    status, _, body = _get(server, "/slide/slide_000")
    assert status == 200 and b"/dz/slide_000.dzi" in body and b"openseadragon.min.js" in body
    assert b"colourbar" in body and b"id=opacity" in body
    status, headers, dzi = _get(server, "/dz/slide_000.dzi")
    assert status == 200 and b'Width="2304"' in dzi and b'Height="1920"' in dzi and b'TileSize="254"' in dzi
    top = 12  # ceil(log2(2560)): the full-resolution level
    status, headers, tile = _get(server, f"/dz/slide_000_files/{top}/1_1.jpeg")
    assert status == 200 and headers["Content-Type"] == "image/jpeg" and tile[:3] == b"\xff\xd8\xff"
    assert _get(server, f"/dz/slide_000_files/{top}/99_0.jpeg")[0] == 404
    assert _get(server, f"/dz/slide_000_files/{top + 1}/0_0.jpeg")[0] == 404
    status, _, png = _get(server, "/heat/slide_000.png")
    image = Image.open(io.BytesIO(png))
    assert status == 200 and image.mode == "RGBA"
    assert image.size == (summary["heatmap"]["cols"], summary["heatmap"]["rows"])
    heat = np.load(predicted["pred"] / "slide_000" / "heatmap.npy")
    assert np.array_equal(np.asarray(image)[..., 3] > 0, np.isfinite(heat))  # glass is transparent
    status, _, data = _get(server, "/features/slide_000.json")
    found = json.loads(data)
    assert len(found["detections"]) == summary["n_detections"] > 0
    assert found["truth"] and all(t["tumour"] for t in found["truth"])  # slide_000's metastases
    assert json.loads(_get(server, "/features/slide_001.json")[2])["truth"] == []
    status, _, js = _get(server, "/static/openseadragon/openseadragon.min.js")
    assert status == 200 and js.startswith(b"//! openseadragon " + viewer.OPENSEADRAGON_VERSION.encode())
    assert _tree(predicted["slides"], predicted["pred"]) == before  # nothing written there


@pytest.mark.parametrize("path", [
    "/static/../../../../etc/passwd", "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd", "/../setup.cfg",
    "/dz/..%2F..%2F..%2Fetc%2Fpasswd.dzi", "//etc/passwd", "/static//etc/passwd", "/static/%2Fetc%2Fpasswd",
    "/slide/..%2Fslide_000", "/static/..%5C..%5Csetup.cfg", "/overview/../slide_000/slide_summary.json",
    "/heat/%2Fetc%2Fpasswd.png", "/static/viewer.py", "/static/openseadragon/README.md",
    "http://127.0.0.1/../etc/passwd", "/dz/slide_000_files/../../../../etc/passwd",
])
def test_paths_outside_the_tables_are_refused(server, path):
    status, _, body = _get(server, path)
    assert status in (403, 404), (path, status)
    assert b"root:" not in body and b"[metadata]" not in body and b'"heatmap"' not in body
    assert _get(server, "/")[0] == 200  # and the server still serves


def test_only_loopback_host_names_are_answered(server):
    conn = http.client.HTTPConnection(*server.server_address[:2], timeout=30)
    for host, status in (("attacker.example", 403), ("attacker.example:8000", 403), ("localhost:1", 200),
                         ("127.0.0.1", 200)):
        conn.putrequest("GET", "/", skip_host=True)
        conn.putheader("Host", host)
        conn.endheaders()
        r = conn.getresponse()
        r.read()
        assert r.status == status, host
    conn.close()


def test_missing_and_unreadable_slides_are_messages_on_the_page(predicted, serve, tmp_path):
    slides = tmp_path / "other_slides"
    slides.mkdir()
    (slides / "broken.svs").write_bytes(b"II*\x00" + os.urandom(2000))  # a TIFF header, then noise
    server = serve(predicted["pred"], slides)
    status, _, body = _get(server, "/")
    assert status == 200 and b"broken" in body and b"slide file missing" in body
    status, _, body = _get(server, "/slide/broken")
    assert status == 200 and b"The slide cannot be shown" in body and b"broken.svs" in body
    assert b"No finished prediction" in body
    status, _, body = _get(server, "/slide/slide_000")  # predicted, but its file is not in --slides
    assert status == 200 and b"is not in --slides" in body and b"/overview/slide_000.png" in body
    status, headers, png = _get(server, "/overview/slide_000.png")
    assert status == 200 and png[:4] == b"\x89PNG"
    assert _get(server, "/dz/broken.dzi")[0] == 404 and _get(server, "/slide/nothing")[0] == 404


def test_view_command_errors_are_one_line(predicted, tmp_path):
    cli_fails(["slide", "view", str(tmp_path / "nope"), "--slides", str(predicted["slides"])], "PRED_DIR",
              "is not a directory")
    cli_fails(["slide", "view", str(predicted["pred"]), "--slides", str(tmp_path / "none")], "--slides")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        cli_fails(["slide", "view", str(predicted["pred"]), "--slides", str(predicted["slides"]), "--port",
                   str(port)], f"--port {port}", "cannot listen")


# --------------------------------------------------------------------------- a real browser
def _chromium(profile: pathlib.Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER), (
        "Debian's chromium and chromium-driver are needed: apt-get install chromium chromium-driver "
        "(bash .ci/run installs them)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,860"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def test_chromium_shows_the_slide_with_its_heat_map_and_findings(predicted, server, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    host, port = server.server_address[:2]
    driver = _chromium(tmp_path / "profile")
    try:
        driver.get(f"http://{host}:{port}/slide/slide_000")
        WebDriverWait(driver, 90, poll_frequency=0.2).until(
            lambda d: d.execute_script("return document.body.dataset.tiles === 'loaded' && "
                                       "document.body.dataset.features === 'loaded'"))
        assert driver.execute_script("return hcdtfViewer.world.getItemCount()") == 2  # slide and heat map
        assert driver.execute_script("return hcdtfViewer.world.getItemAt(1).getOpacity()") == pytest.approx(0.45)
        # the heat map covers the slide (its cells reach past the last pixel by less than a cell)
        bounds = driver.execute_script("var a = hcdtfViewer.world.getItemAt(0).getBounds(), "
                                       "b = hcdtfViewer.world.getItemAt(1).getBounds(); return [a.width, b.width]")
        assert 1.0 <= bounds[1] / bounds[0] < 1.05
        # click the top detection: its probability pops up
        found = json.loads(_get(server, "/features/slide_000.json")[2])
        heat = np.load(predicted["pred"] / "slide_000" / "heatmap.npy")
        top = found["detections"][0]
        at = driver.execute_script(
            "var p = hcdtfViewer.world.getItemAt(0).imageToViewerElementCoordinates("
            "new OpenSeadragon.Point(arguments[0], arguments[1])); return [p.x, p.y]", top["x"], top["y"])
        view = driver.find_element(By.ID, "view")
        ActionChains(driver).move_to_element_with_offset(
            view, int(at[0] - view.size["width"] / 2), int(at[1] - view.size["height"] / 2)).click().perform()
        popup = driver.find_element(By.ID, "popup")
        WebDriverWait(driver, 10).until(lambda d: popup.is_displayed())
        assert f"p = {top['p']:.3f}" in popup.text
        shot = tmp_path / "slide-view.png"
        driver.save_screenshot(str(shot))
        assert not driver.execute_script(
            "return performance.getEntriesByType('resource').filter(function (r) {"
            " return r.name.indexOf(location.origin) !== 0; }).length")  # nothing from outside (no CDN)
        # the heat-map layer off: the view loses the heat map's colour where there is tissue
        driver.find_element(By.ID, "heat-on").click()
        WebDriverWait(driver, 10).until(
            lambda d: d.execute_script("return hcdtfViewer.world.getItemAt(1).getOpacity()") == 0)
        time.sleep(1.0)  # the next animation frame redraws
        driver.save_screenshot(str(tmp_path / "no-heat.png"))
        origin = driver.execute_script("var r = document.getElementById('view').getBoundingClientRect(); "
                                       "return [r.left, r.top, r.width, r.height]")
    finally:
        driver.quit()
    x0, y0, w, h = (int(v) for v in origin)
    with_heat, without = (np.asarray(Image.open(f).convert("RGB"))[y0 + 40:y0 + h - 40, x0 + 40:x0 + w - 40]
                          .astype(float) for f in (shot, tmp_path / "no-heat.png"))
    changed = np.abs(with_heat - without).sum(-1) > 30
    assert changed.mean() > 0.1, changed.mean()  # the heat map lies over a good part of the view
    # where it changed the view, it pulled the colours towards the jet colour of the slide's heat values
    hex_colour = viewer.colour_stops(101)[int(round(100 * float(np.nanmedian(heat))))]
    colour = np.array([int(hex_colour[k:k + 2], 16) for k in (1, 3, 5)], float)
    near = np.linalg.norm(with_heat[changed] - colour, axis=-1).mean()
    assert near < np.linalg.norm(without[changed] - colour, axis=-1).mean()
    truth = (with_heat[..., 1] > 180) & (with_heat[..., 0] < 80) & (with_heat[..., 2] < 80)
    assert truth.sum() > 200  # the ground-truth outline (green) is drawn
    if os.environ.get("HCDTF_SCREENSHOT"):  # docs: HCDTF_SCREENSHOT=docs/images/slide-view.png
        shutil.copyfile(shot, os.environ["HCDTF_SCREENSHOT"])
