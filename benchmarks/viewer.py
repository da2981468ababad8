"""Benchmark: deep-zoom tiles served by `hcdtf slide view` to concurrent clients on loopback.

    python -m benchmarks.viewer             # a demo-size synthetic slide, 8 clients, 3 repetitions
    python -m benchmarks.viewer --quick     # a smaller slide, 2 repetitions

The server is the real command (``hcdtf slide view PRED --slides DIR --port 0``) in its own
process; ``--clients`` threads of this process (8 by default) each keep one HTTP/1.1 connection
open and fetch JPEG tiles, as a browser does. Each repetition requests every tile of the slide's
``--levels`` highest deep-zoom levels once, in a shuffled order (so no tile comes from a cache of
the server's: OpenSlide's own tile cache still helps neighbouring tiles), and reports tiles/s
(wall clock, all clients together), tiles per CPU-second of the server process (which moves much
less than the wall-clock rate when other processes take the cores) and the latency of each
request (median, p95, max, in ms).
Only loopback (127.0.0.1) is ever addressed; every loop is bounded by the tile list.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pathlib
import random
import re
import subprocess
import sys
import tempfile
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from benchmarks import common  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks.viewer", description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="a smaller slide and 2 repetitions")
    p.add_argument("--clients", type=int, default=8, help="concurrent clients (default 8)")
    p.add_argument("--levels", type=int, default=3, help="deep-zoom levels fetched, from the top (default 3)")
    p.add_argument("--reps", type=int, help="repetitions (default 3; 2 with --quick)")
    p.add_argument("--workdir", help="keep the generated slide here (default: a temp dir)")
    return p.parse_args(argv)


def _start_server(pred: pathlib.Path, slides: pathlib.Path) -> tuple[subprocess.Popen, str, int]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(common.REPO), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-m", "hcdtf.cli", "slide", "view", str(pred), "--slides", str(slides),
                             "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=common.REPO)
    deadline = time.time() + 120
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line and proc.poll() is not None:
            break
        m = re.search(r"http://(127\.0\.0\.1):(\d+)/", line)
        if m:
            return proc, m.group(1), int(m.group(2))
    proc.kill()
    raise RuntimeError(f"`hcdtf slide view` did not start: {proc.stdout.read()[-2000:]}")


def _tiles(host: str, port: int, slide: str, levels: int) -> list[str]:
    conn = http.client.HTTPConnection(host, port, timeout=60)
    conn.request("GET", f"/dz/{slide}.dzi")
    dzi = conn.getresponse().read().decode()
    conn.close()
    size = int(re.search(r'TileSize="(\d+)"', dzi).group(1))
    w, h = int(re.search(r'Width="(\d+)"', dzi).group(1)), int(re.search(r'Height="(\d+)"', dzi).group(1))
    top = (max(w, h) - 1).bit_length()  # ceil(log2(longest side)): the full-resolution level
    urls = []
    for level in range(top, max(top - levels, -1), -1):
        scale = 2 ** (top - level)
        lw, lh = -(-w // scale), -(-h // scale)
        urls += [f"/dz/{slide}_files/{level}/{c}_{r}.jpeg"
                 for r in range(-(-lh // size)) for c in range(-(-lw // size))]
    return urls


def _fetch_all(host: str, port: int, urls: list[str], clients: int) -> dict:
    """Every URL once, split over ``clients`` threads with a connection each; rate and latencies."""
    shares = [urls[k::clients] for k in range(clients)]
    latencies: list[list[float]] = [[] for _ in range(clients)]
    failures: list[str] = []
    start = threading.Barrier(clients + 1)

    def client(k: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=60)
        start.wait()
        for url in shares[k]:
            t = time.perf_counter()
            conn.request("GET", url)
            r = conn.getresponse()
            body = r.read()
            latencies[k].append(time.perf_counter() - t)
            if r.status != 200 or body[:3] != b"\xff\xd8\xff":
                failures.append(f"{url}: {r.status}")
        conn.close()

    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    if failures:
        raise RuntimeError(f"{len(failures)} tile request(s) failed, e.g. {failures[:3]}")
    flat = sorted(x for per in latencies for x in per)

    def q(p):
        return round(1000 * flat[min(len(flat) - 1, int(round(p * (len(flat) - 1))))], 2)

    return {"tiles": len(flat), "seconds": round(seconds, 3), "tiles_per_s": round(len(flat) / seconds, 1),
            "latency_ms": {"median": q(0.5), "p95": q(0.95), "max": q(1.0)}}


def main(argv=None) -> int:
    args = parse_args(argv)
    from hcdtf.slide import synthetic

    reps = args.reps or (2 if args.quick else 3)
    size = (1024, 768) if args.quick else (2048, 1536)  # rendered px; x4 at level 0 (demo: 8,192 x 6,144)
    with tempfile.TemporaryDirectory(prefix="hcdtf-bench-viewer-") as tmp:
        root = pathlib.Path(args.workdir or tmp)
        slides, pred = root / "slides", root / "pred"
        pred.mkdir(parents=True, exist_ok=True)
        t = time.perf_counter()
        synthetic.write_slides(slides, n=1, seed=0, size=size, log=lambda *_: None)
        generate = round(time.perf_counter() - t, 1)
        proc, host, port = _start_server(pred, slides)
        try:
            urls = _tiles(host, port, "slide_000", args.levels)
            common.eprint(f"slide ready ({generate} s); {len(urls)} tiles per repetition, {args.clients} clients")
            runs, load = [], []
            import psutil

            server = psutil.Process(proc.pid)
            for k in range(reps):
                shuffled = urls[:]
                random.Random(k).shuffle(shuffled)
                load.append(common.load_avg())
                cpu = sum(server.cpu_times()[:2])
                run = _fetch_all(host, port, shuffled, args.clients)
                cpu = sum(server.cpu_times()[:2]) - cpu
                run.update(server_cpu_seconds=round(cpu, 3), tiles_per_server_cpu_s=round(run["tiles"] / cpu, 1))
                runs.append(run)
                common.eprint(f"  rep {k + 1}: {runs[-1]}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    result = {"machine": common.machine(), "quick": args.quick, "clients": args.clients, "levels": args.levels,
              "slide_level0": [4 * size[0], 4 * size[1]], "generate_seconds": generate,
              "tiles_per_rep": len(urls), "load_avg_before_each_rep": load,
              "tiles_per_s": common.summarize([r["tiles_per_s"] for r in runs]),
              "tiles_per_server_cpu_s": common.summarize([r["tiles_per_server_cpu_s"] for r in runs]),
              "p95_latency_ms": common.summarize([r["latency_ms"]["p95"] for r in runs]),
              "median_latency_ms": common.summarize([r["latency_ms"]["median"] for r in runs]),
              "runs": runs}
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
