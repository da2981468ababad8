"""Run directories: what a run directory holds, its kind, its lock, resume state, staging and status.

Every stage asks this module about a run instead of probing files itself, and only this module
spells the names of a run directory's files (the constants below: ``SUMMARY``, ``METRICS``...)::

    run.json               what kind of run this is (cnn or baseline), written when it starts
    config.yaml            the resolved config, written when training actually starts
    history.csv            one row per committed epoch (derived from the resume state)
    backup/state-NNNN.npz  resume state after epoch NNNN (the last two are kept)
    checkpoints/best.weights.h5   weights of the best epoch by validation AUC (CNN)
    model.keras | model.npz       the final model (CNN | logistic-regression baseline)
    val_predictions.csv    id,label,score on the validation split
    train_summary.json     written last: its presence means "finished"
    metrics.json, predictions.csv, *.png    test-split evaluation (`hcdtf evaluate`)
    eval_<split>/          evaluation of another split
    logs/                  TensorBoard
    .lock                  held (flock) by the one process writing the run
    .staging/              a replacement run (--overwrite) until it has a finished epoch

Writes are atomic (``hcdtf.atomic``: a temporary name in the same directory, then
``os.replace``), so a process killed at any instant leaves either the old file or the new one.
The resume state is one file per epoch holding every variable of the model and optimizer plus the
run's bookkeeping (history, elapsed time); it is the commit point of an epoch: the history, the
best checkpoint and TensorBoard are derived from it, so they can always be rebuilt after a kill.

Loading the run's model and scoring with it are one level up, in :mod:`hcdtf.inference.loading`:
this module imports no Keras, no model code, no data pipeline and no scoring.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import json
import os
import pathlib
import shutil
import signal
import socket
import sys
import zipfile
from typing import Any, Callable, Iterator

import numpy as np

from hcdtf import __version__, compat
from hcdtf.atomic import TMP_MARK, atomic_output, write_text
from hcdtf.config import Config, ConfigError, from_dict, load_yaml

KINDS = ("cnn", "baseline")

# --------------------------------------------------------------------------- file names
# The names of a run directory's entries: every module that reads or writes one uses these.
RUN_JSON = "run.json"
CONFIG = "config.yaml"
HISTORY = "history.csv"
BACKUP = "backup"
CHECKPOINTS = "checkpoints"
BEST_WEIGHTS = "best.weights.h5"  # in CHECKPOINTS
MODEL_FILES = {"cnn": "model.keras", "baseline": "model.npz"}
VAL_PREDICTIONS = "val_predictions.csv"
SUMMARY = "train_summary.json"
LOGS = "logs"
METRICS = "metrics.json"
PREDICTIONS = "predictions.csv"
EVAL_PREFIX = "eval_"  # eval_<split>/: the evaluation of a split other than the test split
FIGURES = {"roc": "roc.png", "pr": "pr.png", "reliability": "reliability.png",
           "confusion_matrix": "confusion_matrix.png"}

# Entries of a run directory that hcdtf writes (everything clear() may remove).
_ARTIFACTS = (
    RUN_JSON, CONFIG, HISTORY, BACKUP, CHECKPOINTS, *MODEL_FILES.values(), VAL_PREDICTIONS, SUMMARY, LOGS,
    METRICS, PREDICTIONS, *FIGURES.values(),
)
_ARTIFACT_GLOBS = (f"{EVAL_PREFIX}*", "metrics_*.json", "reliability_*.png")
_LOCK = ".lock"
_STAGING = ".staging"
_SWAP_JOURNAL = ".swap.json"


class RunDirError(ValueError):
    """The output directory holds something this command must not touch (message for users)."""


class RunNotFoundError(FileNotFoundError):
    """The path is not a (finished) run directory (message for users)."""


class RunLockedError(RunDirError):
    """Another process holds the run directory's lock."""


# --------------------------------------------------------------------------- temporaries
def remove_temporaries(directory: pathlib.Path) -> None:
    """Removes temporary files that killed writers left anywhere under ``directory``."""
    if directory.is_dir():
        for p in directory.rglob(f".*{TMP_MARK}*"):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


# --------------------------------------------------------------------------- fault injection
def kill_point(name: str) -> None:
    """Test hook: ``HCDTF_KILL_AT=name[:n]`` SIGKILLs this process the n-th time (default 1st)
    execution reaches ``name``, so tests can kill a run inside its writes at exact instants."""
    spec = os.environ.get("HCDTF_KILL_AT")
    if not spec:
        return
    target, _, nth = spec.partition(":")
    if target != name:
        return
    _KILL_POINTS_SEEN[name] = _KILL_POINTS_SEEN.get(name, 0) + 1
    if _KILL_POINTS_SEEN[name] == int(nth or 1):
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)


_KILL_POINTS_SEEN: dict[str, int] = {}


# --------------------------------------------------------------------------- resume state
@dataclasses.dataclass
class ResumeState:
    """What a run needs to continue exactly after epoch ``epoch``: the values of every variable
    (model and optimizer, in a fixed order, checked by name) and the run's bookkeeping."""

    epoch: int
    names: list[str]
    values: list[np.ndarray]
    meta: dict[str, Any]


def _state_path(backup: pathlib.Path, epoch: int) -> pathlib.Path:
    return backup / f"state-{epoch:04d}.npz"


def save_state(backup: pathlib.Path, state: ResumeState, keep: int = 2) -> pathlib.Path:
    """Commits ``state`` atomically, then removes all but the ``keep`` newest states."""
    backup.mkdir(parents=True, exist_ok=True)
    path = _state_path(backup, state.epoch)
    arrays = {f"v{i}": np.asarray(v) for i, v in enumerate(state.values)}
    header = {"epoch": state.epoch, "names": state.names, "meta": state.meta, "hcdtf_version": __version__}
    arrays["header"] = np.frombuffer(json.dumps(header).encode("utf-8"), np.uint8)
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            kill_point("inside-state-write")
    for old in sorted(backup.glob("state-*.npz"))[:-keep]:
        old.unlink(missing_ok=True)
    return path


def _read_state(path: pathlib.Path) -> ResumeState:
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(bytes(z["header"]).decode("utf-8"))
        values = [z[f"v{i}"] for i in range(len(header["names"]))]  # reads (and CRC-checks) all
    return ResumeState(int(header["epoch"]), list(header["names"]), values, dict(header["meta"]))


def load_state(backup: pathlib.Path, log: Callable[[str], None]) -> ResumeState | None:
    """The newest readable state in ``backup`` (an unreadable one is reported and skipped)."""
    for path in sorted(backup.glob("state-*.npz"), reverse=True):
        try:
            return _read_state(path)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, json.JSONDecodeError) as e:
            log(f"{path}: unreadable resume state ({type(e).__name__}); falling back to the previous one")
    return None


# --------------------------------------------------------------------------- the lock
class RunLock:
    """An exclusive ``flock`` on ``<run>/.lock``; the kernel releases it when the holder dies,
    so a lock left by a killed process is simply taken over."""

    def __init__(self, run: pathlib.Path, what: str):
        self.path = run / _LOCK
        self.what = what
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunDirError(f"cannot write in {str(self.path.parent)!r} ({e.strerror}); choose a writable "
                              "directory") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            raise RunLockedError(
                f"{self.path.parent} is in use by {holder}; wait for it to finish (or stop it), "
                "or choose another directory"
            ) from None
        os.ftruncate(fd, 0)
        started = datetime.datetime.now().isoformat(timespec="seconds")
        os.write(fd, f"pid {os.getpid()} on host {socket.gethostname()} ({self.what}, since {started})\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None


# --------------------------------------------------------------------------- the run directory
class RunDir:
    """One run directory: its files, kind, config, summary, lock, staging and resume state."""

    def __init__(self, path: str | os.PathLike):
        self.path = pathlib.Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    # -- files
    @property
    def config_path(self) -> pathlib.Path:
        return self.path / CONFIG

    @property
    def run_json_path(self) -> pathlib.Path:
        return self.path / RUN_JSON

    @property
    def summary_path(self) -> pathlib.Path:
        return self.path / SUMMARY

    @property
    def history_path(self) -> pathlib.Path:
        return self.path / HISTORY

    @property
    def backup_dir(self) -> pathlib.Path:
        return self.path / BACKUP

    @property
    def best_weights_path(self) -> pathlib.Path:
        return self.path / CHECKPOINTS / BEST_WEIGHTS

    @property
    def val_predictions_path(self) -> pathlib.Path:
        return self.path / VAL_PREDICTIONS

    def model_path(self, kind: str | None = None) -> pathlib.Path:
        kind = kind or self.kind()
        return self.path / MODEL_FILES["baseline" if kind == "baseline" else "cnn"]

    def eval_dir(self, split: str, test_split: str = "test") -> pathlib.Path:
        """Where the evaluation of ``split`` goes: the run itself for the test split."""
        return self.path if split == test_split else self.path / f"{EVAL_PREFIX}{split}"

    def metrics_path(self, split: str = "test", test_split: str = "test") -> pathlib.Path:
        """The evaluation of ``split``'s metrics.json (written last: its presence means complete)."""
        return self.eval_dir(split, test_split) / METRICS

    def predictions_path(self, split: str = "test", test_split: str = "test") -> pathlib.Path:
        return self.eval_dir(split, test_split) / PREDICTIONS

    # -- what it is
    def is_run(self) -> bool:
        return self.config_path.is_file() or self.run_json_path.is_file()

    def kind(self) -> str | None:
        """``cnn`` or ``baseline`` as recorded when the run started; for runs of older hcdtf
        versions, derived from the model file (the one place that still guesses)."""
        try:
            return json.loads(self.run_json_path.read_text())["kind"]
        except (OSError, ValueError, KeyError):
            pass
        if (self.path / MODEL_FILES["baseline"]).is_file():
            return "baseline"
        summary = self._read_summary()
        if summary is not None:
            return compat.current_summary(summary, MODEL_FILES["baseline"])["kind"]
        if self.config_path.is_file() or (self.path / MODEL_FILES["cnn"]).is_file():
            return "cnn"
        return None

    def data_record(self) -> dict | None:
        """The data the run was trained on, as recorded when it started (``hcdtf.data.identity``); None
        for runs of older hcdtf versions."""
        try:
            record = json.loads(self.run_json_path.read_text()).get("data")
        except (OSError, ValueError, AttributeError):
            return None
        return record if isinstance(record, dict) else None

    def config(self) -> Config:
        """The run's resolved config (older field names are accepted, with a notice)."""
        if not self.config_path.is_file():
            raise RunNotFoundError(
                f"{str(self.path)!r} is not an hcdtf run directory (no {CONFIG}); pass the "
                "--output-dir of `hcdtf train` or `hcdtf baseline`"
            )
        return from_dict(load_yaml(self.config_path), str(self.config_path))

    def config_or_pending_swap(self) -> Config:
        """:meth:`config`, after finishing an ``--overwrite`` swap that a kill interrupted (the
        old run's files gone, the new one's not all moved in yet), under the run's lock."""
        if not self.config_path.is_file() and (self.staging().path / _SWAP_JOURNAL).is_file():
            with self.locked("finishing an interrupted --overwrite"):
                pass
        return self.config()

    def _read_summary(self) -> dict | None:
        try:
            data = json.loads(self.summary_path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def summary(self) -> dict | None:
        """train_summary.json with today's keys (``kind``, ``transfer``), or None if unfinished."""
        s = self._read_summary()
        return None if s is None else compat.current_summary(s, MODEL_FILES["baseline"])

    def finished(self) -> bool:
        return self._read_summary() is not None

    # -- status
    def status(self, cfg: Config, kind: str) -> str:
        """``fresh`` (nothing here), ``complete`` (finished, same config), ``resume`` (started,
        same config), ``unstarted`` (a start that failed before its first epoch: replaceable),
        ``conflict`` (a run of another config), or ``foreign`` (files that are not a run)."""
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"--output-dir {str(self.path)!r} exists and is not a directory")
        if not self.is_run():
            entries = [p for p in self.path.iterdir() if p.name not in (_LOCK, _STAGING)] if self.path.is_dir() else []
            return "foreign" if entries else "fresh"
        if not self.finished() and not self.has_progress():
            return "unstarted"
        return ("complete" if self.finished() else "resume") if self.same_config(cfg, kind) else "conflict"

    def has_progress(self) -> bool:
        """Whether an unfinished run has committed anything worth resuming."""
        return any(self.backup_dir.glob("state-*.npz")) or self.history_path.is_file() or \
            (self.backup_dir / "training_metadata.json").is_file() or self.model_path().is_file()

    def same_config(self, cfg: Config, kind: str) -> bool:
        try:
            old = self.config()
        except ConfigError:
            return False
        return self.kind() in (kind, None) and comparable(old, kind) == comparable(cfg, kind)

    # -- lifecycle
    @contextlib.contextmanager
    def locked(self, what: str) -> Iterator["RunDir"]:
        """Holds the run's lock for the block (creating the directory if needed; a directory
        this call created is removed again if the block fails before writing anything)."""
        created = not self.path.exists()
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"cannot create the run directory {str(self.path)!r}: {e.strerror}; "
                              "choose a writable --output-dir") from None
        if not os.access(self.path, os.W_OK):
            raise RunDirError(f"the run directory {str(self.path)!r} is not writable; choose a writable --output-dir")
        lock = RunLock(self.path, what)
        lock.acquire()
        try:
            self.recover()
            yield self
        finally:
            lock.release()
            if created and not any(p.name != _LOCK for p in self.path.iterdir()):
                shutil.rmtree(self.path, ignore_errors=True)

    def start(self, cfg: Config, kind: str, data: dict | None = None, **choices) -> None:
        """Records the run's kind and config, the data it trains on (``data``: the record of
        ``hcdtf.data.identity.training_record``, read by the caller before any write), and
        ``choices`` resolved at its start that a resumed session must reuse rather than redo (the
        precision ``auto`` picked and the probe's figures): called when training actually starts."""
        if kind not in KINDS:
            raise ValueError(f"unknown run kind {kind!r}; valid: {', '.join(KINDS)}")
        self.path.mkdir(parents=True, exist_ok=True)
        write_text(self.run_json_path, json.dumps(
            {"kind": kind, "hcdtf_version": __version__,
             "created": datetime.datetime.now().isoformat(timespec="seconds"), "data": data, **choices},
            indent=2) + "\n")
        write_text(self.config_path, cfg.dump_text())

    def recorded(self, key: str, default=None):
        """A choice recorded by :meth:`start` (``default`` for runs of older versions, or none)."""
        try:
            return json.loads(self.run_json_path.read_text()).get(key, default)
        except (OSError, ValueError, AttributeError):
            return default

    def clear(self) -> None:
        """Removes hcdtf's artifacts (and nothing else) from the run directory."""
        for name in _ARTIFACTS:
            _remove(self.path / name)
        for pattern in _ARTIFACT_GLOBS:
            for p in self.path.glob(pattern):
                _remove(p)
        remove_temporaries(self.path)

    # -- staging (--overwrite): the old run stays until the new one has a finished epoch
    def staging(self) -> "RunDir":
        return RunDir(self.path / _STAGING)

    def swap_in(self, staged: "RunDir") -> None:
        """Replaces this run's artifacts by ``staged``'s, journalled so that a kill at any
        instant is completed by :meth:`recover` on the next start."""
        write_text(staged.path / _SWAP_JOURNAL, json.dumps({"phase": "delete"}))
        self._finish_swap(staged)

    def _finish_swap(self, staged: "RunDir") -> None:
        journal = staged.path / _SWAP_JOURNAL
        if json.loads(journal.read_text())["phase"] == "delete":
            self.clear()
            kill_point("inside-swap")
            write_text(journal, json.dumps({"phase": "move"}))
        for entry in sorted(staged.path.iterdir()):
            if entry.name != _SWAP_JOURNAL:
                os.replace(entry, self.path / entry.name)
        journal.unlink()
        staged.path.rmdir()

    def recover(self) -> None:
        """Finishes an interrupted swap and removes temporaries left by killed writers."""
        staged = self.staging()
        if (staged.path / _SWAP_JOURNAL).is_file():
            self._finish_swap(staged)
        for p in self.path.glob(f".*{TMP_MARK}*"):
            _remove(p)
        for sub in (BACKUP, CHECKPOINTS, LOGS):
            remove_temporaries(self.path / sub)

    def discard_staging(self) -> None:
        _remove(self.staging().path)

    # -- the model file and the evaluations made from it (loading it: hcdtf.inference.loading)
    def model_stamp(self) -> dict | None:
        """Identifies the final model file (size and modification time): an evaluation records
        it, so a retrained model makes the old evaluation stale."""
        path = self.model_path()
        if not path.is_file():
            return None
        st = path.stat()
        return {"file": path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}

    def evaluation_current(self, split: str, test_split: str = "test",
                           data_current: Callable[[dict | None], Any] | None = None) -> bool:
        """metrics.json and predictions.csv exist for ``split`` and were computed from the
        current model file (and, given ``data_current``, on the data it accepts: it receives the
        evaluation's recorded ``data``, None from an older hcdtf, and says whether that is the
        build read now, e.g. ``hcdtf.data.identity.evaluation_current``)."""
        metrics_path = self.metrics_path(split, test_split)
        try:
            recorded = json.loads(metrics_path.read_text())
        except (OSError, ValueError):
            return False
        stamp = self.model_stamp()
        if stamp is None or not self.predictions_path(split, test_split).is_file() or recorded.get("split") != split:
            return False
        if data_current is not None and not data_current(recorded.get("data")):
            return False
        if "model_stamp" in recorded:
            return recorded["model_stamp"] == stamp
        # Evaluations of older hcdtf versions: newer than the model file.
        return metrics_path.stat().st_mtime_ns >= stamp["mtime_ns"]


def comparable(cfg: Config, kind: str) -> dict:
    """The parts of a config that define a run of ``kind`` (where it is written, how it is
    evaluated, exported or used to predict, and the other kind's settings do not)."""
    d = json.loads(json.dumps(cfg.to_dict()))
    ignored = ("output_dir", "eval", "export", "predict", "slide", "mil") + (
        ("model", "train") if kind == "baseline" else ("baseline",))
    for key in ignored:
        d.pop(key, None)
    return d


def _remove(p: pathlib.Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p)
    elif p.exists() or p.is_symlink():
        p.unlink()
