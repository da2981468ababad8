"""Exact and near-duplicate patches: pixel digests, a 64-bit dHash, a banded index, and the
audit summary of a build (duplicates within and across splits, slides in several splits).

* Exact duplicates: equal SHA-256 digests (first 128 bits) of the decoded uint8 pixels (so a TIFF
  and the PNG made from it match, and so does a losslessly re-encoded copy).
* Near duplicates: the 64-bit difference hash (dHash): the luma (ITU-R 601) of the patch is
  box-averaged down to 9x8 cells and each bit says whether a cell is brighter than its left
  neighbour. Two patches whose pixels differ are near duplicates when their dHashes differ in at
  most ``threshold`` bits (default 4; the dataset card says how it was chosen). Patches with
  almost no detail (at least half of the steps between neighbouring cells below one grey level,
  e.g. blank background) are left out of the near search and counted: their bits are noise, and
  they would all match each other.
* Scale: multi-index hashing. The 64 bits are cut into ``threshold + 1`` bands; two hashes within
  ``threshold`` bits agree exactly on at least one band (pigeonhole), so only patches that share
  a band value are compared: about n * n / 2**(64 / (threshold + 1)) comparisons per band instead
  of n * n / 2 over all pairs.

numpy only (no TensorFlow): the builder calls it while it writes, ``hcdtf audit`` on a built set.
"""

from __future__ import annotations

import collections
import hashlib
import itertools

import numpy as np

DEFAULT_THRESHOLD = 4
MAX_THRESHOLD = 8
LOW_DETAIL_STEP = 1.0  # grey levels (0-255)
METHOD = {
    "exact": "SHA-256 (first 128 bits) of the decoded uint8 pixels",
    "near": "64-bit dHash: ITU-R 601 luma box-averaged to 9x8 cells, bit = cell brighter than its left "
    "neighbour; near duplicates differ in at most `threshold` bits (and not in every pixel)",
    "low_detail": f"patches with at least half of their 64 steps between neighbouring cells below "
    f"{LOW_DETAIL_STEP:g} grey level are left out of the near search",
}
_LUMA = np.array([0.299, 0.587, 0.114])
_EXAMPLES = 5


def _box_weights(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) averaging weights of a box filter (fractional coverage at cell edges)."""
    edges = np.arange(n_out + 1) * (n_in / n_out)
    left, right = edges[:-1, None], edges[1:, None]
    pixel = np.arange(n_in)[None, :]
    w = np.clip(np.minimum(right, pixel + 1) - np.maximum(left, pixel), 0, None)
    return w / w.sum(axis=1, keepdims=True)


_ROWS, _COLS = _box_weights(96, 8), _box_weights(96, 9).T


def image_hashes(images: np.ndarray) -> tuple[list[bytes], np.ndarray, np.ndarray]:
    """(pixel digests, dHashes as uint64, low-detail flags) of uint8 patches [N, 96, 96, 3] (or
    one [96, 96, 3]). Each patch's values do not depend on the others in the batch."""
    images = np.asarray(images, np.uint8)
    if images.ndim == 3:
        images = images[None]
    # SHA-256 rather than BLAKE2b: most x86 and ARM CPUs compute it in hardware.
    digests = [hashlib.sha256(np.ascontiguousarray(im).data).digest()[:16] for im in images]
    luma = images.astype(np.float64) @ _LUMA  # [N, 96, 96]
    cells = np.matmul(np.matmul(_ROWS, luma), _COLS)  # [N, 8, 9]
    steps = np.diff(cells, axis=2)  # [N, 8, 8]
    bits = (steps > 0).reshape(len(images), 64)
    dhash = np.packbits(bits, axis=1).view(">u8").ravel().astype(np.uint64)
    low_detail = np.count_nonzero(np.abs(steps).reshape(len(images), 64) < LOW_DETAIL_STEP, axis=1) >= 32
    return digests, dhash, low_detail


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2.0
        return np.bitwise_count(x)
    return np.unpackbits(x.view(np.uint8)).reshape(-1, 64).sum(1)


def _bands(threshold: int) -> list[tuple[int, int]]:
    """(shift, width) of threshold + 1 bands covering the 64 bits."""
    n = threshold + 1
    widths = [64 // n + (1 if k < 64 % n else 0) for k in range(n)]
    shifts = np.cumsum([0] + widths[:-1])
    return [(int(s), w) for s, w in zip(shifts, widths)]


def _run_pairs(order: np.ndarray, keys: np.ndarray, chunk: int = 1 << 22):
    """Yields (i, j) index arrays of every pair of ``order`` entries whose sorted ``keys`` are
    equal, in chunks of about ``chunk`` pairs (one bucket of any size never needs more)."""
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    sizes = np.diff(np.r_[starts, len(keys)])
    for size in np.unique(sizes[sizes >= 2]):
        run_starts = starts[sizes == size]
        if size * (size - 1) // 2 > chunk:  # one huge bucket: row by row
            for start in run_starts:
                for r in range(size - 1):
                    yield np.full(size - r - 1, order[start + r]), order[start + r + 1 : start + size]
            continue
        a, b = np.triu_indices(size, 1)
        step = max(1, chunk // len(a))
        for c in range(0, len(run_starts), step):
            base = run_starts[c : c + step, None]
            yield order[(base + a).ravel()], order[(base + b).ravel()]


def near_pairs(dhash: np.ndarray, candidates: np.ndarray, threshold: int = DEFAULT_THRESHOLD):
    """(i, j, distance) of every pair i < j of ``candidates`` (indices into ``dhash``) whose
    dHashes differ in at most ``threshold`` bits: exactly the brute-force answer, found through
    the banded index."""
    if not 0 <= threshold <= MAX_THRESHOLD:
        raise ValueError(f"near-duplicate threshold must be in 0..{MAX_THRESHOLD} bits, got {threshold}")
    dhash = np.asarray(dhash, np.uint64)
    candidates = np.asarray(candidates, np.int64)
    found = []
    for shift, width in _bands(threshold):
        keys = (dhash[candidates] >> np.uint64(shift)) & np.uint64((1 << width) - 1)
        order = np.argsort(keys, kind="stable")
        for i, j in _run_pairs(candidates[order], keys[order]):
            d = _popcount(dhash[i] ^ dhash[j])
            keep = d <= threshold
            lo, hi = np.minimum(i[keep], j[keep]), np.maximum(i[keep], j[keep])
            found.append(lo * len(dhash) + hi)
    pairs = np.unique(np.concatenate(found)) if found else np.zeros(0, np.int64)
    i, j = pairs // len(dhash), pairs % len(dhash)
    return i, j, _popcount(dhash[i] ^ dhash[j]).astype(np.int64)


class Records:
    """The hashes of every written example, by split (what the audit summary is computed from)."""

    def __init__(self):
        self.splits: list[str] = []
        self.ids: list[str] = []
        self.labels: list[int] = []
        self.digests: list[bytes] = []
        self.dhash: list[int] = []
        self.low_detail: list[bool] = []

    def add(self, split: str, id_: str, label: int, digest: bytes, dhash: int, low_detail: bool) -> None:
        self.splits.append(split)
        self.ids.append(id_)
        self.labels.append(int(label))
        self.digests.append(digest)
        self.dhash.append(int(dhash))
        self.low_detail.append(bool(low_detail))

    def add_batch(self, split: str, ids, labels, images: np.ndarray) -> None:
        digests, dhash, low = image_hashes(images)
        for args in zip(ids, labels, digests, dhash, low):
            self.add(split, *args)

    def __len__(self) -> int:
        return len(self.ids)


def _pair_key(a: str, b: str, order: dict[str, int]) -> str:
    return "/".join(sorted((a, b), key=lambda s: order[s]))


def exact_groups(digests: list[bytes]) -> list[list[int]]:
    """Indices of every group of >= 2 equal digests, each sorted, in order of first index."""
    where: dict[bytes, list[int]] = collections.defaultdict(list)
    for k, d in enumerate(digests):
        where[d].append(k)
    return [g for g in where.values() if len(g) > 1]


def cross_split_drops(splits: dict[str, str], digests: dict[str, bytes], priority: list[str]) -> dict[str, str]:
    """{id: split kept} for every copy to drop so that no pixels are in two splits of
    ``priority``: each group of equal pixels keeps its copies in the first split of ``priority``
    that holds one (evaluation splits first, so test stays as it is) and loses the others. Splits
    outside ``priority`` (kaggle_test) are never dropped from and do not cause drops."""
    rank = {s: k for k, s in enumerate(priority)}
    by_digest: dict[bytes, list[str]] = collections.defaultdict(list)
    for id_, split in splits.items():
        if split in rank:
            by_digest[digests[id_]].append(id_)
    drops = {}
    for ids in by_digest.values():
        keep = min((splits[i] for i in ids), key=rank.__getitem__)
        drops.update({i: keep for i in ids if splits[i] != keep})
    return drops


def _slides_summary(records: Records, slides: dict[str, str] | None, order: dict[str, int]) -> dict | None:
    if not slides:
        return None
    where: dict[str, set[str]] = collections.defaultdict(set)
    for id_, split in zip(records.ids, records.splits):
        if id_ in slides:
            where[slides[id_]].add(split)
    across: collections.Counter = collections.Counter()
    for splits in where.values():
        for a, b in itertools.combinations(sorted(splits, key=order.get), 2):
            across[f"{a}/{b}"] += 1
    several = sorted(s for s, sp in where.items() if len(sp) > 1)
    return {"slides": len(where), "in_several_splits": len(several), "across": dict(across),
            "examples": several[:_EXAMPLES]}


def _exact(records: Records, order: dict[str, int]):
    """Exact-duplicate counts, a group id per record (equal pixels, equal id) and examples."""
    within, across, examples, conflicts = collections.Counter(), collections.Counter(), [], 0
    groups = exact_groups(records.digests)
    group_of = np.arange(len(records))
    for g in groups:
        group_of[g] = g[0]
        splits = [records.splits[k] for k in g]
        for s, n in collections.Counter(splits).items():
            if n > 1:
                within[s] += n - 1
        for a, b in itertools.combinations(sorted(set(splits), key=order.get), 2):
            across[f"{a}/{b}"] += 1
        conflicts += len({records.labels[k] for k in g if records.labels[k] >= 0}) > 1
        examples.append({"kind": "exact", "ids": [records.ids[k] for k in g][:4], "splits": splits[:4], "bits": 0})
    summary = {"groups": len(groups), "within": dict(within), "across": dict(across), "label_conflicts": conflicts}
    return summary, group_of, examples


def _near(records: Records, group_of: np.ndarray, threshold: int, order: dict[str, int]):
    """Near-duplicate counts (pairs whose pixels differ) and examples."""
    low = np.array(records.low_detail, bool)
    i, j, d = near_pairs(np.array(records.dhash, np.uint64), np.flatnonzero(~low), threshold)
    not_exact = group_of[i] != group_of[j]
    within, across, examples = collections.Counter(), collections.Counter(), []
    for a, b, bits in zip(i[not_exact], j[not_exact], d[not_exact]):
        sa, sb = records.splits[a], records.splits[b]
        if sa == sb:
            within[sa] += 1
        else:
            across[_pair_key(sa, sb, order)] += 1
        examples.append({"kind": "near", "ids": [records.ids[a], records.ids[b]], "splits": [sa, sb],
                         "bits": int(bits)})
    summary = {"pairs": int(not_exact.sum()), "within": dict(within), "across": dict(across),
               "low_detail": int(low.sum())}
    return summary, examples


def summarize(records: Records, threshold: int = DEFAULT_THRESHOLD, slides: dict[str, str] | None = None,
              dropped: dict[str, int] | None = None) -> dict:
    """The audit summary stored in a build's metadata and printed by ``hcdtf audit`` (its keys are
    described in hcdtf/data/audit.py and tfds_builder/hcd/README.md)."""
    order = {s: k for k, s in enumerate(dict.fromkeys(records.splits))}
    exact, group_of, exact_examples = _exact(records, order)
    near, near_examples = _near(records, group_of, threshold, order)
    examples = sorted(exact_examples + near_examples,
                      key=lambda e: (len(set(e["splits"])) == 1, e["kind"] != "exact"))  # cross-split first
    summary = {
        "schema": 1,
        "method": dict(METHOD),
        "threshold": int(threshold),
        "examples_per_split": {s: records.splits.count(s) for s in order},
        "exact": exact,
        "near": near,
        "slides": _slides_summary(records, slides, order),
        "examples": examples[:_EXAMPLES],
    }
    if dropped is not None:
        summary["dropped"] = dict(dropped)
    summary["leaks"] = (sum(exact["across"].values()) + sum(near["across"].values())
                        + (summary["slides"] or {}).get("in_several_splits", 0))
    summary["headline"] = headline(summary)
    return summary


def headline(summary: dict) -> str:
    """One sentence for reports: what the audit found across and within splits."""
    ex, near, slides = summary["exact"], summary["near"], summary["slides"]
    parts = [
        f"exact duplicates: {sum(ex['across'].values())} groups across splits, "
        f"{sum(ex['within'].values())} extra copies within splits",
        f"near duplicates (dHash <= {summary['threshold']} bits): {sum(near['across'].values())} pairs "
        f"across splits, {sum(near['within'].values())} within",
        "slides in several splits: "
        + ("unknown (no slide map)" if slides is None else str(slides["in_several_splits"])),
    ]
    if summary.get("dropped"):
        parts.append(f"dropped before writing: {sum(summary['dropped'].values())} cross-split copies")
    return "; ".join(parts)
