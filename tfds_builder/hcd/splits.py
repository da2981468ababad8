"""Which split (or fold) each labelled Kaggle patch goes to: deterministic, stratified, and by
slide when a patch-to-slide map is given.

Every decision comes from a SHA-256 hash of the id (or slide) salted with the split seed, so every
machine and Python version gets the same splits, whatever the order of the CSV rows.
"""

from __future__ import annotations

import collections
import hashlib


class SplitError(ValueError):
    """The labelled data cannot be split as asked (e.g. a split would be empty)."""


def unit_hash(text: str, seed: int) -> float:
    """A uniform number in [0, 1) from a stable hash: the same on every machine and Python."""
    digest = hashlib.sha256(f"{seed}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def _groups(labelled, slides):
    """{group: [ids]} and {group: 1 if any patch of the group is tumour} (group = slide or id)."""
    groups: dict[str, list[str]] = collections.defaultdict(list)
    group_label: dict[str, int] = {}
    for id_, label in labelled:
        g = slides[id_] if slides else id_
        groups[g].append(id_)
        group_label[g] = max(group_label.get(g, 0), label)
    return groups, group_label


def assign_splits(
    labelled: list[tuple[str, int]],
    validation_fraction: float,
    test_fraction: float,
    seed: int = 0,
    slides: dict[str, str] | None = None,
) -> dict[str, str]:
    """Maps each id to "train", "validation" or "test", deterministically and stratified.

    Without slides: within each label, ids ordered by hash; the first round(n*test_fraction) go
    to test, the next round(n*validation_fraction) to validation. With slides: whole slides are
    assigned the same way, stratified by whether the slide holds any tumour patch, filling each
    split up to its share of the patches, so no slide crosses splits. The test split depends only
    on ``test_fraction`` (it is filled first), so fold builds share it.
    """
    for name, frac in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= frac < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {frac!r}")
    if validation_fraction + test_fraction >= 1.0:
        raise ValueError("validation_fraction + test_fraction must be < 1")
    groups, group_label = _groups(labelled, slides)
    assignment: dict[str, str] = {}
    for stratum in (0, 1):
        members = sorted((g for g in groups if group_label[g] == stratum), key=lambda g: (unit_hash(g, seed), g))
        total = sum(len(groups[g]) for g in members)
        targets = (("test", round(total * test_fraction)), ("validation", round(total * validation_fraction)))
        filled = {"test": 0, "validation": 0}
        k = 0
        for split, target in targets:
            while k < len(members) and filled[split] < target:
                # For slides, stop before a slide that would overshoot more than it fills.
                size = len(groups[members[k]])
                if slides and filled[split] > 0 and filled[split] + size - target > target - filled[split]:
                    break
                for id_ in groups[members[k]]:
                    assignment[id_] = split
                filled[split] += size
                k += 1
        for g in members[k:]:
            for id_ in groups[g]:
                assignment[id_] = "train"
    return assignment


def assign_folds(
    labelled: list[tuple[str, int]],
    folds: int,
    seed: int = 0,
    slides: dict[str, str] | None = None,
) -> dict[str, int]:
    """Maps each id to a fold in 0..folds-1, deterministically and stratified by label.

    Without slides: within each label, ids ordered by hash go to folds 0, 1, ..., K-1, 0, ...
    (fold sizes per label differ by at most one). With slides: whole slides, stratified by whether
    the slide holds any tumour patch; within a stratum the largest slides are placed first, each on
    the fold with the fewest patches so far (ties: hash order, then the lower fold), so no slide is
    in two folds and the folds come out as even as the slide sizes allow.
    """
    if folds < 2:
        raise SplitError(f"folds must be at least 2, got {folds}")
    groups, group_label = _groups(labelled, slides)
    if slides and len(groups) < folds:
        raise SplitError(
            f"--folds {folds}: the train+validation pool holds only {len(groups)} slides, and a slide "
            f"cannot be split across folds: use at most {len(groups)} folds"
        )
    out: dict[str, int] = {}
    sizes = [0] * folds
    for stratum in (0, 1):
        members = [g for g in groups if group_label[g] == stratum]
        if not slides:
            members.sort(key=lambda g: (unit_hash(g, seed), g))
            for k, g in enumerate(members):
                out[g] = k % folds
            continue
        members.sort(key=lambda g: (-len(groups[g]), unit_hash(g, seed), g))
        stratum_sizes = [0] * folds
        for g in members:
            fold = min(range(folds), key=lambda f: (stratum_sizes[f], sizes[f], f))
            stratum_sizes[fold] += len(groups[g])
            sizes[fold] += len(groups[g])
            for id_ in groups[g]:
                out[id_] = fold
    return out


def check_not_empty(counts: dict[str, dict[int, int]], hint: str) -> None:
    """Raises SplitError if a split got no patches, or if a fold lacks one of the labels (its
    validation AUC would be undefined). ``counts``: {split: {label: patches}}."""
    for split, by_label in counts.items():
        if not sum(by_label.values()):
            raise SplitError(f"the {split} split would be empty: {hint}")
        if split.startswith("fold") and min(by_label.get(0, 0), by_label.get(1, 0)) == 0:
            missing = "tumour" if not by_label.get(1) else "tumour-free"
            raise SplitError(f"{split} would hold no {missing} patches (so no validation AUC on it): {hint}")
