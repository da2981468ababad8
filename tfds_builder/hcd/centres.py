"""The optional centre map of a Kaggle-layout manual dir: ``centres.csv`` (``id,centre``).

A centre is the hospital (lab, scanner) a patch comes from. The build stores every labelled id's
centre in its metadata (``metadata.json``, key ``centres``: ``map`` {id: centre} and ``counts``
{split: {centre: n}}), so the data set knows each example's centre without any change to the
records; the file is part of the inputs' fingerprint (inputs.py), so a changed map means another
build. ``hcdtf`` reads it for leave-one-centre-out runs (``data.centres``, ``data.test_centre``).

Every labelled id must have exactly one non-empty centre; rows of other ids (e.g. the unlabelled
``test/`` patches) are allowed and not stored. Centres are names (text); Camelyon17's five
hospitals are 0..4, and its patch names ``patient_XXX_node_Y`` give the centre as XXX // 20
(:func:`camelyon17_centre`).
"""

from __future__ import annotations

import collections
import os
import re

from .kaggle import read_id_map

CENTRE_MAP_NAME = "centres.csv"
_CAMELYON17 = re.compile(r"patient_(\d{3})_node_\d")


class CentreMapError(ValueError):
    """The centre map is unusable; the message names the file and row."""


def find_centre_map(manual_dir: str) -> str | None:
    path = os.path.join(manual_dir, CENTRE_MAP_NAME)
    return path if os.path.isfile(path) else None


def camelyon17_centre(name: str) -> str:
    """The Camelyon17 centre (0..4) of a patch or slide named ``...patient_XXX_node_Y...``:
    patients 0-19 come from centre 0, 20-39 from centre 1, and so on."""
    m = _CAMELYON17.search(name)
    if not m:
        raise CentreMapError(f"{name!r} is not a Camelyon17 name (patient_XXX_node_Y)")
    return str(int(m.group(1)) // 20)


def read_centre_csv(path: str) -> dict[str, str]:
    """{id: centre} from ``path``; CentreMapError naming the file and row of the first bad row
    (missing columns, an empty id or centre, an id given two different centres)."""
    return read_id_map(path, "centre", "centre map", CentreMapError, header_note=" (header row)", checked=True)


def record(manual_dir: str, labelled: list[tuple[str, int]], assignment: dict[str, str]) -> dict | None:
    """What the build stores (see the module docstring), or None without a centre map.
    CentreMapError if a labelled id has no centre."""
    path = find_centre_map(manual_dir)
    if path is None:
        return None
    mapping = read_centre_csv(path)
    missing = [i for i, _ in labelled if i not in mapping]
    if missing:
        raise CentreMapError(
            f"{path}: {len(missing)} labelled ids have no centre (e.g. {', '.join(missing[:3])}); every id "
            "of train_labels.csv needs a row id,centre. Complete the file or remove it.")
    counts: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for id_, _ in labelled:
        counts[assignment[id_]][mapping[id_]] += 1
    return {
        "file": CENTRE_MAP_NAME,
        "centres": sorted({mapping[i] for i, _ in labelled}),
        "counts": {split: dict(sorted(c.items())) for split, c in sorted(counts.items())},
        "map": {i: mapping[i] for i, _ in labelled},
    }
