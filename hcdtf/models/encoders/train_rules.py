"""Training rules for encoder classifiers: where a run's encoder weights come from, and
layer-wise learning-rate decay (LLRD) for `--fine-tune`.

Layer-wise decay (BEiT, Bao et al. 2021, as in its fine-tuning code): with `L` transformer blocks and decay `d`, the head learns at the full
rate, block `i` (0-based) at `d ** (L - i)`, and what comes before the first block (patch
projection, class/register tokens, position embeddings) at `d ** (L + 1)`; the final norm
belongs with the head. `layer_decay_multipliers` is that rule as a pure function;
`variable_multipliers` maps a built classifier's trainable variables to it by their paths.

No TensorFlow here except in `with_layer_decay` (Keras optimizers).
"""

import re


def resolve_run_weights(arch, weights, encoder_dir=None, fallback_to_scratch=False):
    """The weights argument a training run passes to the encoder classifier.

    `pretrained` / `imagenet` become the imported file's path (in `encoder_dir` if given, else
    `$KERAS_HOME/models`); a missing file is a `WeightsUnavailableError` even with
    `fallback_to_scratch`: a randomly initialised published encoder (300M-1.1B parameters)
    is not the model asked for, says nothing about pretraining and takes hours per epoch on a
    CPU. `model.weights=none` trains one from random initialisation on purpose.
    """
    from hcdtf.models.encoders import classifier
    from hcdtf.models.encoders import files
    from hcdtf.models.weights import WeightsUnavailableError

    if not classifier.is_pretrained(weights):
        return weights
    try:
        return str(files.pretrained_path(arch, encoder_dir))
    except WeightsUnavailableError as e:
        if fallback_to_scratch:
            raise WeightsUnavailableError(
                f"{e} (model.fallback_to_scratch applies to ResNets only: a random full-size "
                f"{arch} is not the pretrained encoder asked for; model.weights=none trains one "
                "from scratch on purpose)", path=e.path, url=e.url, hint=e.hint) from None
        raise


def layer_decay_multipliers(depth, decay):
    """`{"embed": m, 0: m0, ..., depth - 1: m_last, "head": 1.0}`: the learning-rate multiplier
    of the embeddings, of each transformer block and of the head (final norm, pooling, logit).

    >>> layer_decay_multipliers(2, 0.5)
    {'embed': 0.125, 0: 0.25, 1: 0.5, 'head': 1.0}
    """
    if int(depth) != depth or depth < 1:
        raise ValueError(f"depth should be a positive integer. Received: depth={depth!r}")
    if not 0.0 < decay <= 1.0:
        raise ValueError(f"decay should be in (0, 1]. Received: decay={decay!r}")
    out = {"embed": float(decay ** (depth + 1))}
    out.update({i: float(decay ** (depth - i)) for i in range(depth)})
    out["head"] = 1.0
    return out


_BLOCK = re.compile(r"^base_encoder/layers_(\d+)/")


def variable_group(path):
    """'embed', a block index, or 'head' for a variable path of the encoder classifier (the
    keras-hub DINOV2Backbone named `base`: `base_embeddings/...` (patch projection, tokens,
    position embeddings), `base_encoder/layers_<i>/...`, `base_layernorm/...`)."""
    m = _BLOCK.match(path)
    if m:
        return int(m.group(1))
    if path.startswith("base_embeddings/"):
        return "embed"
    return "head"


def variable_multipliers(model, decay):
    """`{variable.path: multiplier}` of `model`'s trainable variables (an encoder classifier
    with a `base` backbone)."""
    depth = int(model.get_layer("base").num_layers)
    table = layer_decay_multipliers(depth, decay)
    return {v.path: table[variable_group(v.path)] for v in model.trainable_variables}


def with_layer_decay(optimizer, multipliers):
    """Makes `optimizer` (a Keras 3 optimizer) scale the learning rate of each variable by
    `multipliers[variable.path]` (missing: 1). The scale is applied to the step's learning
    rate, not to the gradient, so it holds for Adam too (Adam's step ignores the gradient's
    scale). The optimizer's variables, and so exact resume, are unchanged."""
    base_update = optimizer.update_step

    def update_step(gradient, variable, learning_rate):
        # The backend hands over its own variable (TF: a tf.Variable without Keras' path): find
        # the Keras variable by the index every Keras optimizer keeps for its slots.
        path = optimizer._trainable_variables[optimizer._get_variable_index(variable)].path
        scale = multipliers.get(path, 1.0)
        return base_update(gradient, variable, learning_rate * scale if scale != 1.0 else learning_rate)

    optimizer.update_step = update_step
    optimizer.layer_decay_multipliers = dict(multipliers)
    return optimizer
