"""The Kaggle layout's raw files: ``train_labels.csv``, ``train/<id>.tif``, the optional
unlabelled ``test/<id>.tif`` and the optional patch-to-slide map, read and checked.

Every kind of problem is counted over the whole data set before anything is written, so one run
reports all of them, each problem once. In strict mode (the default) any problem fails the build
with one error listing each kind, its count and the first files/rows, and how to go on; in skip
mode the bad examples are left out and counted (:class:`ProblemCounts`). The images are checked
on the thread pool (pool.py), with a TFDS-style progress bar.
"""

from __future__ import annotations

import collections
import contextlib
import csv
import os
import re

from . import faults, images, pool
from .errors import MANUAL_DOWNLOAD_INSTRUCTIONS, BadInputError, no_manual_dir

# Kaggle ids are 40-character hex strings. We accept any plain file stem (letters, digits, `_`,
# `-`, `.` not leading) so that renamed data works, but nothing that could leave `train/`.
ID_RE = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_.\-]*$")
SLIDE_MAP_NAMES = ("patch_id_wsi.csv", "patch_id_wsi_full.csv", "patch_to_slide.csv")
PROBLEMS = ("unsafe_id", "bad_label", "duplicate_id", "missing_file", "file_without_id",
            "corrupt_image", "wrong_shape", "not_uint8_rgb")
DEFAULT_SKIP_HINT = (
    "Fix or remove these files/rows, or leave them out of the build (skip_bad_examples): "
    "hcdtf build-dataset ... --skip-bad (with tfds build: --config "
    '\'{"name": "kaggle_skip_bad", "source": "kaggle", "skip_bad_examples": true}\')'
)


class ProblemCounts(dict):
    """{kind: count} of bad input, with ``examples``: {kind: the first few files/rows}."""

    examples: dict[str, list[str]]


def scan_kaggle(
    manual_dir: str, strict: bool = True, hint: str | None = None
) -> tuple[list[tuple[str, int]], ProblemCounts]:
    """Checks a Kaggle-layout manual dir. Returns ([(id, label)] sorted by id, problem counts).

    Every kind of problem is counted over the whole data set before anything is written, so one
    run reports all of them, each problem once: unsafe ids, bad labels, duplicate ids, ids without
    a file, files without an id, unreadable / wrong-shape / non-uint8 images. ``hint``: the last
    line of the error in strict mode (how to go on).
    """
    if not os.path.isdir(manual_dir):
        raise no_manual_dir(manual_dir)
    csv_path = os.path.join(manual_dir, "train_labels.csv")
    train_dir = os.path.join(manual_dir, "train")
    if not os.path.isfile(csv_path):
        raise BadInputError(f"{csv_path} not found. {MANUAL_DOWNLOAD_INSTRUCTIONS}")
    if not os.path.isdir(train_dir):
        raise BadInputError(f"{train_dir} not found (the directory of <id>.tif patches).")

    problems: dict[str, list[str]] = collections.OrderedDict((k, []) for k in PROBLEMS)
    rows, duplicated, badly_labelled = _read_labels(csv_path, problems)
    on_disk = {n[:-4] for n in os.listdir(train_dir) if n.endswith(".tif")}
    for id_ in sorted(set(rows) - on_disk):
        problems["missing_file"].append(f"{os.path.join(train_dir, id_ + '.tif')}: listed in the CSV, no file")
    # A file whose row has a bad label is that one problem, not also a file "without an id".
    for id_ in sorted(on_disk - set(rows) - badly_labelled):
        problems["file_without_id"].append(f"{os.path.join(train_dir, id_ + '.tif')}: not in {csv_path}")
    present = sorted(set(rows) & on_disk)
    bad_images = set()
    for id_, kind, message in _check_images(train_dir, present):
        bad_images.add(id_)
        problems[kind].append(message)
    # Duplicate ids are ambiguous (which label?): they are dropped entirely in skip mode.
    counts = _raise_or_record(problems, manual_dir, strict, hint)
    labelled = [(i, rows[i]) for i in present if i not in bad_images and i not in duplicated]
    if not labelled:
        raise BadInputError(f"{csv_path}: no usable labelled patches")
    if len({l for _, l in labelled}) < 2:
        raise BadInputError(f"{csv_path}: all usable patches have the same label; both 0 and 1 are needed")
    return labelled, counts


def scan_unlabelled(test_dir: str, strict: bool = True, hint: str | None = None) -> tuple[list[str], ProblemCounts]:
    """Checks the unlabelled `test/` patches; returns (sorted ids, problem counts)."""
    problems: dict[str, list[str]] = collections.OrderedDict(
        (k, []) for k in ("unsafe_id", "corrupt_image", "wrong_shape", "not_uint8_rgb")
    )
    ids = []
    for name in sorted(os.listdir(test_dir)):
        if not name.endswith(".tif"):
            continue
        id_ = name[:-4]
        if not ID_RE.match(id_):
            problems["unsafe_id"].append(f"{os.path.join(test_dir, name)}: not a plain id")
            continue
        ids.append(id_)
    bad = set()
    for id_, kind, message in _check_images(test_dir, ids):
        bad.add(id_)
        problems[kind].append(message)
    counts = _raise_or_record(problems, test_dir, strict, hint)
    return [i for i in ids if i not in bad], counts


def find_slide_map(manual_dir: str) -> str | None:
    """The patch-to-slide mapping file of a Kaggle manual dir (first of SLIDE_MAP_NAMES), if any."""
    return next(
        (os.path.join(manual_dir, n) for n in SLIDE_MAP_NAMES if os.path.isfile(os.path.join(manual_dir, n))),
        None,
    )


def read_id_map(path: str, column: str, what: str, error: type[Exception] = BadInputError,
                header_note: str = "", checked: bool = False) -> dict[str, str]:
    """{id: value} from a CSV with a header row naming the columns ``id`` and ``column`` (the
    patch-to-slide map, the centre map). Every error is ``error`` naming ``path``; unreadable
    files are "cannot read the <what>". With ``checked``, an empty id or value, or an id given two
    values, is an error naming the line; without it, rows are taken as they are (the last wins)."""
    mapping: dict[str, str] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or "id" not in reader.fieldnames or column not in reader.fieldnames:
                raise error(f"{path}: needs the columns id,{column}{header_note}, got {reader.fieldnames!r}")
            for row in reader:
                id_, value = (row.get("id") or "").strip(), (row.get(column) or "").strip()
                if checked and (not id_ or not value):
                    raise error(f"{path}: line {reader.line_num}: empty {'id' if not id_ else column} "
                                f"(every row is id,{column})")
                if checked and mapping.get(id_, value) != value:
                    raise error(f"{path}: line {reader.line_num}: id {id_} is given {column} {value!r}, and "
                                f"{mapping[id_]!r} on an earlier line")
                mapping[id_] = value
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise error(f"{path}: cannot read the {what} ({e})") from None
    return mapping


def read_slide_csv(path: str) -> dict[str, str]:
    """{patch id: slide} from a CSV with the columns id,wsi."""
    return read_id_map(path, "wsi", "slide map")


def read_slide_map(manual_dir: str, ids: list[str]) -> dict[str, str] | None:
    """Reads the optional patch-to-slide mapping (``id,wsi``). Every labelled id must be mapped."""
    path = find_slide_map(manual_dir)
    if path is None:
        return None
    mapping = read_slide_csv(path)
    missing = [i for i in ids if i not in mapping]
    if missing:
        raise BadInputError(
            f"{path}: {len(missing)} labelled ids have no slide (e.g. {missing[:3]}); a split by "
            "slide needs every id mapped. Complete the mapping or remove the file to split by patch."
        )
    return {i: mapping[i] for i in ids}


def pixel_digests(image_dir: str, ids: list[str]) -> dict[str, bytes]:
    """{id: pixel digest} of already checked images (threads): what drop_duplicates compares."""
    digest = lambda id_: images.hashes(images.read_tif(os.path.join(image_dir, id_ + ".tif")))[0]
    return dict(zip(ids, pool.ordered_map(digest, ids)))


def _read_labels(csv_path: str, problems: dict[str, list[str]]) -> tuple[dict[str, int], set[str], set[str]]:
    """The rows of train_labels.csv: ({id: label} of the usable rows, duplicated ids, ids whose
    label is bad). Each bad row is added to ``problems`` under its kind."""
    rows: dict[str, int] = {}
    first_row: dict[str, int] = {}
    duplicated: set[str] = set()
    badly_labelled: set[str] = set()
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        reader = csv.reader(f)
        header = next(reader, None)
        if header is None or [h.strip() for h in header[:2]] != ["id", "label"]:
            raise BadInputError(f"{csv_path}: the first line must be the header 'id,label', got {header!r}")
        for line_no, row in enumerate(reader, start=2):
            if not row or all(not c.strip() for c in row):
                continue
            where = f"{csv_path} row {line_no}"
            if len(row) < 2:
                problems["bad_label"].append(f"{where}: expected 'id,label', got {row!r}")
                continue
            id_, raw = row[0].strip(), row[1].strip()
            if not ID_RE.match(id_) or ".." in id_:
                problems["unsafe_id"].append(f"{where}: id {id_!r} is not a plain file name")
            elif raw not in ("0", "1"):
                problems["bad_label"].append(f"{where}: label {raw!r} for id {id_!r} is not 0 or 1")
                badly_labelled.add(id_)
            elif id_ in rows:
                first = first_row[id_]
                problems["duplicate_id"].append(f"{where}: id {id_!r} appears again (first in row {first})")
                duplicated.add(id_)
            else:
                rows[id_], first_row[id_] = int(raw), line_no
    return rows, duplicated, badly_labelled


def _check_images(image_dir: str, ids: list[str]) -> list[tuple[str, str, str]]:
    """Checks every image (threads; see images.check_tif); returns (id, problem kind, message)
    for the bad ones."""

    def check(id_: str):
        try:
            images.check_tif(os.path.join(image_dir, id_ + ".tif"))
            return None
        except BadInputError as e:
            return id_, images.problem_kind(e), str(e)

    bad = []
    with _progress(len(ids), f"Checking {image_dir}") as bar:
        for k, result in enumerate(pool.ordered_map(check, ids)):
            faults.fault("check")
            if result:
                bad.append(result)
            if bar is not None and (k + 1) % 256 == 0:
                bar.update(256)
        if bar is not None:
            bar.update(len(ids) % 256)
    return bad


def _progress(total: int, desc: str):
    """A TFDS-style progress bar (honours ``tfds.disable_progress_bar()``)."""
    try:
        from tensorflow_datasets.core.utils import tqdm_utils

        return tqdm_utils.tqdm(total=total, desc=desc, unit=" images", leave=False)
    except Exception:  # pragma: no cover - progress is optional
        return contextlib.nullcontext(None)


def _raise_or_record(problems: dict[str, list[str]], where: str, strict: bool, hint: str | None) -> ProblemCounts:
    """The counts of ``problems`` (and their first examples); in strict mode, if there are any,
    one BadInputError listing each kind with its count and first items, then ``hint``."""
    counts = ProblemCounts((kind, len(items)) for kind, items in problems.items() if items)
    counts.examples = {kind: items[:3] for kind, items in problems.items() if items}
    if counts and strict:
        lines = [f"{where}: found bad input ({sum(counts.values())} problems):"]
        for kind, items in problems.items():
            if items:
                shown = "; ".join(items[:5]) + (f"; ... ({len(items) - 5} more)" if len(items) > 5 else "")
                lines.append(f"  {kind}: {len(items)}: {shown}")
        lines.append(hint or DEFAULT_SKIP_HINT)
        raise BadInputError("\n".join(lines))
    return counts
