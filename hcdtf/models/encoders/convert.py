"""Published encoder checkpoints -> one canonical ViT description (NumPy only, no PyTorch).

Two source layouts, one converter each, kept apart from the Keras model code:

- timm (`config.json` with `architecture`, `model_args` overriding that architecture's
  defaults, `pretrained_cfg` with mean/std; `model.safetensors` with `blocks.N.attn.qkv`...).
- transformers (`config.json` of a `Dinov2Config` / `Dinov2WithRegistersConfig`, optional
  `preprocessor_config.json`; `model.safetensors` with `encoder.layer.N.attention...`).

Both give `(config, weights)`: `config` is a JSON-able dict (`CONFIG_KEYS`), `weights` a dict
of float32 arrays named as in transformers' Dinov2 (the names keras-hub's converter uses), with
three normalisations so that one Keras model fits all sources exactly:

- position embeddings at the grid of the encoder's input size: resampled here, once, with the
  source library's own interpolation (transformers: bicubic, a = -0.75, no antialiasing for
  `dinov2`; antialiased bicubic, a = -0.5, for `dinov2_with_registers`), because TensorFlow's
  bicubic kernel differs from PyTorch's;
- the class and register tokens' position embeddings (timm without `no_embed_class`) added
  to those constant tokens, so every source reads "patch tokens get position embeddings";
- timm's fused `qkv` split into query/key/value; missing layer scales set to 1.

The checkpoint decides every shape; a registry entry (`EncoderSpec`) supplies what the
published config leaves to code (embedding rule, and the mean/std where no config has them),
and the MLP kind is read from the weights' shapes (a SwiGLU's second layer takes half of the
first layer's width) and checked against the entry.
"""

import json
import math
import pathlib

import numpy as np

from hcdtf.models.encoders import specs as specs_lib

CONFIG_KEYS = ("name", "source", "patch_size", "dim", "depth", "heads", "mlp", "mlp_hidden",
               "registers", "image_size", "embedding", "mean", "std", "layer_norm_eps")


class ConversionError(ValueError):
    """A checkpoint this converter cannot read exactly; the message names the file and why."""


# timm architectures' own defaults (timm 1.0 vision_transformer.py), overridden by the hub
# config's model_args. `mlp` is what timm passes in code (mlp_layer=SwiGLUPacked, act=SiLU).
_VIT_DEFAULTS = dict(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                     mlp_ratio=4.0, qkv_bias=True, init_values=None, class_token=True,
                     no_embed_class=False, reg_tokens=0, pre_norm=False, final_norm=True,
                     fc_norm=None, global_pool="token", qk_norm=False, proj_bias=True,
                     pos_embed="learn")
TIMM_ARCHITECTURES = {
    "vit_base_patch16_224": dict(patch_size=16, embed_dim=768, depth=12, num_heads=12),
    "vit_large_patch16_224": dict(patch_size=16, embed_dim=1024, depth=24, num_heads=16),
    "vit_huge_patch14_224": dict(patch_size=14, embed_dim=1280, depth=32, num_heads=16),
    "vit_giant_patch14_224": dict(patch_size=14, embed_dim=1408, mlp_ratio=48 / 11, depth=40,
                                  num_heads=16),
    "vit_small_patch14_dinov2": dict(patch_size=14, embed_dim=384, depth=12, num_heads=6,
                                     init_values=1e-5, img_size=518),
    "vit_base_patch14_dinov2": dict(patch_size=14, embed_dim=768, depth=12, num_heads=12,
                                    init_values=1e-5, img_size=518),
    "vit_large_patch14_dinov2": dict(patch_size=14, embed_dim=1024, depth=24, num_heads=16,
                                     init_values=1e-5, img_size=518),
    "vit_giant_patch14_dinov2": dict(patch_size=14, embed_dim=1536, depth=40, num_heads=24,
                                     init_values=1e-5, mlp_ratio=2.66667 * 2, mlp="swiglu",
                                     img_size=518),
    "vit_small_patch14_reg4_dinov2": dict(patch_size=14, embed_dim=384, depth=12, num_heads=6,
                                          init_values=1e-5, reg_tokens=4, no_embed_class=True,
                                          img_size=518),
    "vit_base_patch14_reg4_dinov2": dict(patch_size=14, embed_dim=768, depth=12, num_heads=12,
                                         init_values=1e-5, reg_tokens=4, no_embed_class=True,
                                         img_size=518),
    "vit_large_patch14_reg4_dinov2": dict(patch_size=14, embed_dim=1024, depth=24, num_heads=16,
                                          init_values=1e-5, reg_tokens=4, no_embed_class=True,
                                          img_size=518),
    "vit_giant_patch14_reg4_dinov2": dict(patch_size=14, embed_dim=1536, depth=40, num_heads=24,
                                          init_values=1e-5, mlp_ratio=2.66667 * 2, mlp="swiglu",
                                          reg_tokens=4, no_embed_class=True, img_size=518),
}


# ----------------------------------------------------------------------------- resampling
def _cubic(x, a):
    x = np.abs(x)
    return np.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, (((x - 5) * x + 8) * x - 4) * a, 0.0))


def torch_bicubic_matrix(n_in, n_out, antialias=False):
    """The `(n_out, n_in)` matrix of PyTorch's `F.interpolate(mode="bicubic",
    align_corners=False, size=...)` along one axis (float64).

    Without antialiasing PyTorch uses Keys' cubic with a = -0.75 and clamps indices at the
    border; with `antialias=True` it uses a = -0.5 (PIL's kernel), a support widened by the
    downscaling factor and weights normalised to sum to one.
    """
    scale = n_in / n_out
    m = np.zeros((n_out, n_in))
    if not antialias:
        for i in range(n_out):
            src = (i + 0.5) * scale - 0.5
            base = math.floor(src)
            t = src - base
            for k in range(-1, 3):
                j = min(max(base + k, 0), n_in - 1)
                m[i, j] += _cubic(np.float64(k - t), -0.75)
        return m
    support = 2.0 * max(scale, 1.0)
    inv = 1.0 / max(scale, 1.0)
    for i in range(n_out):
        center = scale * (i + 0.5)
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        js = np.arange(lo, hi)
        w = _cubic((js - center + 0.5) * inv, -0.5)
        total = w.sum()
        m[i, lo:hi] = w / total if total != 0 else w
    return m


def resample_grid(pos, n_out, antialias=False):
    """Patch position embeddings `(n*n, dim)` resampled to `(n_out*n_out, dim)` as PyTorch's
    bicubic `F.interpolate` does (computed in float64, returned float32)."""
    n_in = int(round(math.sqrt(pos.shape[0])))
    if n_in * n_in != pos.shape[0]:
        raise ConversionError(f"{pos.shape[0]} patch position embeddings are not a square grid")
    if n_in == n_out:
        return pos.astype(np.float32)
    m = torch_bicubic_matrix(n_in, n_out, antialias)
    grid = pos.reshape(n_in, n_in, -1).astype(np.float64)
    out = np.einsum("ij,jkc,lk->ilc", m, grid, m)
    return out.reshape(n_out * n_out, -1).astype(np.float32)


# ----------------------------------------------------------------------------- reading
def _load_safetensors(path):
    from safetensors.numpy import load_file

    try:
        return {k: np.asarray(v) for k, v in load_file(str(path)).items()}
    except Exception as e:  # noqa: BLE001 - any unreadable file becomes one line
        raise ConversionError(f"{path}: not a readable safetensors file ({type(e).__name__}: {e})")


def _f32(x):
    if x.dtype == np.uint16:  # bfloat16 read as raw 16-bit words
        return (x.astype(np.uint32) << 16).view(np.float32)
    return x.astype(np.float32)


def _read_json(path):
    try:
        return json.loads(pathlib.Path(path).read_text())
    except (OSError, ValueError) as e:
        raise ConversionError(f"{path}: not a readable JSON file ({e})")


def detect_layout(state):
    if "embeddings.cls_token" in state or "embeddings.patch_embeddings.projection.weight" in state:
        return "transformers"
    if "cls_token" in state and "patch_embed.proj.weight" in state:
        return "timm"
    raise ConversionError("the weights are neither a timm ViT (cls_token, patch_embed.proj, "
                          "blocks.N) nor a transformers Dinov2 (embeddings.*, encoder.layer.N)")


def _strip_prefix(state):
    # transformers checkpoints of a *Model saved from a head model carry "dinov2." in front.
    for prefix in ("dinov2.", "model.", "backbone."):
        if state and all(k.startswith(prefix) for k in state):
            return {k[len(prefix):]: v for k, v in state.items()}
    return state


def _mlp_kind(fc1_out, fc2_in, path):
    if fc2_in == fc1_out:
        return "gelu"
    if 2 * fc2_in == fc1_out:
        return "swiglu"
    raise ConversionError(f"{path}: MLP widths {fc1_out} -> {fc2_in} are neither a plain MLP "
                          "nor a packed SwiGLU")


def _finish(config, spec, path):
    if spec is not None and config["mlp"] != spec.mlp:
        raise ConversionError(
            f"{path}: the weights hold a {config['mlp']} MLP but {spec.name} has a {spec.mlp} "
            "MLP: wrong --arch?")
    if config["dim"] % config["heads"]:
        raise ConversionError(f"{path}: width {config['dim']} is not divisible by "
                              f"{config['heads']} heads")
    return {k: config[k] for k in CONFIG_KEYS}


def _timm(state, cfg, spec, path):
    arch = cfg.get("architecture") or (spec.timm_architecture if spec else "")
    if arch and arch not in TIMM_ARCHITECTURES and not cfg.get("model_args"):
        raise ConversionError(f"{path}: unknown timm architecture {arch!r}; known: "
                              f"{', '.join(TIMM_ARCHITECTURES)}")
    args = {**_VIT_DEFAULTS, "mlp": None, **TIMM_ARCHITECTURES.get(arch, {})}
    args.update(cfg.get("model_args") or {})
    for key, bad in (("class_token", False), ("pre_norm", True), ("qk_norm", True),
                     ("final_norm", False), ("fc_norm", True), ("proj_bias", False)):
        if args.get(key) == bad:
            raise ConversionError(f"{path}: model_args {key}={bad} is not supported")
    if args["pos_embed"] != "learn":
        raise ConversionError(f"{path}: model_args pos_embed={args['pos_embed']!r} is not supported")
    if args["global_pool"] not in ("token", ""):
        raise ConversionError(f"{path}: global_pool={args['global_pool']!r} is not supported "
                              "(class-token encoders only)")
    dim = state["cls_token"].shape[-1]
    patch = state["patch_embed.proj.weight"].shape[-1]
    depth = len({k.split(".")[1] for k in state if k.startswith("blocks.")})
    registers = state["reg_token"].shape[1] if "reg_token" in state else 0
    pos = _f32(state["pos_embed"])[0]
    if cfg:
        heads, no_embed_class = int(args["num_heads"]), bool(args["no_embed_class"])
    else:  # a bare file: heads from the registry entry, the rest from the shapes
        heads = spec.heads
        no_embed_class = math.isqrt(pos.shape[0]) ** 2 == pos.shape[0]
    prefix = 0 if no_embed_class else 1 + registers
    grid = int(round(math.sqrt(pos.shape[0] - prefix)))
    if grid * grid != pos.shape[0] - prefix:
        raise ConversionError(f"{path}: pos_embed of {pos.shape[0]} rows does not fit "
                              f"{prefix} prefix tokens + a square grid")
    image_size = grid * patch
    fc1 = state["blocks.0.mlp.fc1.weight"].shape[0]
    fc2_in = state["blocks.0.mlp.fc2.weight"].shape[1]
    mlp = _mlp_kind(fc1, fc2_in, path)
    pcfg = cfg.get("pretrained_cfg") or {}
    mean = pcfg.get("mean") or (spec.mean if spec else specs_lib.IMAGENET_MEAN)
    std = pcfg.get("std") or (spec.std if spec else specs_lib.IMAGENET_STD)
    embedding = spec.embedding if spec else "cls"

    w = {}
    cls = _f32(state["cls_token"])
    regs = _f32(state["reg_token"]) if registers else None
    if prefix:  # class (and register) tokens have position embeddings: fold them in
        cls = cls + pos[None, :1]
        if registers:
            regs = regs + pos[None, 1:1 + registers]
    w["embeddings.cls_token"] = cls
    if registers:
        w["embeddings.register_tokens"] = regs
    w["embeddings.position_embeddings"] = np.concatenate(
        [np.zeros((1, dim), np.float32), pos[prefix:]])[None]
    w["embeddings.patch_embeddings.projection.weight"] = _f32(state["patch_embed.proj.weight"])
    w["embeddings.patch_embeddings.projection.bias"] = _f32(
        state.get("patch_embed.proj.bias", np.zeros(dim, np.float32)))
    for i in range(depth):
        t, h = f"blocks.{i}", f"encoder.layer.{i}"
        qkv = _f32(state[f"{t}.attn.qkv.weight"])
        qkv_b = _f32(state.get(f"{t}.attn.qkv.bias", np.zeros(3 * dim, np.float32)))
        for j, name in enumerate(("query", "key", "value")):
            w[f"{h}.attention.attention.{name}.weight"] = qkv[j * dim:(j + 1) * dim]
            w[f"{h}.attention.attention.{name}.bias"] = qkv_b[j * dim:(j + 1) * dim]
        w[f"{h}.attention.output.dense.weight"] = _f32(state[f"{t}.attn.proj.weight"])
        w[f"{h}.attention.output.dense.bias"] = _f32(state[f"{t}.attn.proj.bias"])
        for n in ("norm1", "norm2"):
            w[f"{h}.{n}.weight"] = _f32(state[f"{t}.{n}.weight"])
            w[f"{h}.{n}.bias"] = _f32(state[f"{t}.{n}.bias"])
        for ls, hs in (("ls1", "layer_scale1"), ("ls2", "layer_scale2")):
            w[f"{h}.{hs}.lambda1"] = _f32(state.get(f"{t}.{ls}.gamma", np.ones(dim, np.float32)))
        names = ("fc1", "fc2") if mlp == "gelu" else ("weights_in", "weights_out")
        for src, dst in zip(("fc1", "fc2"), names):
            w[f"{h}.mlp.{dst}.weight"] = _f32(state[f"{t}.mlp.{src}.weight"])
            w[f"{h}.mlp.{dst}.bias"] = _f32(state[f"{t}.mlp.{src}.bias"])
    w["layernorm.weight"] = _f32(state["norm.weight"])
    w["layernorm.bias"] = _f32(state["norm.bias"])
    config = dict(name=spec.name if spec else (arch or "vit"), source="timm", patch_size=patch,
                  dim=dim, depth=depth, heads=heads, mlp=mlp, mlp_hidden=fc1, registers=registers,
                  image_size=image_size, embedding=embedding, mean=list(map(float, mean)),
                  std=list(map(float, std)), layer_norm_eps=1e-6)
    return _finish(config, spec, path), w


_V5_NAMES = (  # transformers >= 5 saves Dinov2 under new names; the hubs hold the old ones
    (".attention.q_proj.", ".attention.attention.query."),
    (".attention.k_proj.", ".attention.attention.key."),
    (".attention.v_proj.", ".attention.attention.value."),
    (".attention.o_proj.", ".attention.output.dense."),
    (".mlp.down_proj.", ".mlp.weights_out."),
)


def _v4_names(state):
    """transformers 5 names -> the published (transformers 4) ones: the gate and up
    projections of a SwiGLU are the two halves of `weights_in`, gate first."""
    out = {}
    for key, value in state.items():
        for new, old in _V5_NAMES:
            key = key.replace(new, old)
        out[key] = value
    for key in [k for k in out if ".mlp.gate_proj." in k]:
        up = key.replace(".gate_proj.", ".up_proj.")
        out[key.replace(".gate_proj.", ".weights_in.")] = np.concatenate(
            [out.pop(key), out.pop(up)])
    return out


def _transformers(state, cfg, pre, spec, path):
    state = _v4_names(state)
    model_type = cfg.get("model_type", "dinov2")
    if cfg and model_type not in ("dinov2", "dinov2_with_registers"):
        raise ConversionError(f"{path}: model_type {model_type!r} is not a Dinov2 model")
    dim = state["embeddings.cls_token"].shape[-1]
    patch = state["embeddings.patch_embeddings.projection.weight"].shape[-1]
    depth = len({k.split(".")[2] for k in state if k.startswith("encoder.layer.")})
    registers = (state["embeddings.register_tokens"].shape[1]
                 if "embeddings.register_tokens" in state else 0)
    heads = cfg.get("num_attention_heads") or (spec.heads if spec else None)
    if heads is None:
        raise ConversionError(f"{path}: no config.json and no --arch: the number of heads is unknown")
    eps = float(cfg.get("layer_norm_eps", 1e-6))
    if eps != 1e-6:
        raise ConversionError(f"{path}: layer_norm_eps={eps} is not supported (1e-6 only)")
    if cfg.get("hidden_act", "gelu") != "gelu":
        raise ConversionError(f"{path}: hidden_act={cfg['hidden_act']!r} is not supported")
    if "encoder.layer.0.mlp.fc1.weight" in state:
        mlp, fc1 = "gelu", state["encoder.layer.0.mlp.fc1.weight"].shape[0]
    else:
        mlp, fc1 = "swiglu", state["encoder.layer.0.mlp.weights_in.weight"].shape[0]
    # Input size: the processor's crop, else the registry entry's, else the config's.
    crop = pre.get("crop_size") or pre.get("size") or {}
    crop = crop.get("height") or crop.get("shortest_edge") if isinstance(crop, dict) else crop
    image_size = int(crop or (spec.input_size if spec else cfg.get("image_size", 224)))
    grid = image_size // patch
    if grid * patch != image_size:
        raise ConversionError(f"{path}: input size {image_size} is not a multiple of patch {patch}")
    pos = _f32(state["embeddings.position_embeddings"])[0]
    antialias = model_type == "dinov2_with_registers"
    w = {k: _f32(v) for k, v in state.items() if k != "embeddings.mask_token"}
    w["embeddings.position_embeddings"] = np.concatenate(
        [pos[:1], resample_grid(pos[1:], grid, antialias)])[None]
    for i in range(depth):
        for n in ("layer_scale1", "layer_scale2"):
            w.setdefault(f"encoder.layer.{i}.{n}.lambda1", np.ones(dim, np.float32))
    mean = pre.get("image_mean") or (spec.mean if spec else specs_lib.IMAGENET_MEAN)
    std = pre.get("image_std") or (spec.std if spec else specs_lib.IMAGENET_STD)
    config = dict(name=spec.name if spec else "dinov2", source="transformers", patch_size=patch,
                  dim=dim, depth=depth, heads=int(heads), mlp=mlp,
                  mlp_hidden=fc1, registers=registers, image_size=image_size,
                  embedding=spec.embedding if spec else "cls", mean=list(map(float, mean)),
                  std=list(map(float, std)), layer_norm_eps=eps)
    return _finish(config, spec, path), w


def read_checkpoint(path, arch=None):
    """Reads a hub folder (config.json + model.safetensors) or a bare safetensors file.

    Args:
        path: The folder or file.
        arch: A published encoder name (`specs.ENCODERS`), required for a bare file; for a
            folder it supplies what the config leaves to code (embedding rule, MLP check).

    Returns:
        `(config, weights)` as described in the module docstring.

    Raises:
        ConversionError: unreadable or unsupported; the message names the file.
    """
    path = pathlib.Path(path)
    spec = specs_lib.get_encoder(arch) if arch else None
    cfg, pre = {}, {}
    if path.is_dir():
        weights_file = path / "model.safetensors"
        if not weights_file.is_file():
            raise ConversionError(f"{path}: no model.safetensors in this folder")
        if (path / "config.json").is_file():
            cfg = _read_json(path / "config.json")
        if (path / "preprocessor_config.json").is_file():
            pre = _read_json(path / "preprocessor_config.json")
    else:
        weights_file = path
        if spec is None:
            raise ConversionError(f"{path}: a bare safetensors file needs --arch "
                                  f"(one of {', '.join(specs_lib.ENCODERS)})")
    state = _strip_prefix(_load_safetensors(weights_file))
    layout = detect_layout(state)
    if cfg and layout == "timm" and "architecture" not in cfg:
        raise ConversionError(f"{path / 'config.json'}: timm weights but no 'architecture' in the config")
    try:
        if layout == "timm":
            return _timm(state, cfg, spec, weights_file)
        return _transformers(state, cfg, pre, spec, weights_file)
    except KeyError as e:
        raise ConversionError(f"{weights_file}: missing tensor {e.args[0]!r} for a {layout} ViT")
