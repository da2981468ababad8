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

CLAM-SB (:func:`build_clam_sb`, Lu et al. 2021, CLAM's ``CLAM_SB`` written anew in Keras) adds one
instance classifier per class on ``h`` (``mil_instance_0`` / ``mil_instance_1``: Dense(2) each,
outputs ``instance_0`` / ``instance_1`` [n, 2]); :func:`instance_loss` trains the bag's class's
classifier to tell its k most attended patches (pseudo-label 1) from its k least attended (0),
which sharpens the attention. The slide probability and the attention are computed as above.
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


def build_clam_sb(dim: int, hidden: int = 128, attention: int = 64, dropout: float = 0.25,
                  mean=None, variance=None) -> keras.Model:
    """CLAM-SB: :func:`build_abmil`'s layers and outputs plus ``instance_0`` / ``instance_1`` [n, 2],
    the instance classifiers of the Normal and the Tumor class applied to every patch's ``h``."""
    base = build_abmil(dim, hidden, attention, dropout, mean, variance)
    h = base.get_layer("mil_dropout").output
    instances = {f"instance_{c}": keras.layers.Dense(2, dtype="float32", name=f"mil_instance_{c}")(h) for c in (0, 1)}
    return keras.Model(base.input, {**base.output, **instances}, name="clam_sb")


def build(head: str, dim: int, hidden: int = 128, attention: int = 64, dropout: float = 0.25,
          mean=None, variance=None) -> keras.Model:
    """The model of ``head`` (one of :data:`hcdtf.mil.HEADS`)."""
    from hcdtf.mil import HEADS

    builders = {"abmil": build_abmil, "clam_sb": build_clam_sb}
    if head not in builders:
        raise ValueError(f"unknown MIL head {head!r}; valid: {', '.join(HEADS)}")
    return builders[head](dim, hidden, attention, dropout, mean, variance)


def instance_loss(outputs: dict, label, k: int):
    """CLAM's instance-level clustering loss for a bag of class ``label`` (0/1, binary, no
    subtyping: only the bag's class's classifier is trained, as CLAM does): cross-entropy of that
    classifier on the k most attended patches as positives and the k least attended as negatives,
    k = min(``k``, n // 2); 0 for a bag of one patch."""
    import tensorflow as tf

    a = outputs["attention"]
    n = tf.shape(a)[0]
    kk = tf.minimum(tf.constant(k, tf.int32), n // 2)
    top = tf.math.top_k(a, kk).indices
    bottom = tf.math.top_k(-a, kk).indices
    logits = tf.where(label > 0.5, outputs["instance_1"], outputs["instance_0"])
    chosen = tf.gather(logits, tf.concat([top, bottom], 0))
    targets = tf.concat([tf.ones([kk], tf.int32), tf.zeros([kk], tf.int32)], 0)
    ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=targets, logits=chosen)
    return tf.math.divide_no_nan(tf.reduce_sum(ce), tf.cast(2 * kk, ce.dtype))
