"""python -m benchmarks.encoders --ref-python /tmp/refvenv/bin/python [--arch Hibou-B] [--batch 8]

Embedding throughput of a pathology encoder: hcdtf's Keras model (keras-hub DINOV2Backbone,
float32, preprocessing inside) vs timm's VisionTransformer of the same shape (float32,
torch.inference_mode), same batch of 96x96 uint8 patches resized to 224 inside each pipeline,
random weights (speed does not depend on them). Each side runs in its own process (timm from a
separate venv: torch is never a dependency of hcdtf), rounds interleaved so that both see the
same machine load; prints JSON with every round's images/s and the median ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys

KERAS = r"""
import os, sys, time, json
import numpy as np
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
from hcdtf.models.encoders.classifier import spec_config
from hcdtf.models.encoders.specs import get_encoder
from hcdtf.models.encoders.model import build_encoder
import tensorflow as tf
arch, batch, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
model = build_encoder(spec_config(get_encoder(arch)), input_shape=(96, 96, 3))
infer = tf.function(lambda x: model(x, training=False))
x = tf.constant(np.random.default_rng(0).integers(0, 256, (batch, 96, 96, 3), dtype=np.uint8))
infer(x).numpy(); infer(x).numpy()
t = time.perf_counter()
for _ in range(steps):
    infer(x).numpy()
print(json.dumps({"images_per_s": batch * steps / (time.perf_counter() - t)}))
"""

TIMM = r"""
import sys, time, json
import numpy as np
import torch, torch.nn.functional as F
try:
    import torchvision  # noqa
except RuntimeError:  # PyPI's CUDA torchvision beside CPU torch (see tools/make_encoder_fixtures.py)
    for m in [m for m in sys.modules if m.startswith("torchvision")]: del sys.modules[m]
    for op in ("nms", "qnms"):
        torch.library.define(f"torchvision::{op}", "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
import timm
from timm.layers import SwiGLUPacked
spec = json.loads(sys.argv[1]); batch, steps = int(sys.argv[2]), int(sys.argv[3])
kw = dict(img_size=spec["input_size"], patch_size=spec["patch_size"], embed_dim=spec["dim"],
          depth=spec["depth"], num_heads=spec["heads"], mlp_ratio=spec["mlp_ratio"], init_values=1e-5,
          reg_tokens=spec["registers"], no_embed_class=True, num_classes=0)
if spec["mlp"] == "swiglu":
    kw.update(mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU)
model = timm.models.VisionTransformer(**kw).eval()
mean = torch.tensor(spec["mean"]).view(1, 3, 1, 1); std = torch.tensor(spec["std"]).view(1, 3, 1, 1)
x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (batch, 96, 96, 3), dtype=np.uint8))
def embed(x):
    y = x.permute(0, 3, 1, 2).float() / 255.0
    y = F.interpolate(y, size=(spec["input_size"],) * 2, mode="bilinear", align_corners=False)
    return model((y - mean) / std)
with torch.inference_mode():
    embed(x); embed(x)
    t = time.perf_counter()
    for _ in range(steps):
        embed(x)
print(json.dumps({"images_per_s": batch * steps / (time.perf_counter() - t)}))
"""


def _run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=900).stdout
    return json.loads(out.strip().splitlines()[-1])["images_per_s"]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ref-python", required=True, help="python of a venv with torch + timm")
    p.add_argument("--arch", default="Hibou-B")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    args = p.parse_args(argv)
    from hcdtf.models.encoders.specs import get_encoder

    s = get_encoder(args.arch)
    spec = dict(input_size=s.input_size, patch_size=s.patch_size, dim=s.dim, depth=s.depth, heads=s.heads,
                mlp_ratio=s.mlp_ratio, registers=s.registers, mlp=s.mlp, mean=s.mean, std=s.std)
    rounds = []
    for _ in range(args.rounds):
        keras_ips = _run([sys.executable, "-c", KERAS, s.name, str(args.batch), str(args.steps)])
        timm_ips = _run([args.ref_python, "-c", TIMM, json.dumps(spec), str(args.batch), str(args.steps)])
        rounds.append({"keras_images_per_s": round(keras_ips, 3), "timm_images_per_s": round(timm_ips, 3)})
        print(json.dumps(rounds[-1]), file=sys.stderr)
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.processor())
    ratio = statistics.median(r["keras_images_per_s"] / r["timm_images_per_s"] for r in rounds)
    print(json.dumps({"arch": s.name, "batch": args.batch, "steps": args.steps, "cpu": cpu,
                      "cores": os.cpu_count(), "load_avg_1min": os.getloadavg()[0], "rounds": rounds,
                      "median_keras_over_timm": round(ratio, 3)}, indent=2))


if __name__ == "__main__":
    sys.exit(main())
