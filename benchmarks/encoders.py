"""python -m benchmarks.encoders --ref-python /work/tmp/refvenv/bin/python [--arch Hibou-B] [--batch 8]
[--precisions float32,bfloat16] [--rounds 5] [--threads 2] [--memory-sizes 256,2048]

Embedding throughput of a pathology encoder: hcdtf's Keras model (keras-hub DINOV2Backbone,
preprocessing inside, as `hcdtf embed` builds it) vs timm's VisionTransformer of the same
shape (torch.inference_mode), same batch of 96x96 uint8 patches resized to the encoder's input
inside each pipeline, random weights (speed does not depend on them).

Fairness: each side runs in its own fresh process per round (timm from a separate venv: torch is
never a dependency of hcdtf), rounds interleaved (the order alternates) so that both see the same
machine load; both sides get the same threads (`--threads` intra-op, 1 inter-op) and the same
precision: `float32`, or `bfloat16` = mixed precision on both sides (Keras `mixed_bfloat16`
policy: float32 weights, bfloat16 matmuls, softmax/LayerNorm in float32; torch
`autocast("cpu", bfloat16)`: the same split). Each child reports images/s (wall) and images per
CPU-second of its own process (the figure that survives a loaded machine).

`--memory-sizes` also measures the peak RSS (the child's ru_maxrss) of the real command,
`hcdtf embed FILE --images DIR --out E.h5`, with a tiny imported encoder on folders of that many
synthetic 96x96 PNG patches (the encoder is tiny so that what grows with the data shows).

Prints JSON (every round, medians, min-max, ratios); `--out` also writes it.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile

KERAS = r"""
import os, sys, time, json
args = json.loads(sys.argv[1])
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
if args.get("frozen"):
    os.environ["TF_ONEDNN_ASSUME_FROZEN_WEIGHTS"] = "1"
import numpy as np
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(args["threads"])
tf.config.threading.set_inter_op_parallelism_threads(1)
import keras
from hcdtf.models.encoders.classifier import spec_config
from hcdtf.models.encoders.specs import get_encoder
from hcdtf.models.encoders.model import build_encoder
dtype = "mixed_bfloat16" if args["precision"] == "bfloat16" else "float32"
model = build_encoder(spec_config(get_encoder(args["arch"])), input_shape=(96, 96, 3), dtype=dtype)
infer = tf.function(lambda x: model(x, training=False), jit_compile=bool(args.get("xla")))
x = tf.constant(np.random.default_rng(0).integers(0, 256, (args["batch"], 96, 96, 3), dtype=np.uint8))
for _ in range(args["warmup"]):
    y = infer(x).numpy()
assert y.dtype == np.float32 and np.isfinite(y).all()
t, c = time.perf_counter(), time.process_time()
for _ in range(args["steps"]):
    infer(x).numpy()
wall, cpu = time.perf_counter() - t, time.process_time() - c
n = args["batch"] * args["steps"]
print(json.dumps({"images_per_s": n / wall, "images_per_cpu_s": n / cpu, "versions": {
    "tensorflow": tf.__version__, "keras": keras.__version__,
    "keras_hub": __import__("keras_hub").__version__}}))
"""

TIMM = r"""
import sys, time, json
args = json.loads(sys.argv[1]); spec = args["spec"]
import numpy as np
import torch, torch.nn.functional as F
torch.set_num_threads(args["threads"]); torch.set_num_interop_threads(1)
try:
    import torchvision  # noqa - timm imports it
except RuntimeError:  # PyPI's CUDA torchvision beside CPU torch (see tools/make_encoder_fixtures.py)
    for m in [m for m in sys.modules if m.startswith("torchvision")]: del sys.modules[m]
    for op in ("nms", "qnms"):
        torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
import timm
from timm.layers import SwiGLUPacked
kw = dict(img_size=spec["input_size"], patch_size=spec["patch_size"], embed_dim=spec["dim"],
          depth=spec["depth"], num_heads=spec["heads"], mlp_ratio=spec["mlp_ratio"], init_values=1e-5,
          reg_tokens=spec["registers"], no_embed_class=True, num_classes=0)
if spec["mlp"] == "swiglu":
    kw.update(mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU)
model = timm.models.VisionTransformer(**kw).eval()
mean = torch.tensor(spec["mean"]).view(1, 3, 1, 1); std = torch.tensor(spec["std"]).view(1, 3, 1, 1)
x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (args["batch"], 96, 96, 3), dtype=np.uint8))
bf16 = args["precision"] == "bfloat16"
def embed(x):
    y = x.permute(0, 3, 1, 2).float() / 255.0
    y = F.interpolate(y, size=(spec["input_size"],) * 2, mode="bilinear", align_corners=False)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        tokens = model.forward_features((y - mean) / std)
    tokens = tokens.float()
    cls = tokens[:, 0]
    if spec["embedding"] == "cls_mean":
        return torch.cat([cls, tokens[:, 1 + spec["registers"]:].mean(1)], -1)
    return cls
with torch.inference_mode():
    for _ in range(args["warmup"]):
        y = embed(x)
    assert y.dtype == torch.float32 and torch.isfinite(y).all()
    t, c = time.perf_counter(), time.process_time()
    for _ in range(args["steps"]):
        embed(x)
    wall, cpu = time.perf_counter() - t, time.process_time() - c
n = args["batch"] * args["steps"]
print(json.dumps({"images_per_s": n / wall, "images_per_cpu_s": n / cpu, "versions": {
    "torch": torch.__version__, "timm": timm.__version__, "numpy": np.__version__}}))
"""

MEMORY = r"""
import json, resource, subprocess, sys
cmd = json.loads(sys.argv[1])
subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(json.dumps({"peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def _run(cmd, timeout=1800):
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if p.returncode:
        raise RuntimeError(f"{cmd[:2]} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _summary(values):
    return {"median": round(statistics.median(values), 4), "min": round(min(values), 4),
            "max": round(max(values), 4)}


def speed(args, spec):
    """Interleaved rounds per precision; returns the result dict."""
    results = {}
    for precision in args.precisions.split(","):
        child = {"arch": spec["name"], "batch": args.batch, "steps": args.steps, "warmup": args.warmup,
                 "threads": args.threads, "precision": precision, "frozen": args.frozen_weights,
                 "xla": args.xla}
        rounds, versions = [], {}
        for r in range(args.rounds):
            sides = [("keras", [sys.executable, "-c", KERAS, json.dumps(child)]),
                     ("timm", [args.ref_python, "-c", TIMM, json.dumps({**child, "spec": spec})])]
            if r % 2:
                sides.reverse()
            row = {"load_avg_1min": round(os.getloadavg()[0], 2)}
            for side, cmd in sides:
                out = _run(cmd)
                versions.update(out.pop("versions"))
                row.update({f"{side}_{k}": round(v, 4) for k, v in out.items()})
            row["ratio"] = round(row["keras_images_per_s"] / row["timm_images_per_s"], 4)
            row["ratio_per_cpu_s"] = round(row["keras_images_per_cpu_s"] / row["timm_images_per_cpu_s"], 4)
            rounds.append(row)
            print(precision, json.dumps(row), file=sys.stderr, flush=True)
        results[precision] = {
            "rounds": rounds, "versions": versions,
            **{k: _summary([r[k] for r in rounds]) for k in (
                "keras_images_per_s", "timm_images_per_s", "keras_images_per_cpu_s",
                "timm_images_per_cpu_s", "ratio", "ratio_per_cpu_s")}}
    return results


def memory(args, sizes):
    """Peak RSS of `hcdtf embed` with a tiny imported encoder on folders of `sizes` patches."""
    import numpy as np
    from PIL import Image

    root = pathlib.Path(os.environ.get("TMPDIR", tempfile.gettempdir()))
    work = pathlib.Path(tempfile.mkdtemp(prefix="hcdtf-encmem-", dir=root))
    repo = pathlib.Path(__file__).resolve().parent.parent
    fixture = repo / "tests" / "fixtures" / "encoders" / args.memory_fixture
    hcdtf = [sys.executable, "-m", "hcdtf.cli"]
    enc = work / "tiny.encoder.h5"
    subprocess.run(hcdtf + ["weights", "import", str(fixture), "--arch", args.memory_arch, "--out", str(enc)],
                   check=True, capture_output=True)
    rng = np.random.default_rng(0)
    out = {"encoder": f"{args.memory_fixture} fixture (--arch {args.memory_arch})", "batch": args.memory_batch,
           "sizes": {}}
    made, folder = 0, work / "images"
    folder.mkdir()
    for n in sorted(sizes):
        while made < n:  # each folder is the previous one plus new patches
            Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(folder / f"p{made:06d}.png")
            made += 1
        cmd = hcdtf + ["embed", str(enc), "--images", str(folder), "--out", str(work / f"e{n}.h5"),
                       "--batch-size", str(args.memory_batch)]
        peak = [_run([sys.executable, "-c", MEMORY, json.dumps(cmd)])["peak_rss_mb"]
                for _ in range(args.memory_repeats)]
        out["sizes"][str(n)] = {"peak_rss_mb": [round(p, 1) for p in peak]}
        print("memory", n, out["sizes"][str(n)], file=sys.stderr, flush=True)
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref-python", help="python of a venv with torch + timm (needed for the speed part)")
    p.add_argument("--arch", default="Hibou-B")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--precisions", default="float32,bfloat16", help="comma-separated: float32, bfloat16")
    p.add_argument("--frozen-weights", action="store_true", help="TF_ONEDNN_ASSUME_FROZEN_WEIGHTS=1 on the Keras side")
    p.add_argument("--xla", action="store_true", help="jit_compile=True on the Keras side")
    p.add_argument("--memory-sizes", default="", help="e.g. 256,2048: peak RSS of `hcdtf embed` (no speed part "
                   "without --ref-python)")
    p.add_argument("--memory-fixture", default="hf_hibou")
    p.add_argument("--memory-arch", default="Hibou-B")
    p.add_argument("--memory-batch", type=int, default=64)
    p.add_argument("--memory-repeats", type=int, default=2)
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args(argv)
    from hcdtf.models.encoders.specs import get_encoder

    s = get_encoder(args.arch)
    spec = dict(name=s.name, input_size=s.input_size, patch_size=s.patch_size, dim=s.dim, depth=s.depth,
                heads=s.heads, mlp_ratio=s.mlp_ratio, registers=s.registers, mlp=s.mlp, mean=s.mean, std=s.std,
                embedding=s.embedding)
    from hcdtf import precision

    cpu = precision.cpu_features()["cpu_model"]  # the package's /proc/cpuinfo parser
    result = {"arch": s.name, "batch": args.batch, "steps": args.steps, "threads": args.threads, "cpu": cpu,
              "cores": os.cpu_count(), "frozen_weights": args.frozen_weights, "xla": args.xla,
              "load_avg_1min_start": round(os.getloadavg()[0], 2)}
    if args.ref_python:
        result["speed"] = speed(args, spec)
    if args.memory_sizes:
        result["memory"] = memory(args, [int(n) for n in args.memory_sizes.split(",")])
    result["load_avg_1min_end"] = round(os.getloadavg()[0], 2)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        pathlib.Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
