"""Centres: the same tissue as K hospitals would stain and scan it (``sample-data --centres K``).

A real centre differs from another in two places, and a centre here does too:

* **Its stain.** Its own haematoxylin and eosin batches and protocol: other H and E optical-density
  vectors (the hue of each dye) and other amounts of each dye (staining time, section thickness).
  A centre's vectors replace the reference ``H_OD`` / ``E_OD`` that every patch's own variation
  (optics.render: +-0.07 per component, x exp(0.22 z) / exp(0.28 z) strengths) is drawn around, and
  its dye gains multiply that patch's strengths.
* **Its scanner's colour response.** A 3x3 colour cross-talk matrix (rows sum to 1), a gain per
  channel (white balance) and a gamma per channel, applied to the transmitted light
  ``I = I0 * exp(-OD)`` before quantisation: ``out_c = 255 * (sum_k M[c, k] * gain_k * I_k / 255) **
  gamma_c``.

Centre 0 is the reference look (the sample without centres); 1..4 are fixed, documented looks,
shifted well beyond the patch-to-patch variation inside a centre, so that a model trained on some
centres meets colours it has never seen on the held-out one (as between Camelyon17's hospitals):

====== ============================================== =========================================
centre stain                                          scanner
====== ============================================== =========================================
0      reference H and E vectors, gains 1             identity
1      paler H (0.70), more eosin (1.30), pinker E     warm: red gain 1.05, blue 0.90, gamma 0.85
2      bluer, stronger H (1.45), E 0.85                cool: blue gain 1.04, red 0.92, gamma 1.20
3      faded: H 0.65, E 0.65, purpler E                cross-talk 0.10, gamma 0.80 (washed out)
4      dark, brownish H (1.35), E 1.20                 yellow cast (blue 0.85), gamma 1.30
5..    drawn from SeedSequence(CENTRE_SEED, k): vectors +-0.12, gains exp(N(0, 0.3)), cross-talk
       N(0, 0.05), channel gains 1 + N(0, 0.04), gammas exp(N(0, 0.15))
====== ============================================== =========================================

A patch's centre is ``index % K`` (its index in its split), independent of its label and tissue,
so every centre has the same mix of tumour and normal patches and only its colours differ.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from hcdtf.synthetic.optics import E_OD, H_OD

CENTRE_SEED = 0xCE17_0017
CENTRES_CSV = "centres.csv"  # id,centre beside train_labels.csv: the builder reads it


@dataclasses.dataclass(frozen=True)
class CentreLook:
    """How centre ``index`` stains and scans (see the module docstring)."""

    index: int
    h_od: tuple[float, float, float]  # unit H optical-density vector (R, G, B)
    e_od: tuple[float, float, float]  # unit E optical-density vector
    h_gain: float  # multiplies every patch's haematoxylin strength
    e_gain: float  # multiplies every patch's eosin strength
    mix: tuple[tuple[float, float, float], ...]  # 3x3 colour cross-talk, rows sum to 1
    channel_gain: tuple[float, float, float]  # white balance
    gamma: tuple[float, float, float]

    def is_identity_scanner(self) -> bool:
        return (np.allclose(self.mix, np.eye(3)) and np.allclose(self.channel_gain, 1.0)
                and np.allclose(self.gamma, 1.0))

    def scan(self, light: np.ndarray) -> np.ndarray:
        """The scanner's response to transmitted light ``light`` (3, ...) float32 on [0, 255],
        channels first (what optics.render holds before quantising); float32, same shape."""
        if self.is_identity_scanner():
            return light
        m = np.asarray(self.mix, np.float32) * np.asarray(self.channel_gain, np.float32)[None, :]
        flat = m @ np.clip(light, 0.0, 255.0).reshape(3, -1) / np.float32(255.0)
        np.clip(flat, 1e-6, 1.0, out=flat)
        gamma = np.asarray(self.gamma, np.float32)[:, None]
        out = np.float32(255.0) * np.exp(gamma * np.log(flat))
        return out.reshape(light.shape).astype(np.float32, copy=False)


def _unit(v) -> tuple[float, float, float]:
    v = np.abs(np.asarray(v, np.float64))
    return tuple(float(x) for x in v / np.linalg.norm(v))


def _crosstalk(k: float) -> tuple[tuple[float, float, float], ...]:
    m = np.full((3, 3), k / 2.0) + np.eye(3) * (1.0 - 1.5 * k)
    return tuple(tuple(float(x) for x in row) for row in m)


# The fixed looks of centres 0..4 (documented in the module docstring).
_FIXED = {
    0: dict(h=H_OD, e=E_OD, hg=1.0, eg=1.0, mix=0.0, cg=(1.0, 1.0, 1.0), gamma=(1.0, 1.0, 1.0)),
    1: dict(h=H_OD + [0.06, -0.02, 0.02], e=E_OD + [-0.06, 0.08, -0.02], hg=0.70, eg=1.30, mix=0.0,
            cg=(1.05, 1.0, 0.90), gamma=(0.85, 0.85, 0.85)),
    2: dict(h=H_OD + [0.10, 0.02, -0.10], e=E_OD + [0.02, -0.04, 0.06], hg=1.45, eg=0.85, mix=0.0,
            cg=(0.92, 1.0, 1.04), gamma=(1.20, 1.20, 1.20)),
    3: dict(h=H_OD + [-0.06, 0.0, 0.10], e=E_OD + [0.10, 0.0, -0.10], hg=0.65, eg=0.65, mix=0.10,
            cg=(1.0, 1.0, 1.0), gamma=(0.80, 0.80, 0.80)),
    4: dict(h=H_OD + [-0.12, 0.04, 0.12], e=E_OD + [0.0, -0.06, 0.10], hg=1.35, eg=1.20, mix=0.0,
            cg=(1.0, 1.0, 0.85), gamma=(1.30, 1.30, 1.30)),
}


@functools.cache
def centre_look(index: int) -> CentreLook:
    """The look of centre ``index`` (>= 0): fixed for 0..4, drawn from its own stream above."""
    index = int(index)
    if index < 0:
        raise ValueError(f"centre index must be >= 0, got {index}")
    if index in _FIXED:
        f = _FIXED[index]
        return CentreLook(index, _unit(f["h"]), _unit(f["e"]), f["hg"], f["eg"], _crosstalk(f["mix"]),
                          tuple(f["cg"]), tuple(f["gamma"]))
    rng = np.random.default_rng(np.random.SeedSequence(CENTRE_SEED, spawn_key=(index,)))
    h = _unit(H_OD + rng.normal(0.0, 0.12, 3))
    e = _unit(E_OD + rng.normal(0.0, 0.12, 3))
    hg, eg = (float(x) for x in np.exp(rng.normal(0.0, 0.3, 2)))
    mix = np.eye(3) + np.abs(rng.normal(0.0, 0.05, (3, 3))) * (1 - np.eye(3))
    mix = mix / mix.sum(axis=1, keepdims=True)
    cg = tuple(float(x) for x in 1.0 + rng.normal(0.0, 0.04, 3))
    gamma = tuple(float(x) for x in np.exp(rng.normal(0.0, 0.15, 3)))
    return CentreLook(index, h, e, hg, eg, tuple(tuple(float(x) for x in r) for r in mix), cg, gamma)


def centre_of(index: int, centres: int) -> int:
    """The centre of the patch ``index`` of its split in a sample of ``centres`` centres."""
    return int(index) % int(centres)


def check_centres(centres: int | None) -> None:
    if centres is not None and not (isinstance(centres, int) and 1 <= centres <= 100):
        raise ValueError(f"centres must be an integer in 1..100 (or None), got {centres!r}")
