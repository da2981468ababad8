"""Model size and cost: parameters per transfer strategy, FLOPs per image.

FLOPs are computed analytically from the built model's layer configs and
output shapes (no profiler): every `Conv2D` contributes
`2 * H_out * W_out * C_out * k_h * k_w * C_in / groups` and every `Dense`
`2 * C_in * units`, i.e. two FLOPs per multiply-add. Biases, BatchNorm, ReLU,
additions and pooling are not counted (together well under 1% for these
networks). This is the convention of most papers that quote "FLOPs" as
2 x MACs; torchvision's model table quotes MACs ("GFLOPS" 1.81 for ResNet18
at 224x224 is 3.63 GFLOPs here).

Parameter counts are Keras' and include the BatchNorm moving mean/variance
(non-trainable); torchvision's `sum(p.numel() for p in parameters())`
corresponds to the trainable count with `transfer="fine_tune"` and the
1000-class top.
"""

import numpy as np

from hcdtf.models import registry

DEFAULT_INPUT_SHAPE = (96, 96, 3)


def count_params(model):
    """Returns `(total, trainable)` numbers of scalars in `model`'s weights.

    `total` includes non-trainable weights (BatchNorm moving statistics and
    anything frozen); `trainable` is what the optimizer updates.
    """
    total = sum(int(np.prod(w.shape)) for w in model.weights)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    return total, trainable


def _layer_flops(layer):
    import keras

    if isinstance(layer, keras.layers.Conv2D):
        # Output (N, H, W, C_out), channels last.
        _, h, w, c_out = layer.output.shape
        k_h, k_w = layer.kernel_size
        c_in = layer.kernel.shape[2]  # already divided by `groups`
        return 2 * h * w * c_out * k_h * k_w * c_in
    if isinstance(layer, keras.layers.Dense):
        c_in, units = layer.kernel.shape
        return 2 * c_in * units
    return 0


def _model_flops(model):
    import keras

    total = 0
    for layer in model.layers:
        if type(layer).__name__ == "DINOV2Backbone":  # an encoder: its Dense layers sit inside layers
            from hcdtf.models.encoders.model import backbone_flops

            total += backbone_flops(layer)
        elif isinstance(layer, keras.Model):
            total += _model_flops(layer)
        else:
            total += _layer_flops(layer)
    return total


def flops_per_image(arch, input_shape=DEFAULT_INPUT_SHAPE):
    """FLOPs (2 x multiply-adds of Conv2D and Dense layers) for one image.

    Args:
        arch: An architecture name (the classifier of `build_classifier` is
            built with random weights) or an already built `keras.Model`
            (counted as is; `input_shape` is then ignored).
        input_shape: `(height, width, 3)` of one image.

    Returns:
        An `int`, FLOPs per image (divide by 1e9 for GFLOPs).
    """
    import keras

    if isinstance(arch, keras.Model):
        model = arch
    else:
        from hcdtf.models.classifier import build_classifier

        model = build_classifier(arch, weights=None, input_shape=input_shape)
    return int(_model_flops(model))


def models_table(archs=registry.ARCHS, input_shape=DEFAULT_INPUT_SHAPE):
    """Size and cost of each architecture's classifier (`build_classifier`).

    Each classifier is built once with random weights; the strategies only
    change which weights are trainable.

    Returns:
        One dict per arch with keys `arch`, `depth`, `preprocessing`,
        `params_total`, `params_trainable_freeze_base`,
        `params_trainable_conv5` (`fine_tune` with `trainable_from="conv5"`),
        `params_trainable_fine_tune`, `flops` and `gflops` (per image of
        `input_shape`).
    """
    from hcdtf.models.classifier import build_classifier
    from hcdtf.models.classifier import set_base_trainable

    rows = []
    for arch in archs:
        spec = registry.get_arch(arch)
        model = build_classifier(
            spec.name, weights=None, input_shape=input_shape
        )
        base = model.get_layer("base")
        trainable = {}
        for key, transfer, trainable_from in (
            ("freeze_base", "freeze_base", None),
            ("conv5", "fine_tune", "conv5"),
            ("fine_tune", "fine_tune", None),
        ):
            set_base_trainable(base, transfer, trainable_from)
            total, trainable[key] = count_params(model)
        flops = flops_per_image(model)
        rows.append(
            {
                "arch": spec.name,
                "depth": spec.depth,
                "preprocessing": spec.preprocessing,
                "params_total": total,
                "params_trainable_freeze_base": trainable["freeze_base"],
                "params_trainable_conv5": trainable["conv5"],
                "params_trainable_fine_tune": trainable["fine_tune"],
                "flops": flops,
                "gflops": flops / 1e9,
            }
        )
        del model, base
    return rows


def format_models_table(rows, input_shape=DEFAULT_INPUT_SHAPE):
    """Renders `models_table()` rows as a Markdown table."""
    h, w = input_shape[:2]
    header = (
        "| Arch | Depth | Preprocessing | Params (total) "
        "| Trainable: freeze_base | Trainable: conv5+ | Trainable: fine_tune "
        f"| GFLOPs / {h}x{w} image |"
    )
    lines = [header, "|---|---:|---|---:|---:|---:|---:|---:|"]
    for row in rows:
        lines.append(
            f"| {row['arch']} | {row['depth']} | {row['preprocessing']} "
            f"| {row['params_total']:,} "
            f"| {row['params_trainable_freeze_base']:,} "
            f"| {row['params_trainable_conv5']:,} "
            f"| {row['params_trainable_fine_tune']:,} "
            f"| {row['gflops']:.3f} |"
        )
    return "\n".join(lines)
