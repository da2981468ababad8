"""Stain planes and optics: what a patch is painted on, and how it becomes RGB (Beer-Lambert).

Every pixel carries a haematoxylin concentration ``H`` (binds chromatin: nuclei, blue-purple)
and an eosin concentration ``E`` (binds protein: cytoplasm, collagen, red cells; pink). The
optical density is ``OD = k * (H * h + E * e)`` with per-patch stain vectors ``h``, ``e`` (the
standard H&E vectors, perturbed) and a per-patch intensity ``k``; the RGB value is
``I0 * exp(-OD)`` with sensor noise. Perturbing ``h``, ``e``, ``k`` and ``I0`` per patch gives
the slide-to-slide colour variation of real H&E (pinker/bluer, lighter/darker); a quarter of
the patches are slightly out of focus.
"""

from __future__ import annotations

import math

import numpy as np

from hcdtf.synthetic.draws import Draws
from hcdtf.synthetic.geometry import INNER, PATCH_SIZE, PW
from hcdtf.synthetic.tables import lookup_table
from hcdtf.synthetic.textures import noise

# Reference H&E optical-density vectors (R, G, B), as used for Macenko stain
# normalisation (Ruifrok & Johnston's eosin vector gives too magenta a pink).
H_OD = np.array([0.5626, 0.7201, 0.4062], dtype=np.float32)
E_OD = np.array([0.2159, 0.8012, 0.5581], dtype=np.float32)


class Stain:
    """The planes a patch is painted on.

    ``planes`` is (6, 96, 96) float32: haematoxylin ``h``, eosin ``e``, then a plane of ones
    and three of sensor noise that :func:`render` fills, so that the optics are one
    (3, 6) x (6, 96 * 96) matrix product. ``nuclei`` is the nuclear haematoxylin on a padded
    (PW, PW) canvas, painted with max; :func:`hcdtf.synthetic.tissue.chromatin` lays it over
    ``h``.
    """

    __slots__ = ("planes", "h", "e", "nuclei")

    def __init__(self) -> None:
        self.planes = np.empty((6, PATCH_SIZE, PATCH_SIZE), np.float32)
        self.h, self.e = self.planes[0], self.planes[1]
        self.nuclei = np.zeros((PW, PW), np.float32)

    def nuclei_inner(self) -> np.ndarray:
        """The patch's part of ``nuclei`` (a view)."""
        return self.nuclei[INNER, INNER]


@lookup_table
def gauss_kernel(sigma_q: int) -> np.ndarray:
    """Normalised 1-D Gaussian taps for sigma = sigma_q / 10 px."""
    sigma = sigma_q / 10.0
    r = max(1, int(math.ceil(2.5 * sigma)))
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    return k / k.sum()


@lookup_table
def blur_matrix(sigma_q: int, n: int = PATCH_SIZE) -> np.ndarray:
    """(n, n) Gaussian blur (sigma = sigma_q / 10 px) with mirrored borders:
    ``B @ img @ B.T`` blurs an (n, n) image."""
    k = gauss_kernel(sigma_q)
    r = len(k) // 2
    b = np.zeros((n, n))
    for i in range(n):
        for t in range(-r, r + 1):
            j = i + t
            j = -j - 1 if j < 0 else (2 * n - 1 - j if j >= n else j)
            b[i, j] += k[t + r]
    return b.astype(np.float32)


def blur_planes(x: np.ndarray, sigma_q: int) -> None:
    """Blur (c, 96, 96) planes in place (Gaussian, sigma_q / 10 px, mirrored
    borders) by banded block matrix products, each small enough that OpenBLAS
    runs it on one thread: it threads products from m * n * k = 262144 on,
    and threads only add contention for products this small."""
    b = blur_matrix(sigma_q)
    r = len(gauss_kernel(sigma_q)) // 2  # (<= 3: 48 * 51 * 96 < 262144)
    half = PATCH_SIZE // 2
    blocks = ((0, half, 0, half + r), (half, PATCH_SIZE, half - r, PATCH_SIZE))
    tmp = np.empty_like(x)
    for i0, i1, j0, j1 in blocks:
        np.matmul(b[i0:i1, j0:j1], x[:, j0:j1], out=tmp[:, i0:i1])
    for i0, i1, j0, j1 in blocks:
        x[:, :, i0:i1] = tmp[:, :, j0:j1] @ b[i0:i1, j0:j1].T


def render(d: Draws, stain: Stain, centre=None) -> np.ndarray:
    """The patch as uint8 (96, 96, 3) RGB: maybe out of focus, then this patch's stain vectors
    and intensity, Beer-Lambert absorption and sensor noise. ``centre`` (a
    :class:`hcdtf.synthetic.centres.CentreLook`, or None for the reference look) sets the stain
    vectors and dye gains the patch's own are drawn around, and the scanner's colour response;
    it draws nothing from the stream, so a patch's tissue is the same at every centre."""
    size = PATCH_SIZE
    he = stain.planes
    if d.chance(0.25):  # slightly out of focus (blurring H and E = blurring the OD)
        blur_planes(he[:2], int(round(d.uni(0.5, 1.2) * 10)))
    z = d.rng.standard_normal(11).tolist()
    k_od = d.uni(0.7, 1.3)
    h_ref, e_ref = (H_OD.tolist(), E_OD.tolist()) if centre is None else (list(centre.h_od), list(centre.e_od))
    h_vec = [abs(v + 0.07 * dz) for v, dz in zip(h_ref, z[0:3])]
    e_vec = [abs(v + 0.07 * dz) for v, dz in zip(e_ref, z[3:6])]
    h_scale = k_od * math.exp(0.22 * z[6]) / math.hypot(*h_vec)
    e_scale = k_od * math.exp(0.28 * z[7]) / math.hypot(*e_vec)
    if centre is not None:
        h_scale, e_scale = h_scale * centre.h_gain, e_scale * centre.e_gain
    i0 = d.uni(228.0, 252.0)
    # I = I0 * exp(-OD) * (1 + noise) = exp(log I0 - h_vec * H - e_vec * E + noise),
    # channels first; the sensor noise is uniform, with a standard deviation
    # of 1..4 grey levels in the light areas (+0.5: the cast to uint8 truncates)
    sigma = d.uni(1.0, 4.0) / 235.0
    optics = np.array(
        [
            [-h_scale * h_vec[c], -e_scale * e_vec[c], math.log(i0 + 4.0 * z[8 + c] + 0.5)]
            + [sigma if k == c else 0.0 for k in range(3)]
            for c in range(3)
        ],
        np.float32,
    )
    he[2] = 1.0
    he[3:] = noise(d, 3, size, size)
    img = (optics @ he.reshape(6, -1)).reshape(3, size, size)
    np.exp(img, out=img)
    if centre is not None:
        img = centre.scan(img)
    np.clip(img, 0.0, 255.0, out=img)
    image = np.empty((size, size, 3), np.uint8)
    for ch in range(3):
        image[..., ch] = img[ch]
    return image
