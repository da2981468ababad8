"""Writes tests/fixtures/encoders/: tiny randomly initialised encoders in their publishers'
hub layouts, input patches, and the reference library's embeddings of those patches.

Run in a throwaway venv with the reference libraries (never the project's):

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install torch==2.13.0 timm transformers safetensors pillow
    (timm pulls PyPI's torchvision, a CUDA build whose C++ ops do not load; handled below)
    /tmp/refvenv/bin/python tools/make_encoder_fixtures.py

One folder per architecture family, named after the encoder whose layout it copies:

- timm_hoptimus0: timm `vit_giant_patch14_reg4_dinov2` (4 registers without position
  embeddings, SwiGLU, layer scale, class token), H-optimus-0's mean/std.
- timm_virchow2: timm `vit_huge_patch14_224` + SwiGLUPacked/SiLU passed in code (as
  Virchow2's card does), 4 registers *with* position embeddings, class + mean patch token.
- timm_uni: timm `vit_large_patch16_224` (GELU MLP, layer scale, no registers), 16 heads so
  that its bare model.safetensors imports with `--arch UNI` alone.
- hf_midnight: transformers `Dinov2Model` (SwiGLU, no registers, class + mean patch token),
  position embeddings trained at 70 px and interpolated to the 112 px input; weights under
  the names the hubs hold (written by transformers 4: attention.attention.query,
  mlp.weights_in...).
- hf_hibou: transformers `Dinov2WithRegistersModel` (4 registers, GELU; antialiased
  interpolation of the position embeddings), pooler output; weights under the names
  transformers 5 writes (attention.q_proj, ...).

Every parameter is redrawn at random (layer scales too, so that a missing one shows), the
models are tiny (width 16, depth 2, 112 px input), and the references are computed in
float32 from the 96x96 PNG patches bilinearly upsampled as `hcdtf` does inside its models
(`F.interpolate(mode="bilinear", align_corners=False)`), then normalised.
"""

import json
import pathlib
import shutil

import sys

import numpy as np
import torch
import torch.nn.functional as F

try:
    import torchvision  # noqa: F401 - timm imports it
except RuntimeError:
    # PyPI's torchvision is a CUDA build: beside the CPU torch its C++ ops do not load, and its
    # import then fails registering a fake kernel for the missing `nms`/`qnms`. timm's ViTs use no
    # torchvision op: declare the schemas (nms, qnms) so that the import completes.
    for _name in [m for m in sys.modules if m.startswith("torchvision")]:
        del sys.modules[_name]
    for _op in ("nms", "qnms"):
        torch.library.define(f"torchvision::{_op}",
                             "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
import timm  # noqa: E402
from PIL import Image
from safetensors.torch import save_file
from timm.layers import SwiGLUPacked
from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig
from transformers import Dinov2WithRegistersModel

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "encoders"
SIZE = 112
N_IMAGES = 3


def randomise(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1 and ("norm" in name or "ls" in name or "layer_scale" in name
                                or "layernorm" in name) and name.endswith(("weight", "gamma", "lambda1")):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return model.eval()


def images():
    rng = np.random.default_rng(23)
    folder = OUT / "images"
    folder.mkdir(parents=True, exist_ok=True)
    arrays = []
    for i in range(N_IMAGES):
        # smooth colour fields + noise: compresses well, still exercises every pixel
        yy, xx = np.mgrid[0:96, 0:96] / 96.0
        base = np.stack([np.sin(6 * xx + i), np.cos(5 * yy - i), np.sin(4 * (xx + yy) + 2 * i)], -1)
        img = np.clip(127 + 90 * base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(folder / f"patch_{i:02d}.png")
        arrays.append(img)
    return np.stack(arrays)


def pixels(batch, mean, std):
    x = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 255.0
    x = F.interpolate(x, size=(SIZE, SIZE), mode="bilinear", align_corners=False, antialias=False)
    return (x - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)


def save(folder, model_state, config, reference, preprocessor=None):
    folder = OUT / folder
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model_state.items()}, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    if preprocessor:
        (folder / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2))
    np.save(folder / "reference.npy", reference.astype(np.float32))


def timm_folder(folder, architecture, model_args, code_args, mean, std, seed, rule):
    model = randomise(timm.create_model(architecture, pretrained=False, **model_args, **code_args), seed)
    with torch.no_grad():
        x = pixels(BATCH, mean, std)
        if rule == "cls":
            ref = model(x)
        else:
            out = model(x)  # global_pool="": all tokens after the final norm
            ref = torch.cat([out[:, 0], out[:, 1 + model.num_reg_tokens:].mean(1)], dim=-1)
    config = {"architecture": architecture, "num_classes": 0,
              "num_features": model.num_features, "global_pool": model_args.get("global_pool", "token"),
              "model_args": model_args,
              "pretrained_cfg": {"tag": "tiny_random", "input_size": [3, SIZE, SIZE],
                                 "interpolation": "bicubic", "mean": list(mean), "std": list(std),
                                 "num_classes": 0}}
    save(folder, model.state_dict(), config, ref.numpy())


def hf_folder(folder, config, model_cls, mean, std, seed, rule, published_names):
    model = randomise(model_cls(config), seed)
    with torch.no_grad():
        out = model(pixel_values=pixels(BATCH, mean, std))
        if rule == "cls":
            ref = out.pooler_output
        else:
            h = out.last_hidden_state
            ref = torch.cat([h[:, 0], h[:, 1 + getattr(config, "num_register_tokens", 0):].mean(1)], -1)
    pre = {"image_processor_type": "BitImageProcessor", "crop_size": {"height": SIZE, "width": SIZE},
           "do_center_crop": True, "image_mean": list(mean), "image_std": list(std),
           "size": {"shortest_edge": SIZE}}
    state = model.state_dict()
    if published_names:
        state = v4_names(state)
    save(folder, state, config.to_dict(), ref.numpy(), pre)


def v4_names(state):
    """transformers 5 saves Dinov2 weights under new names (q_proj, gate_proj/up_proj...);
    the published checkpoints were written by transformers 4: back to those names."""
    out = {}
    for key, value in state.items():
        for new, old in (("attention.q_proj", "attention.attention.query"),
                         ("attention.k_proj", "attention.attention.key"),
                         ("attention.v_proj", "attention.attention.value"),
                         ("attention.o_proj", "attention.output.dense"),
                         ("mlp.down_proj", "mlp.weights_out")):
            key = key.replace(new, old)
        out[key] = value
    for key in [k for k in out if "mlp.gate_proj" in k]:
        up = out.pop(key.replace("gate_proj", "up_proj"))
        out[key.replace("gate_proj", "weights_in")] = torch.cat([out.pop(key), up])
    return out


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    BATCH = images()
    imagenet = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    timm_folder("timm_hoptimus0", "vit_giant_patch14_reg4_dinov2",
                dict(img_size=SIZE, embed_dim=16, depth=2, num_heads=2, mlp_ratio=3.0,
                     num_classes=0, global_pool="token", init_values=1e-5, dynamic_img_size=False),
                {}, (0.707223, 0.578729, 0.703617), (0.211883, 0.230117, 0.177517), 1, "cls")
    timm_folder("timm_virchow2", "vit_huge_patch14_224",
                dict(img_size=SIZE, embed_dim=16, depth=2, num_heads=2, mlp_ratio=3.0,
                     reg_tokens=4, init_values=1e-5, num_classes=0, global_pool="",
                     dynamic_img_size=True),
                dict(mlp_layer=SwiGLUPacked, act_layer=torch.nn.SiLU), *imagenet, 2, "cls_mean")
    timm_folder("timm_uni", "vit_large_patch16_224",
                dict(img_size=SIZE, patch_size=16, embed_dim=16, depth=2, num_heads=16,
                     init_values=1e-5, num_classes=0, dynamic_img_size=True),
                {}, *imagenet, 3, "cls")
    hf_folder("hf_midnight",
              Dinov2Config(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_ratio=4,
                           use_swiglu_ffn=True, image_size=70, patch_size=14),
              Dinov2Model, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 4, "cls_mean", True)
    hf_folder("hf_hibou",
              Dinov2WithRegistersConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                                        mlp_ratio=4, num_register_tokens=4, image_size=70,
                                        patch_size=14),
              Dinov2WithRegistersModel, (0.7068, 0.5755, 0.722), (0.195, 0.2316, 0.1816), 5, "cls",
              False)
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total / 1024:.0f} KiB)")
