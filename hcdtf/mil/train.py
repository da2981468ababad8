"""`hcdtf mil train`: gated-attention MIL on bags of embeddings, in a run directory that resumes exactly.

One optimizer step per bag (a ``tf.function`` traced once for ``[None, d]``: bags of any length,
none padded); the bags of an epoch come in an order drawn from ``(seed, epoch)``. A run directory
holds (the guarantees of ``hcdtf train``'s, from the same :mod:`hcdtf.rundir` pieces)::

    .lock                 flock held by the one process training (a killed holder's is taken over)
    run.json              {"kind": "mil", ...}, written when training starts
    config.yaml           the resolved MIL config (``mil:``), and the bags' fingerprint
    backup/state-NNNN.npz after epoch NNNN: every variable of the model and the optimizer, the best
                          epoch's weights and the history: the commit point (atomic); the last two kept
    history.csv           derived from the newest state after each epoch
    folds.csv             slide,label,fold,role of every bag
    model.keras           the best epoch's model (lowest validation loss; the last epoch without folds)
    val_predictions.csv   slide,label,score of the validation fold
    train_summary.json    written last: the run is finished

A run killed at any instant restarts from its newest state and ends with the same weights, bit for
bit, as an uninterrupted run (the data order, dropout's seed state and the optimizer's moments are
all in the state). Rerunning a finished run reports it; a run of another config or other bags is
refused unless ``--overwrite``: then the new run trains in ``.staging/`` while the old run stays
whole, and after its first epoch replaces it in a journalled swap (:class:`MilRunDir`), so a kill
at any instant leaves the old run or the new one (the next start completes a swap a kill cut).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import pathlib
import time
from collections.abc import Callable

import numpy as np

from hcdtf.mil import HEADS
from hcdtf.mil import bags as bags_lib
from hcdtf.rundir import RunDir

KIND = "mil"


class MilRunError(ValueError):
    """The output directory cannot hold this run (message for users)."""


@dataclasses.dataclass
class MilConfig:
    """Everything a MIL run depends on (the bags' contents are checked by fingerprint)."""

    bags: list = dataclasses.field(default_factory=list)
    labels: str = ""
    hidden: int = 128
    attention: int = 64
    dropout: float = 0.25
    epochs: int = 20
    learning_rate: float = 2e-4
    weight_decay: float = 1e-5
    balance: bool = True          # weight the loss so that both classes count equally
    max_instances: int | None = None  # train on a random subset of at most this many patches per bag and step
    folds: int = 5                # slide-grouped, label-stratified folds (0: no validation)
    fold: int = 0                 # the validation fold
    split_seed: int = 0           # draws the folds (keep it to compare repeats on the same folds)
    seed: int = 0                 # initialisation, data order, dropout
    head: str = "abmil"           # abmil | clam_sb (hcdtf.mil.HEADS)
    bag_weight: float = 0.7       # clam_sb: bag loss weight; the instance loss gets 1 - bag_weight (CLAM's 0.7)
    k_sample: int = 8             # clam_sb: most / least attended patches per bag for the instance loss (CLAM's 8)

    def validate(self) -> MilConfig:
        checks = [(self.hidden >= 1, "--hidden must be >= 1"), (self.attention >= 1, "--attention must be >= 1"),
                  (0 <= self.dropout < 1, "--dropout must be in [0, 1)"), (self.epochs >= 1, "--epochs must be >= 1"),
                  (self.learning_rate > 0, "--learning-rate must be > 0"),
                  (self.max_instances is None or self.max_instances >= 1, "--max-instances must be >= 1"),
                  (self.folds == 0 or self.folds >= 2, "--folds must be 0 (no validation) or >= 2"),
                  (self.folds == 0 or 0 <= self.fold < self.folds, f"--fold must be in 0..{self.folds - 1}"),
                  (self.head in HEADS, f"--head must be one of {', '.join(HEADS)}, got {self.head!r}"),
                  (0 <= self.bag_weight <= 1, "--bag-weight must be in [0, 1]"), (self.k_sample >= 1, "--k-sample must be >= 1")]
        for ok, message in checks:
            if not ok:
                raise MilRunError(message)
        return self

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if self.head == "abmil":  # an ABMIL run's config reads as before CLAM-SB came (its run dirs stay valid)
            for key in ("head", "bag_weight", "k_sample"):
                d.pop(key)
        return d


def _history_csv(history: list[dict]) -> str:
    buf = io.StringIO()
    fields = ["epoch", "loss", "val_loss", "val_auc", "seconds"]
    w = csv.DictWriter(buf, fields, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for row in history:
        w.writerow({k: ("" if row.get(k) is None else row[k]) for k in fields})
    return buf.getvalue()


def bce(label: float, p: float) -> float:
    p = min(max(p, 1e-7), 1 - 1e-7)
    return -(label * np.log(p) + (1 - label) * np.log(1 - p))


class _Session:
    """The model, its optimizer, the compiled step, and every variable of the resume state."""

    def __init__(self, cfg: MilConfig, dim: int, mean=None, variance=None):
        import keras
        import tensorflow as tf

        from hcdtf.mil.model import build, instance_loss

        keras.utils.set_random_seed(cfg.seed)
        self.model = build(cfg.head, dim, cfg.hidden, cfg.attention, cfg.dropout, mean, variance)
        clam = cfg.head == "clam_sb"
        self.optimizer = keras.optimizers.AdamW(cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.optimizer.build(self.model.trainable_variables)
        self.variables = list(self.model.variables) + list(self.optimizer.variables)
        model, optimizer = self.model, self.optimizer

        def step(x, y, w):
            with tf.GradientTape() as tape:
                out = model(x, training=True)
                logit = tf.reshape(out["logit"], [])
                loss = w * tf.nn.sigmoid_cross_entropy_with_logits(labels=y, logits=logit)
                if clam:  # CLAM: bag_weight * bag loss + (1 - bag_weight) * instance clustering loss
                    loss = cfg.bag_weight * loss + (1 - cfg.bag_weight) * instance_loss(out, y, cfg.k_sample)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply(grads, model.trainable_variables)
            return loss

        spec = [tf.TensorSpec([None, dim], tf.float32), tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.float32)]
        self.step = tf.function(step, input_signature=spec)
        self.forward = tf.function(lambda x: model(x, training=False), input_signature=spec[:1])

    def names(self) -> list[str]:
        return [v.path for v in self.variables]

    def values(self) -> list[np.ndarray]:
        return [np.asarray(v.numpy()) for v in self.variables]

    def model_values(self) -> list[np.ndarray]:
        return [np.asarray(v.numpy()) for v in self.model.variables]

    def restore(self, values: list[np.ndarray]) -> None:
        for v, value in zip(self.variables, values):
            v.assign(value)

    def predict(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        out = self.forward(x)
        return float(np.asarray(out["probability"]).reshape(())), np.asarray(out["attention"])


def subsample(x: np.ndarray, limit: int | None, seed: tuple) -> np.ndarray:
    """At most ``limit`` rows of ``x`` (a random subset in bag order, drawn from ``seed``): training
    memory then stops growing with the bag (CLAM and others sample instances the same way)."""
    if limit is None or len(x) <= limit:
        return x
    keep = np.sort(np.random.default_rng([*seed, 0x5A3]).choice(len(x), limit, replace=False))
    return x[keep]


def _split(cfg: MilConfig, labels: dict[str, int]) -> dict[str, int]:
    if cfg.folds == 0:
        return {s: -1 for s in labels}
    return bags_lib.folds(labels, cfg.folds, cfg.split_seed)


def _write_folds(path: pathlib.Path, labels: dict, fold_of: dict, cfg: MilConfig) -> None:
    from hcdtf.atomic import write_text

    rows = ["slide,label,fold,role\n"] + [
        f"{s},{labels[s]},{fold_of[s]},{'validation' if cfg.folds and fold_of[s] == cfg.fold else 'train'}\n"
        for s in labels]
    write_text(path, "".join(rows))


def _state_meta(history, best_epoch, best_loss) -> dict:
    return {"history": history, "best_epoch": best_epoch, "best_loss": best_loss}


def train(cfg: MilConfig, output_dir, overwrite: bool = False, log: Callable[[str], None] = print,
          bag_cache: dict | None = None) -> dict:
    """Trains (or resumes, or reports the finished) MIL run in ``output_dir``; returns its summary.
    ``bag_cache``: slide -> features already in memory (tests; the files are still fingerprinted)."""
    import yaml

    from hcdtf import __version__
    from hcdtf.atomic import write_text
    from hcdtf.rundir import (
        ResumeState,
        RunDirError,
        RunLock,
        kill_point,
        load_state,
        remove_temporaries,
        save_state,
    )

    cfg = cfg.validate()
    bags = bags_lib.list_bags(cfg.bags)
    labels = bags_lib.read_labels(cfg.labels, bags)
    fold_of = _split(cfg, labels)
    run = pathlib.Path(output_dir)
    if run.exists() and not run.is_dir():
        raise MilRunError(f"--output-dir {str(run)!r} exists and is not a directory")
    try:
        run.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise MilRunError(f"cannot create --output-dir {str(run)!r}: {e.strerror}") from None
    lock = RunLock(run, "hcdtf mil train")
    try:
        lock.acquire()
    except RunDirError as e:
        raise MilRunError(str(e)) from None
    try:
        target = MilRunDir(run)
        target.recover()  # completes a swap a kill interrupted, removes killed writers' temporaries
        remove_temporaries(run)
        config_text = yaml.safe_dump({"mil": cfg.to_dict(), "bags_sha256": bags_lib.fingerprint(bags),
                                      "slides": len(bags)}, sort_keys=False)
        work = _workspace(target, config_text, overwrite, log)
        if isinstance(work, dict):
            log(f"{run}: already finished ({work['epochs']} epochs); nothing to do")
            return work
        run = work.path  # the run directory itself, or its staging directory (--overwrite)
        if not (run / "config.yaml").is_file():
            run.mkdir(exist_ok=True)
            write_text(run / "config.yaml", config_text)
            write_text(run / "run.json", json.dumps({"kind": KIND, "hcdtf_version": __version__}, indent=2) + "\n")
        _write_folds(run / "folds.csv", labels, fold_of, cfg)

        cache = dict(bag_cache or {})

        def features(slide):
            if slide not in cache:
                cache[slide] = bags_lib.load_features(bags[slide])
                if dims.setdefault("d", cache[slide].shape[1]) != cache[slide].shape[1]:
                    raise bags_lib.BagError(f"{bags[slide]}: {cache[slide].shape[1]} features per patch, other bags "
                                            f"have {dims['d']}: embed every slide with one encoder")
            return cache[slide]

        dims: dict = {}

        train_slides = [s for s in labels if not (cfg.folds and fold_of[s] == cfg.fold)]
        val_slides = [s for s in labels if cfg.folds and fold_of[s] == cfg.fold]
        dim = int(features(train_slides[0]).shape[1])
        n_pos = sum(labels[s] for s in train_slides)
        if n_pos in (0, len(train_slides)):
            raise MilRunError(f"--labels {cfg.labels}: the training slides are all of one class")
        weight = {1: len(train_slides) / (2 * n_pos), 0: len(train_slides) / (2 * (len(train_slides) - n_pos))} \
            if cfg.balance else {0: 1.0, 1: 1.0}
        mean, variance = _moments(features(s) for s in train_slides)
        session = _Session(cfg, dim, mean, variance)
        n_model = len(session.model.variables)
        history, best_epoch, best_loss, best_values = [], None, None, session.model_values()
        state = load_state(run / "backup", log)
        if state is not None:
            shapes = [tuple(np.shape(v)) for v in session.values()]
            shapes += shapes[:n_model]
            # Shapes, not names: Keras numbers some variable names per process (seed_generator_1, ...).
            if [tuple(np.shape(v)) for v in state.values] != shapes:
                raise MilRunError(f"{run}/backup: the resume state does not match this model (another hcdtf "
                                  "version?); rerun with --overwrite to start again")
            session.restore(state.values[:len(session.variables)])
            best_values = state.values[len(session.variables):]
            history, best_epoch, best_loss = state.meta["history"], state.meta["best_epoch"], state.meta["best_loss"]
            log(f"{run}: resuming after epoch {state.epoch} of {cfg.epochs}")
        else:
            log(f"{run}: {len(train_slides)} training and {len(val_slides)} validation slides, {dim} features, "
                f"{cfg.epochs} epochs")
        t_run = time.perf_counter()
        for epoch in range(len(history), cfg.epochs):
            t0 = time.perf_counter()
            order = np.random.default_rng([cfg.seed, epoch, 0xB465]).permutation(len(train_slides))
            losses = []
            for step, n in enumerate(order):
                s = train_slides[int(n)]
                y = float(labels[s])
                x = subsample(features(s), cfg.max_instances, (cfg.seed, epoch, step))
                losses.append(float(session.step(x, np.float32(y), np.float32(weight[labels[s]]))))
                kill_point("mil-step")
            row = {"epoch": epoch + 1, "loss": float(np.mean(losses)), "val_loss": None, "val_auc": None}
            if val_slides:
                probs = np.array([session.predict(features(s))[0] for s in val_slides])
                ys = np.array([labels[s] for s in val_slides])
                row["val_loss"] = float(np.mean([bce(y, p) for y, p in zip(ys, probs)]))
                row["val_auc"] = _auc(ys, probs)
            row["seconds"] = round(time.perf_counter() - t0, 3)
            history.append(row)
            key = row["val_loss"] if val_slides else -float(epoch)
            if best_loss is None or key < best_loss:
                best_epoch, best_loss, best_values = epoch + 1, key, session.model_values()
            save_state(run / "backup", ResumeState(epoch + 1, session.names() + [
                f"best/{n}" for n in session.names()[:n_model]], session.values() + list(best_values),
                _state_meta(history, best_epoch, best_loss)))
            kill_point("mil-epoch")
            write_text(run / "history.csv", _history_csv(history))
            if run != target.path:  # --overwrite: the new run has an epoch; it replaces the old one
                log(f"{target.path}: the new run has a finished epoch; replacing the old run")
                target.swap_in(work)
                run = target.path
            log(f"epoch {epoch + 1}/{cfg.epochs}: loss {row['loss']:.4f}"
                + (f", val_loss {row['val_loss']:.4f}, val_auc {row['val_auc']:.3f}" if val_slides else "")
                + f" ({row['seconds']:.1f} s)")
        write_text(run / "history.csv", _history_csv(history))
        for v, value in zip(session.model.variables, best_values):
            v.assign(value)
        return _finish(run, session, cfg, labels, val_slides, features, history, best_epoch, dim,
                       time.perf_counter() - t_run, log)
    finally:
        lock.release()


def _moments(arrays) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and variance over every instance of ``arrays`` (float64 sums, one pass)."""
    n, total, squares = 0, 0.0, 0.0
    for x in arrays:
        x = x.astype(np.float64)
        n, total, squares = n + len(x), total + x.sum(0), squares + (x * x).sum(0)
    mean = total / n
    return mean.astype(np.float32), np.maximum(squares / n - mean * mean, 0.0).astype(np.float32)


def _auc(ys: np.ndarray, scores: np.ndarray) -> float | None:
    if len(set(ys.tolist())) < 2:
        return None
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(ys, scores))


def _read_json(path: pathlib.Path) -> dict | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


ARTIFACTS = ("run.json", "config.yaml", "backup", "history.csv", "folds.csv", "model.keras", "val_predictions.csv",
             "train_summary.json")


class MilRunDir(RunDir):
    """A MIL run directory: :class:`hcdtf.rundir.RunDir`'s lock-free parts (staging, the journalled
    swap, recovery after a kill) with the MIL run's own artifacts to clear when a new run is
    swapped in, including the evaluation and predictions ``mil evaluate|predict`` wrote by
    default (they describe the old model)."""

    def clear(self) -> None:
        import shutil

        from hcdtf.rundir import remove_temporaries

        for name in ("train_summary.json",) + ARTIFACTS + ("eval", "predictions"):  # the finished mark first
            p = self.path / name
            if p.is_dir():
                shutil.rmtree(p)
            else:
                p.unlink(missing_ok=True)
        remove_temporaries(self.path)


def _state(run: pathlib.Path, config_text: str) -> str:
    """``fresh`` (nothing there), ``complete`` / ``resume`` (a finished / unfinished run of this
    config), ``conflict`` (a MIL run of another config or other bags), ``foreign`` (anything else)."""
    entries = [p for p in run.iterdir() if p.name not in (".lock", ".staging")] if run.is_dir() else []
    if not entries:
        return "fresh"
    try:
        config = (run / "config.yaml").read_text()
    except OSError:
        config = None
    run_json = _read_json(run / "run.json")
    if not (config or "").startswith("mil:") and (run_json is None or run_json.get("kind") != KIND):
        return "foreign"  # config.yaml is written before run.json: either marks a MIL run
    if config != config_text:
        return "conflict"
    return "complete" if (run / "train_summary.json").is_file() else "resume"


def _workspace(target, config_text: str, overwrite: bool, log):
    """Where to train: the run directory, or its staging directory when ``overwrite`` replaces a
    run (the old run stays whole until the new one has an epoch, then :meth:`MilRunDir.swap_in`
    swaps it in); a finished run of this config is returned as its summary."""
    run, staging = target.path, target.staging()
    state = _state(run, config_text)
    if state == "foreign":
        what = "another kind of run" if _read_json(run / "run.json") is not None else "files that are not a MIL run"
        raise MilRunError(f"--output-dir {run} holds {what}; choose an empty or new directory")
    if state == "complete" and not overwrite:
        return _read_json(run / "train_summary.json")
    if state == "conflict" and not overwrite:
        staged = " (an --overwrite of it was interrupted: rerun that command to continue it)" \
            if (staging.path / "config.yaml").is_file() else ""
        raise MilRunError(f"--output-dir {run} holds a MIL run of another config or other bags (see its "
                          f"config.yaml){staged}; rerun with --overwrite to replace it, or choose another directory")
    if state in ("complete", "conflict"):
        if _state(staging.path, config_text) != "resume":
            target.discard_staging()
        log(f"{run}: --overwrite: training the replacement in {staging.path}; the old run stays until it has an "
            "epoch")
        return staging
    target.discard_staging()
    return target


HEAD_NAMES = {"abmil": "ABMIL", "clam_sb": "CLAM-SB"}


def _encoder_of(cfg: MilConfig) -> str | None:
    """The ``encoder_sha256`` every bag records (``slide embed``'s), None if they differ or do not
    say (CLAM's or TRIDENT's bags)."""
    from hcdtf.slide.embed import read_attrs

    found = {(read_attrs(path) or {}).get("encoder_sha256") for path in bags_lib.list_bags(cfg.bags).values()}
    return found.pop() if len(found) == 1 and None not in found else None


def _finish(run, session, cfg, labels, val_slides, features, history, best_epoch, dim, seconds, log) -> dict:
    from hcdtf.atomic import atomic_output, write_json, write_text

    with atomic_output(run / "model.keras") as tmp:
        session.model.save(tmp)
    rows = ["slide,label,score\n"]
    for s in val_slides:
        rows.append(f"{s},{labels[s]},{session.predict(features(s))[0]:.6f}\n")
    write_text(run / "val_predictions.csv", "".join(rows))
    best = history[best_epoch - 1] if best_epoch else {}
    encoder = _encoder_of(cfg)
    summary = {"kind": KIND, "model": "model.keras", "head": cfg.head,
               # what `hcdtf compare` groups repeats by (runs of one arch over seeds/folds): the head
               # and the encoder whose bags it learnt from
               "arch": HEAD_NAMES[cfg.head] + (f" (encoder {encoder[:8]})" if encoder else ""),
               "encoder_sha256": encoder,
               "architecture": {"abmil": "gated-attention MIL (Ilse et al. 2018)",
                                "clam_sb": "CLAM-SB (Lu et al. 2021)"}[cfg.head],
               "features": dim, "epochs": len(history), "best_epoch": best_epoch,
               "best_val_loss": best.get("val_loss"), "best_val_auc": best.get("val_auc"),
               "train_slides": len(labels) - len(val_slides), "validation_slides": len(val_slides),
               "fold": cfg.fold if cfg.folds else None, "folds": cfg.folds, "seed": cfg.seed,
               "split_seed": cfg.split_seed if cfg.folds else None,  # fold k is other slides for another split seed
               "train_seconds_this_process": round(seconds, 2)}
    write_json(run / "train_summary.json", summary)
    log(f"{run}: finished; best epoch {best_epoch}" + (f", val_auc {best.get('val_auc')}" if val_slides else ""))
    return summary
