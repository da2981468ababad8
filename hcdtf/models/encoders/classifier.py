"""The binary patch classifier on a pathology encoder: the same layer names as the ResNet
classifier (`hcdtf.models.classifier`), so training, the frozen-base feature cache and the head
code work unchanged::

    image        Input (96, 96, 3) uint8
    preprocess   EncoderPreprocessing: [0, 1], bilinear resize to the encoder's input, mean/std
    base         keras-hub DINOV2Backbone (the encoder)
    head_pool    TokenPooling: the embedding the model card prescribes (cls or cls + mean)
    head_dropout Dropout
    head_logit   Dense(1), float32
    probability  sigmoid, float32

`transfer="freeze_base"` is eva's linear probe (the embeddings do not change, so the feature
cache computes them once); `"fine_tune"` trains the encoder too.
"""

import keras

from hcdtf.models import registry
from hcdtf.models.encoders import files
from hcdtf.models.encoders import specs as specs_lib
from hcdtf.models.encoders.model import EncoderPreprocessing
from hcdtf.models.encoders.model import TokenPooling
from hcdtf.models.encoders.model import build_backbone
from hcdtf.models.encoders.model import assign_weights


def spec_config(spec):
    """The canonical config of a published encoder's shape (for random initialisation)."""
    return dict(name=spec.name, source="registry", patch_size=spec.patch_size, dim=spec.dim,
                depth=spec.depth, heads=spec.heads, mlp=spec.mlp, mlp_hidden=spec.mlp_hidden,
                registers=spec.registers, image_size=spec.input_size, embedding=spec.embedding,
                mean=list(spec.mean), std=list(spec.std), layer_norm_eps=1e-6)


def is_pretrained(weights):
    """`--weights pretrained` (or `imagenet`, the config default) for an encoder."""
    return weights is not None and str(weights).lower() in ("pretrained", "imagenet")


def resolve_weights(arch, weights, weights_dir=None):
    """`(config, canonical weights or None, label)` for `weights`: `"pretrained"` (or
    `"imagenet"`, the config default) -> the imported file where `hcdtf weights import` puts it
    (in `weights_dir` if given); a path -> that encoder file (its encoder must be `arch`);
    None -> random, published shape."""
    spec = specs_lib.get_encoder(arch)
    if weights is None or str(weights).lower() == "none":
        return spec_config(spec), None, "none"
    path = files.pretrained_path(spec.name, weights_dir) if is_pretrained(weights) else weights
    config, w = files.read(path)
    if config["name"] != spec.name:
        raise ValueError(f"{path}: holds {config['name']} weights, not {spec.name} (--arch)")
    return config, w, str(path)


def build_encoder_classifier(arch, weights="pretrained", transfer="fine_tune", trainable_from=None,
                             dropout=0.2, input_shape=(96, 96, 3), name=None):
    """`build_classifier` for a published encoder (`registry.ENCODERS`); same arguments, except
    that `trainable_from` (a ResNet stage) does not apply."""
    if transfer not in registry.TRANSFERS:
        raise ValueError(f"The `transfer` argument should be one of {registry.TRANSFERS}. "
                         f"Received: transfer={transfer!r}")
    if trainable_from is not None:
        raise ValueError(f"trainable_from={trainable_from!r} names a ResNet stage; encoders "
                         "fine-tune whole (transfer='fine_tune') or not at all")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"The `dropout` argument should be in [0, 1). Received: dropout={dropout}")
    config, w, _ = resolve_weights(arch, weights)
    base = build_backbone(config, name="base", dtype=None)
    if w is not None:
        assign_weights(base, config, w)
    slug = files.slug(config["name"])
    return _assemble(base, config, transfer, dropout, input_shape, name or f"{slug}_{transfer}")


def rebuild_like(trained, transfer=None, dropout=None):
    """A new encoder classifier of `trained`'s shape, preprocessing and embedding rule under the
    current global dtype policy, with random weights (`set_weights(trained.get_weights())`
    next): what `hcdtf export` needs to get a float32 graph of a mixed-precision run. The shape
    comes from the trained model itself (keras-hub's backbone config), not from the registry's
    published shape, so a tiny or custom-size encoder run rebuilds as it was trained."""
    from keras_hub.models import DINOV2Backbone

    base_config = {**trained.get_layer("base").get_config(), "dtype": None}
    base = DINOV2Backbone.from_config(base_config)
    pre, pool = trained.get_layer("preprocess"), trained.get_layer("head_pool")
    config = {"image_size": pre.size, "mean": pre.mean, "std": pre.std, "embedding": pool.rule,
              "registers": pool.registers}
    if transfer is None:
        transfer = "fine_tune" if trained.get_layer("base").trainable else "freeze_base"
    if dropout is None:
        dropout = float(trained.get_layer("head_dropout").rate)
    return _assemble(base, config, transfer, dropout, tuple(trained.input.shape[1:]), trained.name)


def _assemble(base, config, transfer, dropout, input_shape, name):
    base.trainable = transfer == "fine_tune"
    inputs = keras.Input(shape=tuple(input_shape), dtype="uint8", name="image")
    x = EncoderPreprocessing(config["image_size"], config["mean"], config["std"], name="preprocess")(inputs)
    x = base({"images": x}, training=False) if transfer == "freeze_base" else base({"images": x})
    x = TokenPooling(config["embedding"], config["registers"], name="head_pool")(x)
    x = keras.layers.Dropout(dropout, name="head_dropout")(x)
    x = keras.layers.Dense(1, dtype="float32", name="head_logit")(x)
    outputs = keras.layers.Activation("sigmoid", dtype="float32", name="probability")(x)
    return keras.Model(inputs, outputs, name=name)
