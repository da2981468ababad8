"""Keras encoders of the canonical ViT description: keras-hub's `DINOV2Backbone` with the
preprocessing and the embedding rule inside the model, like the ResNets' classifiers.

Layout (names are API: `hcdtf embed` and the classifier look layers up by name)::

    image       Input (H, W, 3) uint8, any size (the encoder's own size by default)
    preprocess  EncoderPreprocessing: float32 on [0, 1], bilinear resize to the encoder's
                input size (specs.RESIZE_INTERPOLATION says why), (x - mean) / std
    base        keras_hub DINOV2Backbone (class token, registers, patch tokens after the
                final LayerNorm); its position embeddings are already at the input grid
    embedding   TokenPooling: class token, or class token + mean of the patch tokens

keras-hub's backbone fits every published family once the converter has normalised the
weights (`hcdtf.models.encoders.convert`): DINOv2's layer scale (1 where a model has none),
registers without position embeddings, GELU MLP or SwiGLU (keras-hub's SwiGLUFFN rounds its
hidden width as DINOv2 does; a width it cannot express is refused, not approximated).
"""

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="hcdtf")
class EncoderPreprocessing(keras.layers.Layer):
    """uint8 RGB -> float32 on [0, 1] -> bilinear resize to `size` (half-pixel centres, no
    antialiasing: PyTorch's `F.interpolate(mode="bilinear", align_corners=False)`; skipped
    when the input already has that size) -> `(x - mean) / std`. Always float32."""

    def __init__(self, size, mean, std, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.size = int(size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)

    def call(self, inputs):
        x = ops.cast(inputs, "float32") / 255.0
        h, w = inputs.shape[1], inputs.shape[2]
        if h != self.size or w != self.size:
            x = ops.image.resize(x, (self.size, self.size), interpolation="bilinear",
                                 antialias=False)
        mean = ops.convert_to_tensor(np.asarray(self.mean, np.float32))
        std = ops.convert_to_tensor(np.asarray(self.std, np.float32))
        return (x - mean) / std

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.size, self.size, 3)

    def get_config(self):
        return {**super().get_config(), "size": self.size, "mean": self.mean, "std": self.std}


@keras.saving.register_keras_serializable(package="hcdtf")
class TokenPooling(keras.layers.Layer):
    """Tokens `(N, 1 + prefix + patches, D)` -> the embedding: `"cls"` (token 0) or
    `"cls_mean"` (token 0 concatenated with the mean of the patch tokens; the `registers`
    tokens after the class token are left out)."""

    def __init__(self, rule, registers=0, **kwargs):
        super().__init__(**kwargs)
        if rule not in ("cls", "cls_mean"):
            raise ValueError(f"rule should be 'cls' or 'cls_mean'. Received: rule={rule!r}")
        self.rule = rule
        self.registers = int(registers)

    def call(self, tokens):
        cls = tokens[:, 0]
        if self.rule == "cls":
            return cls
        patches = tokens[:, 1 + self.registers:]
        return ops.concatenate([cls, ops.mean(patches, axis=1)], axis=-1)

    def compute_output_shape(self, input_shape):
        d = input_shape[-1]
        return (input_shape[0], d if self.rule == "cls" else 2 * d)

    def get_config(self):
        return {**super().get_config(), "rule": self.rule, "registers": self.registers}


def _swiglu_intermediate(half):
    """keras-hub's SwiGLUFFN makes its hidden width `(int(i * 2 / 3) + 7) // 8 * 8` from
    `intermediate_dim=i`: the `i` giving `half`, or None."""
    for i in (half * 3 // 2, half * 3 // 2 + 1, (half * 3 + 1) // 2):
        if (int(i * 2 / 3) + 7) // 8 * 8 == half:
            return i
    return None


def build_backbone(config, name="base", dtype="float32"):
    """keras-hub `DINOV2Backbone` for a canonical config (random weights); `dtype=None` follows
    the global policy (keras-hub keeps softmax and LayerNorm in float32 under mixed ones)."""
    from keras_hub.models import DINOV2Backbone

    if config["mlp"] == "swiglu":
        intermediate = _swiglu_intermediate(config["mlp_hidden"] // 2)
        if intermediate is None:
            raise ValueError(
                f"SwiGLU hidden width {config['mlp_hidden'] // 2} is not a multiple of 8, which "
                "keras-hub's DINOV2Backbone cannot express")
    else:
        intermediate = config["mlp_hidden"]
    size = int(config["image_size"])
    return DINOV2Backbone(
        patch_size=config["patch_size"], num_layers=config["depth"], hidden_dim=config["dim"],
        num_heads=config["heads"], intermediate_dim=intermediate, layer_scale_init_value=1.0,
        num_register_tokens=config["registers"], use_mask_token=False,
        use_swiglu_ffn=config["mlp"] == "swiglu", image_shape=(size, size, 3),
        position_embedding_shape=(size, size, 3), dtype=dtype, name=name)


def assign_weights(backbone, config, w):
    """Sets a `build_backbone` model's variables from canonical weights (torch layouts)."""
    d, h = config["dim"], config["heads"]
    used = set()

    def get(key):
        used.add(key)
        return w[key]

    def assign(var, value):
        value = np.asarray(value, np.float32)
        if tuple(var.shape) != value.shape:
            raise ValueError(f"{var.path}: shape {tuple(var.shape)} != weights {value.shape}")
        var.assign(value)

    def dense(layer, key):
        assign(layer.kernel, get(f"{key}.weight").T)
        assign(layer.bias, get(f"{key}.bias"))

    def ln(layer, key):
        assign(layer.gamma, get(f"{key}.weight"))
        assign(layer.beta, get(f"{key}.bias"))

    emb = backbone.embeddings
    assign(emb.cls_token, get("embeddings.cls_token"))
    if config["registers"]:
        assign(emb.register_tokens, get("embeddings.register_tokens"))
    pos = get("embeddings.position_embeddings")
    assign(emb.position_embeddings, pos)
    assign(emb.interpolated_position_embeddings, pos)
    proj = emb.patch_embeddings.projection
    assign(proj.kernel, np.transpose(get("embeddings.patch_embeddings.projection.weight"),
                                     (2, 3, 1, 0)))
    assign(proj.bias, get("embeddings.patch_embeddings.projection.bias"))
    for i, layer in enumerate(backbone.encoder.layers):
        p = f"encoder.layer.{i}"
        ln(layer.norm1, f"{p}.norm1")
        mha = layer.attention.attention
        for name, dense_layer in (("query", mha.query_dense), ("key", mha.key_dense),
                                  ("value", mha.value_dense)):
            assign(dense_layer.kernel,
                   get(f"{p}.attention.attention.{name}.weight").T.reshape(d, h, d // h))
            assign(dense_layer.bias, get(f"{p}.attention.attention.{name}.bias").reshape(h, d // h))
        assign(mha.output_dense.kernel,
               get(f"{p}.attention.output.dense.weight").T.reshape(h, d // h, d))
        assign(mha.output_dense.bias, get(f"{p}.attention.output.dense.bias"))
        assign(layer.layer_scale1.lambda1, get(f"{p}.layer_scale1.lambda1"))
        ln(layer.norm2, f"{p}.norm2")
        if config["mlp"] == "swiglu":
            dense(layer.mlp.weights_in, f"{p}.mlp.weights_in")
            dense(layer.mlp.weights_out, f"{p}.mlp.weights_out")
        else:
            dense(layer.mlp.fc1, f"{p}.mlp.fc1")
            dense(layer.mlp.fc2, f"{p}.mlp.fc2")
        assign(layer.layer_scale2.lambda1, get(f"{p}.layer_scale2.lambda1"))
    ln(backbone.layernorm, "layernorm")
    unused = sorted(set(w) - used)
    if unused:
        raise ValueError(f"weights not used by the model: {', '.join(unused[:5])}"
                         + (" ..." if len(unused) > 5 else ""))


def build_encoder(config, weights=None, input_shape=None, name=None, dtype="float32"):
    """The embedding model: uint8 `(N, H, W, 3)` -> float32 `(N, features)`.

    Args:
        config: A canonical config (`hcdtf.models.encoders.convert.CONFIG_KEYS`).
        weights: Canonical weights to assign, or None (random initialisation).
        input_shape: `(H, W, 3)` of the images fed; default the encoder's own size;
            `(None, None, 3)` takes any size (resized inside the model).
        dtype: The backbone's dtype policy (`"mixed_bfloat16"`: float32 weights, bfloat16
            matmuls); preprocessing and the embedding stay float32.
    """
    size = int(config["image_size"])
    input_shape = tuple(input_shape or (size, size, 3))
    backbone = build_backbone(config, dtype=dtype)
    if weights is not None:
        assign_weights(backbone, config, weights)
    inputs = keras.Input(shape=input_shape, dtype="uint8", name="image")
    x = EncoderPreprocessing(size, config["mean"], config["std"], name="preprocess")(inputs)
    x = backbone({"images": x})
    outputs = TokenPooling(config["embedding"], config["registers"], dtype="float32", name="embedding")(x)
    return keras.Model(inputs, outputs, name=name or _model_name(config["name"]))


def _model_name(name):
    return "".join(c if c.isalnum() else "_" for c in str(name).lower())


def backbone_flops(backbone):
    """FLOPs per image of a keras-hub `DINOV2Backbone` at its input size, by the same count
    as `specs.vit_cost` (2 x multiply-adds of the matmuls), from the built layers' shapes."""
    from hcdtf.models.encoders import specs

    size = int(backbone.image_shape[0])
    grid = size // backbone.patch_size
    layer = backbone.encoder.layers[0]
    if backbone.use_swiglu_ffn:
        mlp_hidden = int(layer.mlp.weights_in.kernel.shape[-1])
    else:
        mlp_hidden = int(layer.mlp.fc1.kernel.shape[-1])
    _, flops = specs.vit_cost(backbone.hidden_dim, backbone.num_layers, mlp_hidden, backbone.patch_size,
                              grid * grid, 1 + backbone.num_register_tokens,
                              "swiglu" if backbone.use_swiglu_ffn else "gelu")
    return flops
