"""The Camelyon16 protocol (hcdtf.slide.camelyon) against a brute-force version written here from
the protocol's text: evaluation mask, ITCs, hits, FROC curve and score, slide AUC."""

from __future__ import annotations

import collections
import itertools
import math

import numpy as np
import pytest

from hcdtf.slide import camelyon

MPP = 0.243
PIXEL_UM = MPP * 32  # level 5


# --------------------------------------------------------------------------- brute force
def bf_evaluation_mask(tumour: np.ndarray, pixel_um: float):
    """(list of lesions as sets of (r, c), set of indices that are ITCs)."""
    h, w = tumour.shape
    pts = np.argwhere(tumour)
    grid = np.argwhere(np.ones((h, w), bool))
    if len(pts):  # every pixel against every tumour pixel
        d2 = ((grid[:, None, :] - pts[None, :, :]) ** 2).sum(-1).min(axis=1)
        near = (np.sqrt(d2) < 75.0 / (2 * pixel_um)).reshape(h, w)
    else:
        near = np.zeros((h, w), bool)
    # fill holes: background not reachable from the border (4-connected) becomes lesion
    outside = np.zeros((h, w), bool)
    stack = [(r, c) for r in range(h) for c in range(w) if (r in (0, h - 1) or c in (0, w - 1)) and not near[r, c]]
    for r, c in stack:
        outside[r, c] = True
    while stack:
        r, c = stack.pop()
        for a, b in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
            if 0 <= a < h and 0 <= b < w and not near[a, b] and not outside[a, b]:
                outside[a, b] = True
                stack.append((a, b))
    filled = ~outside
    lesions, seen = [], np.zeros((h, w), bool)
    for r, c in itertools.product(range(h), range(w)):
        if filled[r, c] and not seen[r, c]:
            comp, queue = set(), collections.deque([(r, c)])
            seen[r, c] = True
            while queue:
                y, x = queue.popleft()
                comp.add((y, x))
                for dy, dx in itertools.product((-1, 0, 1), repeat=2):
                    a, b = y + dy, x + dx
                    if 0 <= a < h and 0 <= b < w and filled[a, b] and not seen[a, b]:
                        seen[a, b] = True
                        queue.append((a, b))
            lesions.append(comp)
    itcs = set()
    for k, comp in enumerate(lesions):
        coords = np.array(sorted(comp), float)
        cov = np.cov(coords.T, bias=True) if len(coords) > 1 else np.zeros((2, 2))
        tr, det = cov[0, 0] + cov[1, 1], cov[0, 0] * cov[1, 1] - cov[0, 1] ** 2
        largest = tr / 2 + math.sqrt(max(tr * tr / 4 - det, 0.0))
        if 4 * math.sqrt(largest) < 275.0 / pixel_um:
            itcs.add(k)
    return lesions, itcs


def bf_hits(lesions, itcs, tumour_slide: bool, detections):
    """(false-positive probabilities, per countable lesion: its best probability or None)."""
    best = {k: None for k in range(len(lesions)) if k not in itcs}
    fps = []
    for p, x, y in detections:
        if not tumour_slide:
            fps.append(p)
            continue
        cell = (int(y // 32), int(x // 32))
        owner = [k for k, comp in enumerate(lesions) if cell in comp]
        if not owner:
            fps.append(p)
        elif owner[0] not in itcs:
            k = owner[0]
            best[k] = p if best[k] is None else max(best[k], p)
    return fps, list(best.values())


def bf_froc(slides):
    """slides: list of (fps, lesion bests). Returns (points, score)."""
    all_fp = [p for fps, _ in slides for p in fps]
    all_best = [b for _, bests in slides for b in bests]
    probs = sorted(set(all_fp) | {b for b in all_best if b is not None}, reverse=True)
    points = [(0.0, 0.0)]
    for t in probs:
        fp = sum(1 for p in all_fp if p >= t) / len(slides)
        tp = sum(1 for b in all_best if b is not None and b >= t) / len(all_best)
        points.append((fp, tp))

    def at(rate):
        value = None
        for (f0, s0), (f1, s1) in zip(points, points[1:]):
            if f0 <= rate < f1:
                value = s0 + (s1 - s0) * (rate - f0) / (f1 - f0)
        if value is None:  # at or beyond the last point with fp <= rate: its sensitivity
            value = [s for f, s in points if f <= rate][-1]
        return value

    return points, sum(at(r) for r in (0.25, 0.5, 1, 2, 4, 8)) / 6


def bf_auc(labels, scores):
    pos = [s for l, s in zip(labels, scores) if l]
    neg = [s for l, s in zip(labels, scores) if not l]
    return sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg) / (len(pos) * len(neg))


# --------------------------------------------------------------------------- hand-built slides
def _disk(mask, r0, c0, radius):
    yy, xx = np.mgrid[: mask.shape[0], : mask.shape[1]]
    mask |= (yy - r0) ** 2 + (xx - c0) ** 2 <= radius ** 2


def _at(r, c):
    """Level-0 (x, y) of the centre of level-5 pixel (r, c)."""
    return c * 32 + 16, r * 32 + 16


def hand_built():
    """Three tumour slides and two normal ones, exercising ITCs, two detections in one lesion,
    merged lesions, a filled hole, detections on normal slides and tied probabilities."""
    a = np.zeros((70, 90), bool)
    a[10:30, 10:40] = True                       # a large lesion (L1)
    _disk(a, 55, 15, 1.5)                        # an ITC
    a[60:64, 45:58] = True                       # two rectangles 6 px apart: one lesion once dilated
    a[60:64, 64:80] = True
    yy, xx = np.mgrid[:70, :90]
    ring = (np.hypot(yy - 25, xx - 68) <= 16) & (np.hypot(yy - 25, xx - 68) >= 11)
    a |= ring                                    # a ring: its hole (r < 11 - 4.8) is filled
    det_a = [(0.9, *_at(15, 15)), (0.4, *_at(25, 35)),   # two detections in L1
             (0.95, *_at(55, 15)),                        # on the ITC: neither TP nor FP
             (0.4, *_at(45, 5)),                          # FP tied with L1's second detection
             (0.6, *_at(25, 68)),                         # in the ring's filled hole
             (0.7, *_at(62, 70)),                         # the merged pair
             (0.3, 5000.0, 2.0e6)]                        # outside the slide: a FP
    b = np.zeros((40, 40), bool)
    b[5:35, 5:12] = True                         # missed lesion
    det_b = [(0.2, *_at(35, 35)), (0.7, *_at(2, 30))]
    c = np.zeros((40, 40), bool)
    _disk(c, 20, 20, 2)                          # only an ITC: a tumour slide with nothing to find
    det_c = [(0.6, *_at(20, 20)), (0.6, *_at(2, 2))]
    det_n1 = [(0.95, *_at(3, 3)), (0.4, *_at(9, 9)), (0.1, *_at(1, 30))]
    det_n2 = [(0.7, *_at(4, 4))]
    return [(a, det_a), (b, det_b), (c, det_c), (None, det_n1), (None, det_n2)]


def _ours(slides):
    hits = []
    for mask, det in slides:
        p, x, y = (np.array(v, float) for v in zip(*det)) if det else (np.zeros(0),) * 3
        labels, itcs = camelyon.evaluation_mask(mask, PIXEL_UM) if mask is not None else (None, set())
        hits.append(camelyon.match(labels, itcs, p, x, y))
    return hits


def _brute(slides):
    out = []
    for mask, det in slides:
        if mask is None:
            out.append(bf_hits([], set(), False, det))
        else:
            lesions, itcs = bf_evaluation_mask(mask, PIXEL_UM)
            out.append(bf_hits(lesions, itcs, True, det))
    return out


def test_evaluation_mask_matches_brute_force():
    mask = hand_built()[0][0]
    labels, itcs = camelyon.evaluation_mask(mask, PIXEL_UM)
    lesions, bf_itcs = bf_evaluation_mask(mask, PIXEL_UM)
    ours = [{tuple(p) for p in np.argwhere(labels == k).tolist()} for k in range(1, labels.max() + 1)]
    assert sorted(map(sorted, ours)) == sorted(map(sorted, lesions))
    assert {frozenset(ours[k - 1]) for k in itcs} == {frozenset(lesions[k]) for k in bf_itcs}
    assert len(lesions) == 4 and len(bf_itcs) == 1  # L1, the ITC, the merged pair, the filled ring


def test_hits_and_froc_match_brute_force_on_hand_built_slides():
    slides = hand_built()
    ours, brute = _ours(slides), _brute(slides)
    for h, (fps, bests) in zip(ours, brute):
        assert sorted(h.fp.tolist()) == sorted(fps)
        assert sorted(h.lesion.tolist()) == sorted(-math.inf if b is None else b for b in bests)
    assert ours[0].itc_hits == 1 and ours[2].itc_hits == 1
    avg_fp, sens, _ = camelyon.froc_curve(ours)
    points, bf_score = bf_froc(brute)
    assert np.allclose(avg_fp, [f for f, _ in points]) and np.allclose(sens, [s for _, s in points])
    score, at = camelyon.froc_score(avg_fp, sens)
    assert score == pytest.approx(bf_score, abs=1e-12)
    # 4 lesions to find: L1 (0.9), the ring (0.6), the merged pair (0.7), the missed one in slide b
    assert sum(len(b) for _, b in brute) == 4
    assert 0 < score < 1


@pytest.mark.parametrize("seed", range(4))
def test_froc_matches_brute_force_on_random_slides(seed):
    rng = np.random.default_rng(seed)
    slides = []
    for k in range(5):
        mask = None
        if k < 3:
            mask = np.zeros((36, 36), bool)
            for _ in range(int(rng.integers(1, 5))):
                _disk(mask, *rng.integers(0, 36, 2), rng.uniform(0.5, 7))
        probs = np.round(rng.random(int(rng.integers(0, 12))), 1)  # one decimal: many ties
        det = [(float(p), float(rng.uniform(0, 36 * 32)), float(rng.uniform(0, 36 * 32))) for p in probs]
        slides.append((mask, det))
    ours, brute = _ours(slides), _brute(slides)
    n_lesions = sum(len(b) for _, b in brute)
    avg_fp, sens, _ = camelyon.froc_curve(ours)
    if n_lesions == 0:
        assert np.isnan(sens).all()
        return
    points, bf_score = bf_froc(brute)
    assert np.allclose(avg_fp, [f for f, _ in points]) and np.allclose(sens, [s for _, s in points])
    assert camelyon.froc_score(avg_fp, sens)[0] == pytest.approx(bf_score, abs=1e-12)


def test_sensitivity_on_vertical_steps_and_beyond_the_curve():
    avg_fp = np.array([0.0, 0.5, 0.5, 1.0, 3.0])
    sens = np.array([0.0, 0.2, 0.6, 0.6, 1.0])
    assert camelyon.sensitivity_at(avg_fp, sens, 0.25) == pytest.approx(0.1)
    assert camelyon.sensitivity_at(avg_fp, sens, 0.5) == pytest.approx(0.6)  # the top of the step
    assert camelyon.sensitivity_at(avg_fp, sens, 2.0) == pytest.approx(0.8)
    assert camelyon.sensitivity_at(avg_fp, sens, 8.0) == pytest.approx(1.0)   # flat beyond the last point


def test_slide_auc_matches_pairwise_count_with_ties():
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    scores = np.array([0.9, 0.4, 0.4, 0.4, 0.1, 0.95, 0.4, 0.7])
    result = camelyon.slide_auc(labels, scores, n_bootstrap=200)
    assert result["auc"] == pytest.approx(bf_auc(labels, scores))
    lo, hi = result["ci95"]
    assert 0 <= lo <= result["auc"] <= hi <= 1
    assert camelyon.slide_auc(np.ones(3), np.ones(3))["auc"] is None
