"""Stain normalisation inside the model: `MacenkoNormalization` and `ReinhardNormalization`.

Both are Keras layers that take a batch of RGB images (uint8 or float on [0, 255],
`(N, H, W, 3)`) and return the batch normalised to a fitted target, float32 on [0, 255], one
image at a time (each image's own statistics, as torchstain and TIAToolbox do). They sit before
`ImagePreprocessing` in a classifier, so the SavedModel and every format converted from it
(ONNX, OpenVINO, LiteRT) normalise by themselves.

In-graph, in plain TensorFlow ops that every converter takes:

- Macenko's eigen-decomposition of the 3x3 optical-density covariance is a fixed number of
  cyclic Jacobi rotations (no `tf.linalg.eigh`, which ONNX, OpenVINO and LiteRT lack);
- percentiles (Macenko's alpha / 100 - alpha angle percentiles and the 99th percentile of the
  concentrations) are `tf.math.top_k` over the few values of the tail they need, with NumPy's
  linear interpolation, so a 96x96 patch sorts ~100 values, not 9,216; and that top-k ranks only
  the pixels of the ~100 groups of 8 with the largest maxima (`_top_values`, exact);
- means and covariances are per-channel products and sums (no batched matmuls over the pixels);
- the 3x2 least-squares solve is the closed-form 2x2 normal equations.

Arithmetic follows torchstain's NumPy backend (`torchstain.normalizers.MacenkoNormalizer` and
`ReinhardNormalizer`, `method=None`) step by step; `tests/test_stain.py` checks the agreement.
The one deliberate difference: torchstain truncates its result to uint8, the layers keep float32.

Little tissue: an image with fewer than `min_tissue` (fraction of its pixels) tissue pixels
(all three optical densities >= beta, Macenko's own criterion), or whose statistics degenerate
(collinear stain vectors, zero concentrations or spread, anything not finite), is passed through
unchanged. `return_fallback=True` makes the layer also return that per-image boolean, which is
how `hcdtf stain apply` counts them.

The layers compute in float32 whatever the global dtype policy (`dtype` is forced), so a
`mixed_float16` / `mixed_bfloat16` model normalises exactly as the float32 one. They are
registered for `keras.saving` (`hcdtf>MacenkoNormalization`, `hcdtf>ReinhardNormalization`);
the target is part of the layer's config, saved with the model.

Target files (`hcdtf stain fit`) are JSON: ``{"format": "hcdtf-stain-target", "version": 1,
"method": "macenko"|"reinhard", "params": {layer arguments}, "n_images": K}``.
"""

from __future__ import annotations

import json
import math
import os

import keras
import numpy as np

from hcdtf.models.stain_params import (
    DEFAULT_ALPHA,
    DEFAULT_BETA,
    DEFAULT_IO,
    DEFAULT_MIN_TISSUE,
    METHODS,
    TARGET_FORMAT,
    TARGET_VERSION,
)

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_BETA",
    "DEFAULT_IO",
    "DEFAULT_MIN_TISSUE",
    "LAYERS",
    "METHODS",
    "TARGET_FORMAT",
    "TARGET_VERSION",
    "MacenkoNormalization",
    "ReinhardNormalization",
    "TargetError",
    "check_target",
    "fit_target",
    "layer_from_target",
    "macenko_augment",
    "macenko_augment_with",
    "macenko_stats",
    "read_target",
    "stain_layer",
    "symmetric_eig3",
]
# torchstain's default reference (HERef columns, maxCRef): the original implementation's.
MACENKO_REFERENCE_HE = ((0.5626, 0.7201, 0.4062), (0.2159, 0.8012, 0.5581))
MACENKO_REFERENCE_MAX_C = (1.9705, 1.0308)

# Reinhard: a channel spread below this (L*a*b* units; ~1 is a just-noticeable difference) is none:
# float32 rounding alone gives a flat image a spread of ~1e-4.
MIN_LAB_STD = 0.01
JACOBI_SWEEPS = 4  # cyclic Jacobi converges quadratically: 3x3 float32 is exact after 3 sweeps
_BIG = 1e30  # stands for "no value" in the top-k tails (finite: every runtime compares it)

# sRGB (D65) <-> XYZ and the white point, as torchstain's rgb2lab/lab2rgb use them.
_RGB2XYZ = np.array([[0.412453, 0.357580, 0.180423],
                     [0.212671, 0.715160, 0.072169],
                     [0.019334, 0.119193, 0.950227]])
_XYZ2RGB = np.linalg.inv(_RGB2XYZ)
_WHITE = (0.95047, 1.0, 1.08883)


class TargetError(ValueError):
    """A stain target file or target parameters are unusable."""


# ---------------------------------------------------------------------------------- graph parts
def _finite(x):
    """True where x is finite: |x| < 1e30 is False for NaN and inf (no IsFinite op needed)."""
    import tensorflow as tf

    return tf.abs(x) < _BIG


def _upper_percentile(x, p, valid=None, n_static=None):
    """np.percentile(x[b][valid[b]], p) for each row b of x [B, N], for p >= 50 (valid: bool or 0/1).

    The top k values (k = what the (100 - p) tail needs at most) are all that is sorted; NumPy's
    default linear interpolation between the two neighbouring order statistics."""
    import tensorflow as tf

    q = (100.0 - float(p)) / 100.0
    if valid is None:
        n = tf.fill(tf.shape(x)[:1], tf.cast(tf.shape(x)[1], tf.float32))
        masked = x
    else:
        w = tf.cast(valid, tf.float32)  # 1 valid, 0 not
        n = tf.reduce_sum(w, axis=1)
        masked = x + (w - 1.0) * _BIG  # (tf.where over [B, N] costs several times more)
    return _tail_percentile(masked, q, n, n_static)


def _tail_percentile(masked, q, n, n_static=None):
    """The value a fraction q (<= 0.5) of the way down from the top of each row's n valid values
    (the others are -1e30 in ``masked`` [B, N]), as np.percentile interpolates it."""
    import tensorflow as tf

    x = masked
    if n_static is not None:
        k = min(math.floor(q * (n_static - 1)) + 2, n_static)
    else:
        k = tf.shape(x)[1]
    top = _top_values(masked, k, n_static)  # [B, k], descending
    r = q * tf.maximum(n - 1.0, 0.0)  # position from the top
    lo = tf.floor(r)
    frac = r - lo
    hi = tf.minimum(lo + 1.0, tf.maximum(n - 1.0, 0.0))
    idx = tf.expand_dims(tf.cast(tf.range(tf.shape(top)[1]), tf.float32), 0)
    weights = (_col(1.0 - frac) * tf.cast(tf.equal(idx, _col(lo)), tf.float32)
               + _col(frac) * tf.cast(tf.equal(idx, _col(hi)), tf.float32))
    return tf.reduce_sum(tf.where(weights > 0, top, 0.0) * weights, axis=1)


TOP_GROUP = 8  # _top_values' group size


def _top_values(x, k, n_static=None):
    """tf.math.top_k(x, k).values (sorted, descending) for x [B, N], exactly, at a fraction of the
    cost when N is large: the N values form groups of TOP_GROUP; every one of the k largest values
    lies in one of the k groups with the largest maxima (a value outside them has k group maxima
    above or equal to it), so only those k * TOP_GROUP candidates are ranked. (Ties change which
    equal value is picked, never the values.)"""
    import tensorflow as tf

    if not isinstance(k, int) or n_static is None or n_static % TOP_GROUP or 4 * k * TOP_GROUP > n_static:
        return tf.math.top_k(x, k=k, sorted=True).values
    groups = tf.reshape(x, [-1, n_static // TOP_GROUP, TOP_GROUP])
    best = tf.math.top_k(tf.reduce_max(groups, axis=2), k=k, sorted=False).indices  # [B, k]
    candidates = tf.reshape(tf.gather(groups, best, batch_dims=1), [-1, k * TOP_GROUP])
    return tf.math.top_k(candidates, k=k, sorted=True).values


def _lower_percentile(x, p, valid=None, n_static=None):
    return -_upper_percentile(-x, 100.0 - float(p), valid, n_static)


def symmetric_eig3(a):
    """Eigenvalues [B, 3] and eigenvectors [B, 3, 3] (columns) of symmetric 3x3 matrices a
    [B, 3, 3], by cyclic Jacobi rotations in plain ops (unsorted; no eye/diag ops, which
    OpenVINO's TensorFlow front end lacks)."""
    import tensorflow as tf

    a = tf.convert_to_tensor(a, tf.float32)
    eye = tf.constant(np.eye(3, dtype=np.float32))
    v = tf.zeros_like(a) + eye
    for _ in range(JACOBI_SWEEPS):
        for p, q in ((0, 1), (0, 2), (1, 2)):
            pq = np.zeros((3, 3), np.float32)
            pq[p, q], pq[q, p] = 1.0, -1.0
            diag = np.zeros((3, 3), np.float32)
            diag[p, p] = diag[q, q] = 1.0
            entries = tf.unstack(tf.reshape(a, [-1, 9]), axis=1)
            apq, app, aqq = entries[3 * p + q], entries[4 * p], entries[4 * q]
            # Numerical Recipes' rotation: tan(theta) = t zeroes a[p, q].
            small = tf.abs(apq) <= 1e-30
            tau = (aqq - app) / (2.0 * tf.where(small, tf.ones_like(apq), apq))
            sign = tf.where(tau >= 0.0, 1.0, -1.0)
            t = sign / (tf.abs(tau) + tf.sqrt(1.0 + tf.minimum(tau * tau, _BIG)))
            t = tf.where(small, tf.zeros_like(t), t)
            c = 1.0 / tf.sqrt(1.0 + t * t)
            s = t * c
            rot = eye + _col(_col(c - 1.0)) * diag + _col(_col(s)) * pq
            a = tf.matmul(tf.matmul(rot, a, transpose_a=True), rot)
            v = tf.matmul(v, rot)
    entries = tf.unstack(tf.reshape(a, [-1, 9]), axis=1)
    return tf.stack([entries[0], entries[4], entries[8]], axis=1), v


def _col(x):
    """x with a trailing axis of 1 (tf.expand_dims: a [:, None] slice needs LiteRT's Flex ops)."""
    import tensorflow as tf

    return tf.expand_dims(x, -1)


def _channel(x, i):
    """x[..., i] without a strided slice."""
    import tensorflow as tf

    return tf.unstack(x, axis=-1)[i]


def _column(v, index):
    """v[b, :, index[b]] for v [B, 3, 3] and integer index [B] (a one-hot sum, no gather)."""
    import tensorflow as tf

    onehot = tf.cast(tf.equal(tf.expand_dims(tf.range(3), 0), _col(index)), tf.float32)
    return tf.reduce_sum(v * tf.expand_dims(onehot, 1), axis=2)


def _blend(mask, a, b):
    """a where mask (0/1 float) is 1, b where 0: exact for finite a and b, and several times cheaper
    than tf.where over an image batch on CPU."""
    return mask * a + (1.0 - mask) * b


def _tissue(rgb, io, beta):
    """1.0 where every optical density -log((v + 1) / io) >= beta, i.e. every channel value
    v <= io * exp(-beta) - 1 (the largest channel decides), else 0.0: [B, N]. (On the uint8
    input it would cost a quarter less, but LiteRT has no uint8 Maximum: a Flex op.)"""
    import tensorflow as tf

    r, g, b = tf.unstack(rgb, axis=-1)  # (2x faster than reduce_max over the 3-channel axis)
    return tf.cast(tf.maximum(tf.maximum(r, g), b) <= io * math.exp(-beta) - 1.0, tf.float32)


def _mean_cov(x, w=None):
    """Weighted mean [B, 3] and covariance [B, 3, 3] (divided by n - 1, as np.cov) of x [B, N, 3]
    over N, with weights w [B, N] (0/1; None: all), and n [B]; matmuls, not reductions over the
    3-channel axis."""
    import tensorflow as tf

    # Per channel [B, N] products and sums, not batched matmuls over N (whose 3x3 outputs cost
    # them 2-3x more here); centred first, as np.cov, so no precision is lost to the mean.
    channels = tf.unstack(x, axis=-1)
    if w is None:
        n = tf.fill(tf.shape(x)[:1], tf.cast(tf.shape(x)[1], tf.float32))
        weighted = channels
    else:
        n = tf.reduce_sum(w, axis=1)
        weighted = [c * w for c in channels]
    n_safe = tf.maximum(n, 2.0)
    means = [tf.reduce_sum(c, axis=1) / n_safe for c in weighted]
    centred = [c - _col(m) for c, m in zip(channels, means)]
    if w is not None:
        centred = [c * w for c in centred]
    entries = {}
    for i in range(3):
        for j in range(i, 3):
            entries[i, j] = entries[j, i] = tf.reduce_sum(centred[i] * centred[j], axis=1) / (n_safe - 1.0)
    cov = tf.reshape(tf.stack([entries[i, j] for i in range(3) for j in range(3)], axis=1), [-1, 3, 3])
    return tf.stack(means, axis=1), cov, n


def macenko_stats(rgb, io=DEFAULT_IO, alpha=DEFAULT_ALPHA, beta=DEFAULT_BETA, min_tissue=DEFAULT_MIN_TISSUE,
                  n_static=None):
    """Per-image Macenko estimates for rgb [B, N, 3] (float32 on [0, 255]).

    Returns a dict: `od` [B, N, 3] (optical densities), `t` [B, 2, N] (each pixel's optical
    density in the plane of the two main eigenvectors, torchstain's `That`), `h` and `e` [B, 3]
    (the H and E unit optical-density vectors), `projection` [B, 2, 3] (least-squares concentrations c = P od), `to_conc` [B, 2, 2]
    (the same from the plane: c = to_conc t), `max_c` [B, 2] (99th percentile of each
    concentration over all pixels), `ok` [B] (False: too little tissue or degenerate statistics;
    `projection` and `to_conc` are then zero, the rest meaningless).

    H and E lie in the plane, so P's rows do too and P od = P (basis^T t) exactly (in exact
    arithmetic): the concentrations come from the two plane coordinates per pixel, not the three
    optical densities (a [B, 2, 2] by [B, 2, N] product costs half the [B, 2, 3] by [B, N, 3]^T)."""
    import tensorflow as tf

    od = math.log(io) - tf.math.log(rgb + 1.0)
    w = _tissue(rgb, io, beta)
    mean, cov, n = _mean_cov(od, w)
    n_all = tf.cast(tf.shape(rgb)[1], tf.float32)
    values, vectors = symmetric_eig3(cov)
    first = tf.argmax(values, axis=1, output_type=tf.int32)
    last = tf.argmin(values, axis=1, output_type=tf.int32)
    last = tf.where(tf.equal(first, last), (first + 1) % 3, last)
    second = 3 - first - last
    v1 = _column(vectors, first)  # largest eigenvalue
    v2 = _column(vectors, second)
    # The eigenvectors' signs are arbitrary: point the main one along the tissue's mean optical
    # density, so the angles stay inside (-pi, pi] without wrapping (as the data lie).
    flip = tf.where(tf.reduce_sum(v1 * mean, axis=1) < 0.0, -1.0, 1.0)
    v1 = v1 * _col(flip)
    # torchstain: That = ODhat . eigvecs[:, 1:3] (second, largest); phi = atan2(That1, That0).
    basis = tf.stack([v2, v1], axis=1)  # [B, 2, 3]
    t = tf.matmul(basis, od, transpose_b=True)  # [B, 2, N]
    t0, t1 = tf.unstack(t, axis=1)
    phi = tf.math.atan2(t1, t0)
    penalty = (w - 1.0) * _BIG  # 0 on tissue, -1e30 elsewhere: the percentiles rank tissue only
    min_phi = -_tail_percentile(penalty - phi, alpha / 100.0, n, n_static)
    max_phi = _tail_percentile(phi + penalty, alpha / 100.0, n, n_static)
    v_min = v2 * _col(tf.cos(min_phi)) + v1 * _col(tf.sin(min_phi))
    v_max = v2 * _col(tf.cos(max_phi)) + v1 * _col(tf.sin(max_phi))
    # Haematoxylin first: the vector with the larger red optical density.
    h_first = _col(_channel(v_min, 0) > _channel(v_max, 0))
    h = tf.where(h_first, v_min, v_max)
    e = tf.where(h_first, v_max, v_min)
    # Least squares od ~ [h e] c: c = (M^T M)^-1 M^T od, the 2x2 inverse in closed form.
    hh, ee, he_dot = (tf.reduce_sum(h * h, 1), tf.reduce_sum(e * e, 1), tf.reduce_sum(h * e, 1))
    det = hh * ee - he_dot * he_dot
    ok = (n >= tf.maximum(min_tissue * n_all, 3.0)) & (det > 1e-6)
    inv_det = tf.where(ok, 1.0 / tf.where(ok, det, tf.ones_like(det)), tf.zeros_like(det))
    projection = tf.stack([_col(ee * inv_det) * h - _col(he_dot * inv_det) * e,
                           _col(hh * inv_det) * e - _col(he_dot * inv_det) * h], axis=1)  # [B, 2, 3]
    to_conc = tf.matmul(projection, basis, transpose_b=True)  # [B, 2, 2]: P basis^T
    conc = tf.matmul(to_conc, t)  # [B, 2, N]
    batch = tf.shape(conc)[0]
    max_c = tf.reshape(_upper_percentile(tf.reshape(conc, [batch * 2, -1]), 99.0, None, n_static), [batch, 2])
    ok = (ok & tf.reduce_all(max_c > 1e-6, axis=1) & tf.reduce_all(_finite(max_c), axis=1)
          & tf.reduce_all(_finite(tf.reshape(projection, [-1, 6])), axis=1))
    # (No tensor here may be left unused in a layer's graph: OpenVINO's converter makes every
    # dangling node an extra model output.)
    return {"od": od, "t": t, "h": h, "e": e, "projection": projection, "to_conc": to_conc, "max_c": max_c, "ok": ok}


def _tissue_ok(rgb, min_tissue):
    """[B]: at least `min_tissue` of the pixels are tissue by Macenko's default criterion."""
    import tensorflow as tf

    return tf.reduce_mean(_tissue(rgb, DEFAULT_IO, DEFAULT_BETA), axis=1) >= min_tissue


# CIE L*a*b* from f = (f(X/Xn), f(Y/Yn), f(Z/Zn)) is linear: lab = f @ _F2LAB + _LAB_OFFSET
# (L* = 116 fy - 16, a* = 500 (fx - fy), b* = 200 (fy - fz)), and back: f = lab @ _LAB2F + 16/116.
_F2LAB = np.array([[0.0, 500.0, 0.0], [116.0, -500.0, 200.0], [0.0, 0.0, -200.0]])
_LAB_OFFSET = np.array([-16.0, 0.0, 0.0])
_LAB2F = np.linalg.inv(_F2LAB)


# The piecewise curves below are written as  low(min(v, knee)) + high(max(v, knee)) - constant:
# exactly one of the two terms is at the knee, where both pieces meet, so the sum is the curve
# with no compare, cast or blend (each a pass over the pixels). The pieces of torchstain's
# constants meet to within 3e-7 (of f) and 2e-7 (of XYZ); the constants are those of the high
# piece, so above the knee the result is the same arithmetic as before.
_SRGB_KNEE = 0.04045 * 255.0
_F_KNEE = 0.008856
_CUBE_KNEE = 0.2068966
_LIN_KNEE = 0.0031308


def _lab_f(rgb):
    """f(XYZ / white) [B, N, 3] of rgb on [0, 255], as torchstain's rgb2lab computes it (sRGB
    linearisation, XYZ, the cube root or its linear part)."""
    import tensorflow as tf

    # (the /255 folded into the constants: each pass over the pixels counts)
    c = 1.0 / (255.0 * 12.92)
    lin = (tf.minimum(rgb, _SRGB_KNEE) * c - _SRGB_KNEE * c
           + tf.exp(2.4 * tf.math.log(tf.maximum(rgb, _SRGB_KNEE) * (1.0 / (255.0 * 1.055)) + 0.055 / 1.055)))
    xyz = tf.matmul(lin, tf.constant(_RGB2XYZ.T / np.array(_WHITE)[None, :], tf.float32))
    return (tf.minimum(xyz, _F_KNEE) * 7.787 - _F_KNEE * 7.787
            + tf.exp(tf.math.log(tf.maximum(xyz, _F_KNEE)) * (1.0 / 3.0)))


def _rgb_from_f(f, top=255.0):
    """rgb [B, N, 3] on [0, 255] (clipped to [0, top]; top [B, 1, 1] or a number) from f, as
    torchstain's lab2rgb (without its uint8 truncation)."""
    import tensorflow as tf

    g = tf.maximum(f, _CUBE_KNEE)
    xyz = tf.minimum(f, _CUBE_KNEE) * (1.0 / 7.787) - _CUBE_KNEE / 7.787 + g * tf.square(g)
    lin = tf.matmul(xyz, tf.constant((_XYZ2RGB * np.array(_WHITE)[None, :]).T, tf.float32))
    # (the *255 folded into both pieces)
    rgb = (tf.minimum(lin, _LIN_KNEE) * (255.0 * 12.92)
           + tf.exp(tf.math.log(tf.maximum(lin, _LIN_KNEE)) * (1.0 / 2.4)) * (255.0 * 1.055)
           - (_LIN_KNEE * 255.0 * 12.92 + 255.0 * 0.055))
    return tf.minimum(tf.maximum(rgb, 0.0), top)


def _add_per_image(x, offset, n_static):
    """x [B, N, 3] + offset [B, 3] per image. A broadcast over the 3-channel axis costs 3x a plain
    add here (TensorFlow's CPU kernels broadcast short inner dimensions slowly): viewed as [B, N / r,
    3 r] with the offset tiled r times, the broadcast runs over long rows."""
    import tensorflow as tf

    r = max((d for d in range(1, 1025) if n_static and n_static % d == 0), default=1)
    if r < 64:
        return x + tf.expand_dims(offset, 1)
    out = tf.reshape(x, [-1, n_static // r, 3 * r]) + tf.tile(tf.expand_dims(offset, 1), [1, 1, r])
    return tf.reshape(out, [-1, n_static, 3])


def lab_stats(rgb):
    """Per-image L*a*b* mean and (population) standard deviation, two [B, 3] tensors, and f."""
    import tensorflow as tf

    f = _lab_f(rgb)
    # L* = 116 fy - 16, a* = 500 (fx - fy), b* = 200 (fy - fz): the three spreads need only these
    # three planes (fewer passes than f's 3x3 covariance), centred before squaring as np.std.
    fx, fy, fz = tf.unstack(f, axis=-1)
    n = tf.cast(tf.shape(f)[1], tf.float32)
    planes = (fy, fx - fy, fy - fz)
    means = [tf.reduce_sum(p, axis=1) / n for p in planes]
    spreads = [tf.sqrt(tf.reduce_sum(tf.square(p - _col(m)), axis=1) / n) for p, m in zip(planes, means)]
    mean = tf.stack([116.0 * means[0] - 16.0, 500.0 * means[1], 200.0 * means[2]], axis=1)
    std = tf.stack([116.0 * spreads[0], 500.0 * spreads[1], 200.0 * spreads[2]], axis=1)
    return mean, std, f


def macenko_augment_with(images, factors, io=DEFAULT_IO, alpha=DEFAULT_ALPHA, beta=DEFAULT_BETA,
                         min_tissue=DEFAULT_MIN_TISSUE):
    """torchstain's `MacenkoAugmentor` with given factors: each image's H and E concentrations
    (its own Macenko estimate) become `c * a + b`, and the image is rebuilt from its own stain
    vectors. images [B, H, W, 3] (uint8 or float on [0, 255]); factors [B, 4] = (a_h, b_h, a_e,
    b_e). Returns float32 [B, H, W, 3] on [0, 255]; images with too little tissue unchanged."""
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    shape = tf.shape(images)  # (of the input: a shape of the cast would keep a second cast alive)
    flat = tf.cast(tf.reshape(images, [shape[0], -1, 3]), tf.float32)
    h, w = images.shape[1], images.shape[2]
    n_static = int(h) * int(w) if h is not None and w is not None else None
    stats = macenko_stats(flat, io, alpha, beta, min_tissue, n_static)
    a_h, b_h, a_e, b_e = tf.unstack(tf.cast(factors, tf.float32), axis=1)
    conc = tf.matmul(stats["to_conc"], stats["t"])  # [B, 2, N]
    c_h, c_e = tf.unstack(conc, axis=1)
    c_h = c_h * _col(a_h) + _col(b_h)
    c_e = c_e * _col(a_e) + _col(b_e)
    od = tf.expand_dims(c_h, -1) * tf.expand_dims(stats["h"], 1) + tf.expand_dims(c_e, -1) * tf.expand_dims(stats["e"], 1)
    out = tf.minimum(io * tf.exp(-od), 255.0)
    keep = _col(_col(tf.cast(stats["ok"], tf.float32)))
    out = _blend(keep, out, flat)  # where not ok the projection is zero: out = io * exp(-b h - b e), finite
    return tf.reshape(out, shape)


def macenko_augment(images, seed, sigma=0.2, **kwargs):
    """Random Macenko stain augmentation (torchstain's `MacenkoAugmentor`, sigma1 = sigma2 =
    `sigma`): per image, each stain's concentration is scaled by U(1 - sigma, 1 + sigma) and
    shifted by U(-sigma, sigma), drawn statelessly from `seed` (shape (2,)): same seed, same result."""
    import tensorflow as tf

    batch = tf.shape(images)[0]
    scale = tf.random.stateless_uniform([batch, 2], seed, 1.0 - sigma, 1.0 + sigma)
    shift = tf.random.stateless_uniform([batch, 2], seed + 1, -sigma, sigma)
    factors = tf.stack([scale[:, 0], shift[:, 0], scale[:, 1], shift[:, 1]], axis=1)
    return macenko_augment_with(images, factors, **kwargs)


# ---------------------------------------------------------------------------------- layers
class _StainNormalization(keras.layers.Layer):
    """Shared plumbing: float32 whatever the policy, (N, H, W, 3) <-> (N, H*W, 3)."""

    def __init__(self, min_tissue=DEFAULT_MIN_TISSUE, return_fallback=False, **kwargs):
        kwargs["dtype"] = "float32"  # normalisation is float32 even in a mixed-precision model
        super().__init__(**kwargs)
        if not 0.0 <= float(min_tissue) <= 1.0:
            raise ValueError(f"The `min_tissue` argument should be in [0, 1]. Received: min_tissue={min_tissue}")
        self.min_tissue = float(min_tissue)
        self.return_fallback = bool(return_fallback)

    def _normalize(self, rgb, n_static):
        """(images [B, N, 3] normalised where ok and exactly 0 elsewhere, ok [B])."""
        raise NotImplementedError

    def call(self, inputs):
        import tensorflow as tf

        inputs = tf.convert_to_tensor(inputs)
        shape = tf.shape(inputs)  # (of the input: a shape of the cast would keep a second cast alive)
        h, w = inputs.shape[1], inputs.shape[2]
        n_static = int(h) * int(w) if h is not None and w is not None else None
        flat = tf.cast(tf.reshape(inputs, [shape[0], -1, 3]), tf.float32)
        # out: the normalised images where ok, exactly 0 elsewhere (finite everywhere).
        out, ok = self._normalize(flat, n_static)
        # out where ok, else exactly the input: 2 passes (a per-image factor is a cheap broadcast).
        out = out + flat * _col(_col(1.0 - tf.cast(ok, tf.float32)))
        out = tf.reshape(out, shape)
        if self.return_fallback:
            return out, tf.logical_not(ok)
        return out

    def compute_output_shape(self, input_shape):
        if self.return_fallback:
            return tuple(input_shape), (input_shape[0],)
        return tuple(input_shape)

    def compute_output_spec(self, inputs):
        out = keras.KerasTensor(inputs.shape, dtype="float32")
        if self.return_fallback:
            return out, keras.KerasTensor((inputs.shape[0],), dtype="bool")
        return out

    def get_config(self):
        config = super().get_config()
        config.update({"min_tissue": self.min_tissue, "return_fallback": self.return_fallback})
        return config


def _vector(value, length, name):
    try:
        out = [float(v) for v in np.asarray(value, dtype=float).reshape(-1)]
    except (TypeError, ValueError):
        raise ValueError(f"The `{name}` argument should be {length} numbers. Received: {name}={value!r}") from None
    if len(out) != length or not all(math.isfinite(v) for v in out):
        raise ValueError(f"The `{name}` argument should be {length} finite numbers. Received: {name}={value!r}")
    return out


@keras.saving.register_keras_serializable(package="hcdtf")
class MacenkoNormalization(_StainNormalization):
    """Macenko et al. (ISBI 2009) stain normalisation of each image to a target.

    Args:
        stain_matrix: Target H and E optical-density vectors, `[[h_r, h_g, h_b], [e_r, e_g,
            e_b]]` (torchstain's `HERef` transposed). Default: torchstain's reference.
        max_concentrations: Target 99th percentiles of the H and E concentrations (torchstain's
            `maxCRef`). Default: torchstain's reference.
        io: Transmitted light intensity (240).
        alpha: Angle percentile, in percent (1).
        beta: Optical density below which a pixel counts as background (0.15).
        min_tissue: Smallest tissue fraction normalised; other images pass unchanged.
        return_fallback: Also return a bool `(N,)`: True where the image was passed unchanged.
    """

    def __init__(self, stain_matrix=MACENKO_REFERENCE_HE, max_concentrations=MACENKO_REFERENCE_MAX_C,
                 io=DEFAULT_IO, alpha=DEFAULT_ALPHA, beta=DEFAULT_BETA, min_tissue=DEFAULT_MIN_TISSUE,
                 return_fallback=False, **kwargs):
        super().__init__(min_tissue=min_tissue, return_fallback=return_fallback, **kwargs)
        flat = _vector(stain_matrix, 6, "stain_matrix")
        self.stain_matrix = [flat[:3], flat[3:]]
        self.max_concentrations = _vector(max_concentrations, 2, "max_concentrations")
        if min(self.max_concentrations) <= 0:
            raise ValueError("The `max_concentrations` argument should be positive. "
                             f"Received: max_concentrations={max_concentrations!r}")
        self.io, self.alpha, self.beta = float(io), float(alpha), float(beta)
        if not self.io > 0 or not 0 <= self.alpha < 50 or not self.beta >= 0:
            raise ValueError(f"Expected io > 0, 0 <= alpha < 50, beta >= 0. Received: io={io}, alpha={alpha}, "
                             f"beta={beta}")

    def _normalize(self, rgb, n_static):
        import tensorflow as tf

        stats = macenko_stats(rgb, self.io, self.alpha, self.beta, self.min_tissue, n_static)
        ok = stats["ok"]
        max_c = tf.where(_col(ok), stats["max_c"], tf.ones_like(stats["max_c"]))
        scale = tf.constant([self.max_concentrations], tf.float32) / max_c  # [B, 2]
        # od_out = (scale * P od) . stain_matrix: -od_out = od mapping, one 3x3 map per image (the
        # minus folded into it: exp(-x) costs a pass more than exp(x)). Where not ok, the map and
        # the gain are zero: the output is exactly 0 (exp(0) * 0; a map left finite but large could
        # overflow exp to inf, and inf * 0 is NaN). (From the plane coordinates t instead, the
        # product has K = 2 but needs t transposed: slower here.)
        ok_f = tf.cast(ok, tf.float32)
        mapping = -tf.matmul(stats["projection"] * _col(scale * _col(ok_f)),
                             tf.constant([self.stain_matrix], tf.float32), transpose_a=True)  # [B, 3, 3]
        gain = _col(_col(self.io * ok_f))  # [B, 1, 1]
        out = tf.minimum(tf.exp(tf.matmul(stats["od"], mapping)) * gain, 255.0)
        return out, ok

    def get_config(self):
        config = super().get_config()
        config.update({"stain_matrix": self.stain_matrix, "max_concentrations": self.max_concentrations,
                       "io": self.io, "alpha": self.alpha, "beta": self.beta})
        return config


@keras.saving.register_keras_serializable(package="hcdtf")
class ReinhardNormalization(_StainNormalization):
    """Reinhard et al. (2001) colour transfer in CIE L*a*b*: each image's per-channel mean and
    standard deviation are set to the target's (torchstain's `ReinhardNormalizer`).

    Args:
        means: Target L*, a*, b* means (L* on [0, 100]).
        stds: Target L*, a*, b* standard deviations (population).
        min_tissue: Smallest tissue fraction normalised (tissue: every optical density >= 0.15
            with Io 240, Macenko's criterion); other images, and images with a channel of no
            spread, pass unchanged.
        return_fallback: Also return a bool `(N,)`: True where the image was passed unchanged.
    """

    def __init__(self, means, stds, min_tissue=DEFAULT_MIN_TISSUE, return_fallback=False, **kwargs):
        super().__init__(min_tissue=min_tissue, return_fallback=return_fallback, **kwargs)
        self.means = _vector(means, 3, "means")
        self.stds = _vector(stds, 3, "stds")
        if min(self.stds) <= 0:
            raise ValueError(f"The `stds` argument should be positive. Received: stds={stds!r}")

    def _normalize(self, rgb, n_static):
        import tensorflow as tf

        mean, std, f = lab_stats(rgb)
        ok = _tissue_ok(rgb, self.min_tissue) & tf.reduce_all(std > MIN_LAB_STD, axis=1)
        scale = tf.constant([self.stds], tf.float32) / tf.where(_col(ok), std, tf.ones_like(std))
        scale = tf.where(_col(ok), scale, tf.ones_like(scale))
        shift = tf.constant([self.means], tf.float32) - mean * scale  # lab' = lab * scale + shift
        # f -> lab -> lab' -> f' is affine: f' = f @ (F2LAB diag(scale) LAB2F) + offset, per image.
        f2lab, lab2f = tf.constant(_F2LAB, tf.float32), tf.constant(_LAB2F, tf.float32)
        mapping = tf.matmul(tf.expand_dims(f2lab, 0) * tf.expand_dims(scale, 1), tf.expand_dims(lab2f, 0))
        offset = tf.matmul(tf.constant(_LAB_OFFSET[None, :], tf.float32) * scale + shift, lab2f) + 16.0 / 116.0
        top = _col(_col(255.0 * tf.cast(ok, tf.float32)))  # clipped to [0, 0] where not ok
        return _rgb_from_f(_add_per_image(tf.matmul(f, mapping), offset, n_static), top), ok

    def get_config(self):
        config = super().get_config()
        config.update({"means": self.means, "stds": self.stds})
        return config


LAYERS = {"macenko": MacenkoNormalization, "reinhard": ReinhardNormalization}


# ---------------------------------------------------------------------------------- targets
def _pixels(images):
    """All pixels of `images` (arrays [H, W, 3], any sizes) as one float32 [1, N, 3] tensor."""
    import tensorflow as tf

    arrays = [np.asarray(im) for im in images]
    if not arrays:
        raise TargetError("no images to fit a stain target to")
    for a in arrays:
        if a.ndim != 3 or a.shape[-1] != 3:
            raise TargetError(f"expected RGB images [H, W, 3], got shape {a.shape}")
    flat = np.concatenate([a.reshape(-1, 3).astype(np.float32) for a in arrays])
    return tf.constant(flat[None]), flat.shape[0]


def fit_target(images, method="macenko", io=DEFAULT_IO, alpha=DEFAULT_ALPHA, beta=DEFAULT_BETA,
               min_tissue=DEFAULT_MIN_TISSUE) -> dict:
    """The target (a dict, see the module docstring) fitted to all pixels of `images` together
    (as torchstain's `fit` on one image made of them). Raises TargetError if there is too little
    tissue to fit."""
    if method not in METHODS:
        raise TargetError(f"unknown stain normalisation method {method!r}; choose from {', '.join(METHODS)}")
    rgb, n = _pixels(images)
    if method == "macenko":
        stats = macenko_stats(rgb, float(io), float(alpha), float(beta), float(min_tissue), n_static=n)
        if not bool(stats["ok"].numpy()[0]):
            raise TargetError("too little tissue in the images to fit a Macenko target (fewer than "
                              f"{min_tissue:.0%} of the pixels have every optical density >= {beta})")
        params = {"stain_matrix": [stats["h"].numpy()[0].tolist(), stats["e"].numpy()[0].tolist()], "max_concentrations":
                  stats["max_c"].numpy()[0].tolist(), "io": float(io), "alpha": float(alpha), "beta": float(beta),
                  "min_tissue": float(min_tissue)}
    else:
        mean, std, _ = lab_stats(rgb)
        std = std.numpy()[0]
        if not np.all(std > MIN_LAB_STD):
            raise TargetError("the images have no colour spread to fit a Reinhard target to")
        params = {"means": mean.numpy()[0].tolist(), "stds": std.tolist(), "min_tissue": float(min_tissue)}
    return {"format": TARGET_FORMAT, "version": TARGET_VERSION, "method": method, "params": params,
            "n_images": len(images)}


def check_target(target, where="target") -> dict:
    """`target` (a dict) if it is a valid target; a TargetError naming `where` otherwise."""
    if not isinstance(target, dict) or target.get("format") != TARGET_FORMAT:
        raise TargetError(f"{where}: not an hcdtf stain target (no \"format\": \"{TARGET_FORMAT}\"; "
                          "write one with hcdtf stain fit)")
    if target.get("version") != TARGET_VERSION:
        raise TargetError(f"{where}: stain target version {target.get('version')!r}, expected {TARGET_VERSION}")
    if target.get("method") not in METHODS:
        raise TargetError(f"{where}: unknown method {target.get('method')!r}; expected one of {', '.join(METHODS)}")
    if not isinstance(target.get("params"), dict):
        raise TargetError(f"{where}: \"params\" should be an object of the layer's arguments")
    try:
        LAYERS[target["method"]](**target["params"])
    except (TypeError, ValueError) as e:
        raise TargetError(f"{where}: bad {target['method']} parameters ({e})") from None
    return target


def read_target(path) -> dict:
    """The target in the JSON file `path`, checked; TargetError naming the file otherwise."""
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            target = json.load(f)
    except FileNotFoundError:
        raise TargetError(f"{path}: stain target file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise TargetError(f"{path}: cannot be read as a JSON stain target ({e})") from None
    return check_target(target, path)


def stain_layer(stain, name="stain"):
    """A new normalisation layer named `name` from a target (dict or JSON file) or a copy of a
    stain layer (its config: the target travels with it)."""
    if isinstance(stain, _StainNormalization):
        config = {**stain.get_config(), "name": name, "return_fallback": False}
        return type(stain).from_config(config)
    return layer_from_target(stain, name=name)


def layer_from_target(target, name="stain", **kwargs):
    """The normalisation layer for `target` (a dict or a JSON file's path)."""
    if not isinstance(target, dict):
        target = read_target(target)
    target = check_target(target)
    return LAYERS[target["method"]](**{**target["params"], **kwargs}, name=name)
