"""The fingerprint of a build's inputs (manual dir files, CSVs, slide map, options), and what
differs between two of them.

A build records its fingerprint in its metadata (``metadata.json``, key ``inputs``), so a second
build into the same data dir can tell whether it would make the same data set
(:func:`check_unchanged` refuses other inputs, saying what differs). Image files are
fingerprinted by name, size and modification time (a stat per file: cheap for 277k files, and
any copy, edit or re-download changes it); the CSV files, which decide the labels and splits, by
content. The manual dir's path is recorded but not part of the digest: the same files moved
elsewhere (with their times kept) are the same inputs.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable

from .errors import InputsChangedError

# Files of the manual dir that change what a build contains, besides the image directories.
KAGGLE_CSVS = ("train_labels.csv",)
IMAGE_DIRS = {"kaggle": ("train", "test")}


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _dir_entry(path: str, suffixes: tuple[str, ...]) -> dict | None:
    """Count, total bytes and a digest of (name, size, mtime) of the files in ``path``."""
    if not os.path.isdir(path):
        return None
    rows, total = [], 0
    with os.scandir(path) as it:
        for entry in it:
            if not entry.name.endswith(suffixes):
                continue
            try:
                if not entry.is_file():
                    continue
                st = entry.stat()
            except OSError as e:  # e.g. a symlink loop (ELOOP): the input checks name it as bad input
                rows.append(f"{entry.name}\0unreadable\0{e.errno}\n")
                continue
            rows.append(f"{entry.name}\0{st.st_size}\0{st.st_mtime_ns}\n")
            total += st.st_size
    rows.sort()
    names = hashlib.sha256("".join(r.split("\0", 1)[0] + "\n" for r in rows).encode()).hexdigest()
    return {
        "count": len(rows),
        "bytes": total,
        "names": names,  # the file list alone: tells "other files" from "same files, touched"
        "digest": hashlib.sha256("".join(rows).encode()).hexdigest(),
    }


def fingerprint(manual_dir: str, source: str, options: dict, slide_map: str | None = None) -> dict:
    """What a build of ``source`` with ``options`` reads from ``manual_dir`` (see the module
    docstring). ``slide_map``: the patch-to-slide CSV the build would use, if any."""
    manual_dir = os.path.abspath(manual_dir)
    parts: dict = {"source": source, "options": dict(sorted(options.items()))}
    if source == "kaggle":
        for name in IMAGE_DIRS["kaggle"]:
            parts[f"{name}/"] = _dir_entry(os.path.join(manual_dir, name), (".tif",))
        for name in KAGGLE_CSVS:
            path = os.path.join(manual_dir, name)
            parts[name] = file_sha256(path) if os.path.isfile(path) else None
        parts["slide_map"] = (
            {"name": os.path.basename(slide_map), "sha256": file_sha256(slide_map)} if slide_map else None
        )
        centre_map = os.path.join(manual_dir, "centres.csv")  # (absent: a build without one keeps its digest)
        if os.path.isfile(centre_map):
            parts["centre_map"] = file_sha256(centre_map)
    else:
        parts["files"] = _dir_entry(manual_dir, (".h5", ".h5.gz"))
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()
    return {"manual_dir": manual_dir, "digest": digest, **parts}


def _describe_dir(entry: dict | None) -> str:
    if entry is None:
        return "absent"
    return f"{entry['count']} files, {entry['bytes']:,} bytes"


def differences(old: dict, new: dict) -> list[str]:
    """What differs between two fingerprints, one short phrase each (empty if the same inputs)."""
    if old.get("digest") == new.get("digest"):
        return []
    out = []
    for key in sorted((set(old) | set(new)) - {"manual_dir", "digest"}):
        a, b = old.get(key), new.get(key)
        if a == b:
            continue
        if key == "options":
            changed = sorted(k for k in set(a or {}) | set(b or {}) if (a or {}).get(k) != (b or {}).get(k))
            a, b = a or {}, b or {}
            out.append("options: " + ", ".join(f"{k} {b.get(k)!r} (was {a.get(k)!r})" for k in changed))
        elif key.endswith("/") or key == "files":
            label = key if key.endswith("/") else "files"
            if a and b and a.get("names") == b.get("names") and a.get("bytes") == b.get("bytes"):
                out.append(f"{label}: the same {b['count']} file names and sizes, other modification times")
            elif a and b and a.get("names") == b.get("names"):
                out.append(f"{label}: the same {b['count']} file names, other sizes "
                           f"({b['bytes']:,} bytes, was {a['bytes']:,})")
            else:
                out.append(f"{label}: {_describe_dir(b)} (was {_describe_dir(a)})")
        elif key == "slide_map":
            out.append(f"slide map: {(b or {}).get('name', 'none')} (was {(a or {}).get('name', 'none')})"
                       if (a or {}).get("name") != (b or {}).get("name") else "slide map: content differs")
        else:
            out.append(f"{key}: {'content differs' if a and b else ('added' if b else 'removed')}")
    return out or ["the recorded fingerprint is from another format"]


def check_unchanged(data_path, recorded: dict | None, manual_dir: str, current: Callable[[], dict]) -> None:
    """InputsChangedError unless the build in ``data_path``, whose metadata recorded the
    fingerprint ``recorded``, was made from the inputs whose fingerprint ``current()`` computes
    (computed only if there is a recorded one to compare with)."""
    how = ("rebuild it with --overwrite (hcdtf build-dataset --overwrite; tfds build --overwrite), "
           "or build into another --data-dir")  # fmt: skip
    if not recorded:
        raise InputsChangedError(
            f"{data_path} holds a build that recorded no fingerprint of its inputs (made by an "
            f"older hcdtf), so it cannot be checked against {manual_dir}: {how}, or keep using it as it is"
        )
    diff = differences(recorded, current())
    if diff:
        raise InputsChangedError(
            f"{data_path} was built from {recorded.get('manual_dir')}, and the inputs in "
            f"{os.path.abspath(manual_dir)} differ ({'; '.join(diff)}): {how}"
        )
