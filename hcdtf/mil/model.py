"""Gated-attention MIL (Ilse et al. 2018; the attention branch of CLAM-SB, Lu et al. 2021) in Keras 3.

One bag is one call: the model's batch axis holds the bag's instances, so a bag of any length goes
through one traced graph (``[None, d]``) and nothing is padded to the largest bag::

    features   Input [n, d] float32      the bag's patch embeddings
    mil_norm   Normalization by the training instances' mean and variance (any encoder's scale)
    mil_fc     Dense(hidden, relu) + mil_dropout                        -> h [n, hidden]
    mil_attention_v / mil_attention_u   Dense(attention, tanh / sigmoid) -> gated [n, attention]
    mil_attention_w  Dense(1)                                            -> attention logits [n, 1]
    mil_pool   AttentionPool: softmax over the bag, weighted sum of h    -> [1, hidden], weights [n]
    mil_logit  Dense(1) float32 -> slide logit [1, 1];  probability = sigmoid

Outputs: ``{"logit": [1, 1], "probability": [1, 1], "attention": [n]}`` (attention sums to 1).
"""

from __future__ import annotations

import keras
from keras import ops

FEATURES = "features"


@keras.saving.register_keras_serializable(package="hcdtf")
class AttentionPool(keras.layers.Layer):
    """(h [n, k], attention logits [n, 1]) -> (softmax-weighted sum of h [1, k], weights [n])."""

    def call(self, inputs):
        h, logits = inputs
        weights = ops.softmax(ops.reshape(logits, (-1,)), axis=0)
        pooled = ops.sum(h * ops.expand_dims(weights, -1), axis=0, keepdims=True)
        return pooled, weights

    def compute_output_spec(self, inputs):
        h, logits = inputs
        return (keras.KerasTensor((1, h.shape[-1]), h.dtype), keras.KerasTensor((logits.shape[0],), h.dtype))


def build_abmil(dim: int, hidden: int = 128, attention: int = 64, dropout: float = 0.25,
                mean=None, variance=None) -> keras.Model:
    """The gated-attention MIL model for ``dim``-dimensional embeddings, standardised by ``mean`` and
    ``variance`` (per feature, of the training instances; none: 0 and 1)."""
    import numpy as np

    if dim < 1 or hidden < 1 or attention < 1:
        raise ValueError(f"dim, hidden and attention must be >= 1, got {dim}, {hidden}, {attention}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
    x = keras.Input(shape=(dim,), dtype="float32", name=FEATURES)
    mean = np.zeros(dim, np.float32) if mean is None else np.asarray(mean, np.float32)
    variance = np.ones(dim, np.float32) if variance is None else np.maximum(np.asarray(variance, np.float32), 1e-12)
    z = keras.layers.Normalization(mean=mean.tolist(), variance=variance.tolist(), name="mil_norm")(x)
    h = keras.layers.Dense(hidden, activation="relu", name="mil_fc")(z)
    h = keras.layers.Dropout(dropout, name="mil_dropout")(h)
    v = keras.layers.Dense(attention, activation="tanh", name="mil_attention_v")(h)
    u = keras.layers.Dense(attention, activation="sigmoid", name="mil_attention_u")(h)
    a = keras.layers.Dense(1, name="mil_attention_w")(keras.layers.Multiply(name="mil_gate")([v, u]))
    pooled, weights = AttentionPool(name="mil_pool")([h, a])
    logit = keras.layers.Dense(1, dtype="float32", name="mil_logit")(pooled)
    probability = keras.layers.Activation("sigmoid", dtype="float32", name="mil_probability")(logit)
    return keras.Model(x, {"logit": logit, "probability": probability, "attention": weights}, name="abmil")
