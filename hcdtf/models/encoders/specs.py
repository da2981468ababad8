"""Pathology foundation encoders by their published names: what each one is and needs.

An `EncoderSpec` says what the publisher's model card and hub files say about a model
(licence, gated access, input size, mean/std, the embedding the card prescribes) and what
its hub config leaves to code (the MLP kind of timm models whose `config.json` cannot name a
Python class). Shapes are only *documented* here: on import the checkpoint's own config
decides them, so a checkpoint of any size converts (the tests use tiny ones).

Embedding rules:

- `"cls"`: the final-norm class token (timm `global_pool="token"`, transformers
  `pooler_output`).
- `"cls_mean"`: the class token concatenated with the mean of the patch tokens (register
  tokens excluded), i.e. `2 * dim` features (Virchow2's and Midnight's model cards).

This module imports neither TensorFlow nor Keras.
"""

import dataclasses

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
EMBEDDING_RULES = ("cls", "cls_mean")
MLP_KINDS = ("gelu", "swiglu")
LAYOUTS = ("timm", "transformers")
# How a 96x96 PCam patch is brought to the encoder's input size, inside the model. Bilinear
# (half-pixel centres, no antialiasing: tf.image.resize == torch's F.interpolate with
# align_corners=False) because eva's PCam protocol, whose leaderboard is the reference column,
# upsamples with torchvision's Resize (bilinear) and because bicubic overshoots [0, 1] at the
# sharp nucleus edges when upsampling 2.3x.
RESIZE_INTERPOLATION = "bilinear"


@dataclasses.dataclass(frozen=True)
class EncoderSpec:
    """One published encoder.

    Attributes:
        name: The published name, e.g. `"H-optimus-0"`.
        hub_id: Where the publisher put the weights (Hugging Face repository).
        layout: `"timm"` (config.json with architecture/model_args/pretrained_cfg) or
            `"transformers"` (a Dinov2Config).
        timm_architecture: The timm architecture named in the hub config (timm layout).
        licence: The weights' licence as the model card states it.
        gated: Whether the hub asks users to accept conditions before downloading.
        input_size: Side of the square input the encoder was trained at (pixels).
        mean, std: RGB normalisation on [0, 1] from the model card / pretrained_cfg.
        embedding: One of `EMBEDDING_RULES`.
        patch_size, registers, dim, depth, heads, mlp_ratio: The published shape.
        mlp: `"gelu"` or `"swiglu"` (SwiGLU with SiLU, timm's SwiGLUPacked / DINOv2's
            SwiGLUFFN).
        layer_scale: Whether blocks scale their residual branches (DINOv2 LayerScale).
        eva_pcam: Balanced accuracy on PCam in eva's leaderboard (frozen encoder + linear
            probe), the published reference figure, or `None`.
        mpp: The resolution (um per pixel) its input patches should have: where a whole
            slide is read for this encoder (0.5 um/px, "20x", unless a source says otherwise).
        mpp_note: Where `mpp` comes from (checked 2026-12-06), or that no source states it.
    """

    name: str
    hub_id: str
    layout: str
    licence: str
    gated: bool
    input_size: int
    mean: tuple
    std: tuple
    embedding: str
    patch_size: int
    registers: int
    dim: int
    depth: int
    heads: int
    mlp_ratio: float
    mlp: str
    layer_scale: bool = True
    timm_architecture: str = ""
    eva_pcam: float = None
    mpp: float = 0.5
    mpp_note: str = "not stated in the sources checked; 0.5 um/px (20x) assumed"

    @property
    def features(self):
        """Width of the embedding."""
        return self.dim * (2 if self.embedding == "cls_mean" else 1)

    @property
    def mlp_hidden(self):
        """Width of the MLP's first layer as published (timm: int(dim * mlp_ratio); for
        SwiGLU both halves, i.e. gate and value together)."""
        return int(self.dim * self.mlp_ratio)

    def access_hint(self):
        """One line on how to get the weights."""
        if self.gated:
            how = (f"request access on https://huggingface.co/{self.hub_id} (gated; accept "
                   f"the {self.licence} conditions), then download the folder")
        else:
            how = f"download https://huggingface.co/{self.hub_id} (config.json + model.safetensors)"
        return f"{how} and run `hcdtf weights import <folder> --arch {self.name}`"


def _spec(**kw):
    return EncoderSpec(**kw)


SPECS = {
    s.name: s
    for s in (
        _spec(name="H-optimus-0", hub_id="bioptimus/H-optimus-0", layout="timm",
              timm_architecture="vit_giant_patch14_reg4_dinov2", licence="Apache-2.0", gated=True,
              input_size=224, mean=(0.707223, 0.578729, 0.703617), std=(0.211883, 0.230117, 0.177517),
              embedding="cls", patch_size=14, registers=4, dim=1536, depth=40, heads=24,
              mlp_ratio=2.66667 * 2, mlp="swiglu", eva_pcam=0.943,
              mpp_note="stated: 224 x 224 px extracted at 0.5 um/px (bioptimus/releases, H-optimus-0 README)"),
        _spec(name="Prov-GigaPath", hub_id="prov-gigapath/prov-gigapath", layout="timm",
              timm_architecture="vit_giant_patch14_dinov2", licence="Apache-2.0", gated=True,
              input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, embedding="cls", patch_size=16,
              registers=0, dim=1536, depth=40, heads=24, mlp_ratio=5.33334, mlp="swiglu",
              eva_pcam=0.945,
              mpp_note="stated: trained on 0.5 mpp slides, 256 px tiles centre-cropped to 224 "
                       "(prov-gigapath demo/1_slide_mpp_check.py and README)"),
        _spec(name="Midnight-12k", hub_id="kaiko-ai/midnight", layout="transformers",
              licence="MIT", gated=False, input_size=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
              embedding="cls_mean", patch_size=14, registers=0, dim=1536, depth=40, heads=24,
              mlp_ratio=2.66667 * 2, mlp="swiglu", eva_pcam=0.929,  # timm convention: both SwiGLU halves
              mpp_note="trained on 0.25, 0.5, 1 and 2 um/px tiles (arXiv 2504.05186), 224 px input "
                       "(model card): 0.5 um/px is our choice"),
        _spec(name="Hibou-B", hub_id="histai/hibou-b", layout="transformers", licence="Apache-2.0",
              gated=False, input_size=224, mean=(0.7068, 0.5755, 0.722), std=(0.195, 0.2316, 0.1816),
              embedding="cls", patch_size=14, registers=4, dim=768, depth=12, heads=12,
              mlp_ratio=4.0, mlp="gelu"),
        _spec(name="Hibou-L", hub_id="histai/hibou-L", layout="transformers", licence="Apache-2.0",
              gated=False, input_size=224, mean=(0.7068, 0.5755, 0.722), std=(0.195, 0.2316, 0.1816),
              embedding="cls", patch_size=14, registers=4, dim=1024, depth=24, heads=16,
              mlp_ratio=4.0, mlp="gelu", eva_pcam=0.955),
        _spec(name="Phikon-v2", hub_id="owkin/phikon-v2", layout="transformers",
              licence="Owkin non-commercial", gated=False, input_size=224, mean=IMAGENET_MEAN,
              std=IMAGENET_STD, embedding="cls", patch_size=16, registers=0, dim=1024, depth=24,
              heads=16, mlp_ratio=4.0, mlp="gelu", eva_pcam=0.894,
              mpp_note="stated: 224 px tiles at 20x, 0.5 um/px (Filiot et al. 2024, arXiv 2409.09173)"),
        _spec(name="UNI", hub_id="MahmoodLab/UNI", layout="timm",
              timm_architecture="vit_large_patch16_224", licence="CC-BY-NC-ND-4.0", gated=True,
              input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, embedding="cls", patch_size=16,
              registers=0, dim=1024, depth=24, heads=16, mlp_ratio=4.0, mlp="gelu", eva_pcam=0.937,
              mpp_note="stated: 256/512 px tiles at 20x, 0.5 um/px (Chen et al. 2024, Nature Medicine); "
                       "224 px input (mahmoodlab/UNI README)"),
        _spec(name="UNI2-h", hub_id="MahmoodLab/UNI2-h", layout="timm",
              timm_architecture="vit_giant_patch14_224", licence="CC-BY-NC-ND-4.0", gated=True,
              input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, embedding="cls", patch_size=14,
              registers=8, dim=1536, depth=24, heads=24, mlp_ratio=2.66667 * 2, mlp="swiglu",
              eva_pcam=0.950),
        _spec(name="Virchow2", hub_id="paige-ai/Virchow2", layout="timm",
              timm_architecture="vit_huge_patch14_224", licence="CC-BY-NC-ND-4.0", gated=True,
              input_size=224, mean=IMAGENET_MEAN, std=IMAGENET_STD, embedding="cls_mean",
              patch_size=14, registers=4, dim=1280, depth=32, heads=16, mlp_ratio=5.3375,
              mlp="swiglu", eva_pcam=0.938,
              mpp_note="mixed magnifications, 5x to 40x (2 to 0.25 um/px; arXiv 2408.00738, "
                       "'mixed magnification models'): 0.5 um/px is our choice"),
    )
}
ENCODERS = tuple(SPECS)


def canonical_encoder(name):
    """The published spelling of `name` (case-insensitive), or ValueError listing them."""
    for known in ENCODERS:
        if str(name).lower() == known.lower():
            return known
    raise ValueError(f"Unknown encoder {name!r}. Valid names are: {', '.join(ENCODERS)} "
                     "(case-insensitive).")


def get_encoder(name):
    return SPECS[canonical_encoder(name)]


def is_encoder(name):
    return str(name).lower() in {n.lower() for n in ENCODERS}


def vit_cost(dim, depth, mlp_hidden, patch_size, patches, prefix_tokens, mlp="gelu"):
    """`(params, flops)` of a ViT encoder per image, analytically (2 FLOPs per multiply-add
    of the matmuls: patch projection, qkv, attention scores and mixing, output projection,
    MLP; norms, biases and softmax not counted, as for the ResNets in `hcdtf.models.stats`).

    `patches` is the number of patch tokens, `prefix_tokens` the class and register tokens;
    `mlp_hidden` is the first MLP layer's width (for SwiGLU, gate and value together: its
    second layer takes half). Params include the tokens and the position embeddings.
    """
    tokens = patches + prefix_tokens
    mlp_out_in = mlp_hidden // 2 if mlp == "swiglu" else mlp_hidden
    per_block_params = (4 * dim * dim + 4 * dim  # qkv + proj
                        + dim * mlp_hidden + mlp_hidden + mlp_out_in * dim + dim
                        + 4 * dim + 2 * dim)  # two norms, two layer scales
    params = (3 * patch_size * patch_size * dim + dim + depth * per_block_params + 2 * dim
              + tokens * dim)
    per_block_flops = 2 * tokens * (4 * dim * dim + dim * mlp_hidden + mlp_out_in * dim)
    per_block_flops += 2 * 2 * tokens * tokens * dim  # q.k^T and attn.v
    flops = 2 * patches * 3 * patch_size * patch_size * dim + depth * per_block_flops
    return int(params), int(flops)


def spec_cost(spec):
    """`(params, flops per patch)` of a published encoder at its input size."""
    grid = spec.input_size // spec.patch_size
    return vit_cost(spec.dim, spec.depth, spec.mlp_hidden, spec.patch_size, grid * grid,
                    1 + spec.registers, spec.mlp)


def format_encoders_table():
    """The published encoders as a Markdown table: access, input, embedding, shape, cost."""
    lines = [
        "| Encoder | Licence | Gated | Input | um/px | Embedding | Patch | Registers | MLP | Dim x depth "
        "| Params | GFLOPs / patch | eva PCam bal. acc. |",
        "|---|---|---|---:|---:|---|---:|---:|---|---|---:|---:|---:|",
    ]
    for s in SPECS.values():
        params, flops = spec_cost(s)
        eva = f"{s.eva_pcam:.3f}" if s.eva_pcam is not None else "-"
        lines.append(
            f"| {s.name} | {s.licence} | {'yes' if s.gated else 'no'} | {s.input_size} "
            f"| {s.mpp:g}{'' if s.mpp_note.startswith('stated') else '*'} "
            f"| {s.embedding} ({s.features}) | {s.patch_size} | {s.registers} | {s.mlp} "
            f"| {s.dim} x {s.depth} | {params / 1e6:,.0f}M | {flops / 1e9:.1f} | {eva} |")
    lines.append(
        f"\nEncoders take the 96x96 patch resized to their input inside the model "
        f"({RESIZE_INTERPOLATION}), so GFLOPs are at that input; parameters and GFLOPs are "
        "computed from the published shapes (2 FLOPs per multiply-add of the matmuls). um/px: the "
        "resolution whole slides are read at for the encoder; * where no source states one "
        "resolution (mixed-magnification training, or not stated: `EncoderSpec.mpp_note` says which).")
    return "\n".join(lines)
