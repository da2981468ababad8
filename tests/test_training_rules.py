"""The training rules, checked against the rules themselves rather than against the code's own
output: the best epoch, early stopping and the plateau schedule as table tests of the pure
functions in hcdtf.training.train, the balanced class weights against scikit-learn, and one multi-epoch
run (class weights on, plateau schedule, early stopping) whose history, summary and best
checkpoint are recomputed here from history.csv and val_predictions.csv."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.utils.class_weight import compute_class_weight

from hcdtf.evaluation import artifacts
from hcdtf.training import train

from conftest import testing_config

NAN = float("nan")


def _history(*aucs):
    return [{"epoch": str(i + 1), "val_auc": str(a)} for i, a in enumerate(aucs)]


# ----------------------------------------------------------------------------- best epoch
@pytest.mark.parametrize("aucs, best", [
    ((), None),
    ((0.5,), 1),
    ((0.5, 0.7, 0.6), 2),
    ((0.7, 0.6, 0.5), 1),
    ((0.6, 0.8, 0.8, 0.7), 2),       # ties: the first epoch that reached it
    ((NAN, 0.6, 0.55), 2),            # an epoch without a validation AUC is never the best
    ((NAN, NAN), None),
    ((0.5, 0.5001, 0.9, 0.95), 4),   # the last epoch when it is the best
])
def test_best_epoch_is_the_first_argmax_of_val_auc(aucs, best):
    assert train.best_epoch(_history(*aucs)) == best


def test_best_epoch_reads_the_epoch_numbers_of_the_rows():
    rows = [{"epoch": "3", "val_auc": "0.6"}, {"epoch": "4", "val_auc": "0.9"}, {"epoch": "5", "val_auc": "0.7"}]
    assert train.best_epoch(rows) == 4


# ----------------------------------------------------------------------------- early stopping
@pytest.mark.parametrize("aucs, patience, stop", [
    ((), 3, False),
    ((0.5, 0.4, 0.3, 0.2), 0, False),          # patience 0: never stop
    ((0.5, 0.6), 1, False),                    # the last epoch is the best
    ((0.6, 0.5), 1, True),
    ((0.5, 0.6, 0.55, 0.55), 2, True),         # two epochs since the best (epoch 2)
    ((0.5, 0.6, 0.55, 0.55), 3, False),
    ((0.5, 0.6, 0.6, 0.6), 2, True),           # equalling the best is no new best
    ((0.5, 0.4, 0.3, 0.7, 0.6), 3, False),     # a late best restarts the count
    ((NAN, NAN, NAN), 3, True),                # no validation AUC at all in 3 epochs
])
def test_early_stopping_counts_epochs_since_the_best(aucs, patience, stop):
    assert train.should_stop(_history(*aucs), patience) is stop


# ----------------------------------------------------------------------------- plateau schedule
@pytest.mark.parametrize("aucs, lr", [
    ((), 1.0),
    ((0.5, 0.6, 0.7, 0.8), 1.0),                       # always improving
    ((0.5, 0.5), 1.0),                                 # one flat epoch < patience 2
    ((0.5, 0.5, 0.5), 0.2),                            # two flat epochs: reduce once
    ((0.5, 0.5, 0.5, 0.5), 0.2),                       # the wait restarts after a reduction
    ((0.5, 0.5, 0.5, 0.5, 0.5), 0.04),                 # ... and reduces again two epochs later
    ((0.5, 0.5, 0.6, 0.6), 1.0),                       # an improvement resets the wait
    ((0.5, 0.50005, 0.50009), 0.2),                    # gains below min_delta are no improvement
    ((0.5, 0.4, 0.45), 0.2),                           # worse, then better but not above the best
    ((NAN, NAN, NAN), 0.2),                            # no AUC: no improvement
])
def test_plateau_learning_rate_table(aucs, lr):
    assert train.plateau_learning_rate(_history(*aucs), 1.0) == pytest.approx(lr, rel=1e-12)


def test_plateau_learning_rate_factor_patience_and_delta():
    h = _history(0.5, 0.5, 0.5, 0.5)
    assert train.plateau_learning_rate(h, 0.1, factor=0.5, patience=1) == pytest.approx(0.1 * 0.5 ** 3)
    assert train.plateau_learning_rate(h, 0.1, factor=0.5, patience=4) == pytest.approx(0.1)
    assert train.plateau_learning_rate(_history(0.5, 0.52, 0.525), 1.0, min_delta=0.03) == pytest.approx(0.2)


# ----------------------------------------------------------------------------- class weights
@pytest.mark.parametrize("labels", [[0, 0, 0, 1], [0, 1, 1, 1, 1, 1, 1, 1], [0, 1] * 5,
                                    list(np.random.default_rng(3).integers(0, 2, 101))])
def test_class_weights_are_sklearns_balanced_weights(labels):
    labels = np.array(labels)
    want = compute_class_weight("balanced", classes=np.array([0, 1]), y=labels)
    got = train.balanced_class_weights(labels)
    assert sorted(got) == [0, 1]
    np.testing.assert_allclose([got[0], got[1]], want, rtol=1e-12)
    # Both classes then weigh the same in the loss: n / 2 each.
    counts = np.bincount(labels, minlength=2)
    assert got[0] * counts[0] == pytest.approx(len(labels) / 2) == pytest.approx(got[1] * counts[1])


def test_class_weights_of_the_training_split(data_dir, tmp_path):
    """class_weights(cfg) reads the training labels of the built data set (read here from the
    split with the ids, independently of the weights' code)."""
    from hcdtf.data import pipeline as data

    cfg = testing_config(data_dir, tmp_path)
    labels = np.concatenate([y for _, y in data.make_dataset(cfg.data, "train", 64, training=False)])
    want = compute_class_weight("balanced", classes=np.array([0, 1]), y=labels)
    cw = train.class_weights(cfg)
    np.testing.assert_allclose([cw[0], cw[1]], want, rtol=1e-12)
    assert cw[1] != cw[0]


# ----------------------------------------------------------------------------- one real multi-epoch run
# The frozen-base feature cache makes an epoch cost a few milliseconds; validating on the training
# split (77 patches) gives AUCs fine enough to tell epochs apart. With this seed and learning rate
# the validation AUC peaks at epoch 1, the plateau rule lowers the rate at epoch 4 and early
# stopping (patience 3) ends the run after epoch 4 of 8: every rule has something to decide. These
# dynamics are ResNet18's (random init), so the run names it (the testing config's is ResNet10).
RULES = ("model.arch=ResNet18", "model.transfer=freeze_base", "train.class_weight=true", "train.schedule=plateau", "train.epochs=8",
         "train.early_stopping_patience=3", "train.learning_rate=0.003", "train.steps_per_epoch=null",
         "train.batch_size=16", "data.validation_split=train")


@pytest.fixture(scope="module")
def rules_run(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("rules") / "run"
    summary = train.train(testing_config(data_dir, out, *RULES), log=lambda *_: None)
    return out, summary


def test_multi_epoch_run_best_epoch_is_the_argmax_and_its_checkpoint_scored(rules_run):
    out, summary = rules_run
    history = train.read_history(out / "history.csv")
    aucs = np.array([float(r["val_auc"]) for r in history])
    assert len(aucs) >= 3
    best = int(np.argmax(aucs)) + 1  # numpy's argmax: the first maximum
    assert summary["best_epoch"] == best
    assert summary["best_val_auc"] == pytest.approx(aucs[best - 1])
    # val_predictions.csv is scored with the restored best checkpoint: its AUC (scikit-learn, exact)
    # is the best epoch's validation AUC (Keras, 1000 thresholds), not the last epoch's.
    _, labels, scores = artifacts.read_predictions(out / "val_predictions.csv")
    auc = roc_auc_score(labels, scores)
    assert auc == pytest.approx(aucs[best - 1], abs=3e-3)
    others = np.delete(aucs, best - 1)
    assert np.min(np.abs(others - aucs[best - 1])) > 0.01, aucs  # the epochs can be told apart
    assert best != len(aucs), "the run should peak before its last epoch, or the test is too easy"


def test_multi_epoch_run_stops_early_and_lowers_the_rate_on_a_plateau(rules_run):
    out, summary = rules_run
    history = train.read_history(out / "history.csv")
    aucs = [float(r["val_auc"]) for r in history]
    # Early stopping, recomputed: stop after the first epoch e with e - (first argmax of 1..e) >= 3.
    stop_after = next((e for e in range(1, 9) if e - (int(np.argmax(aucs[:e])) + 1) >= 3), 8)
    assert summary["epochs_completed"] == len(history) == stop_after < 8
    # Plateau: epoch k trains at 0.003 * 0.2^(reductions decided from epochs 1..k-1), Keras' rule
    # (patience 2, min_delta 1e-4, the wait restarts after each reduction).
    lr, best, wait, want = 0.003, -math.inf, 0, []
    for a in aucs:
        want.append(lr)
        if a > best + 1e-4:
            best, wait = a, 0
        else:
            wait += 1
            if wait == 2:
                lr, wait = lr * 0.2, 0
    got = [float(r["learning_rate"]) for r in history]
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert min(got) < 0.003, "the plateau rule should have lowered the rate in this run"


def test_class_weights_reach_the_loss(data_dir, rules_run, tmp_path):
    """The same first epoch without class weights has another training loss: the weights are
    passed to the fit, not only computed."""
    out, _ = rules_run
    plain = tmp_path / "plain"
    # (validated on the small validation split: the training loss does not depend on it)
    overrides = [o for o in RULES if not o.startswith(("train.class_weight", "train.epochs", "data.validation_split"))]
    train.train(testing_config(data_dir, plain, *overrides, "train.epochs=1", "train.class_weight=false"),
                log=lambda *_: None)
    weighted = float(train.read_history(out / "history.csv")[0]["loss"])
    unweighted = float(train.read_history(plain / "history.csv")[0]["loss"])
    assert abs(weighted - unweighted) > 1e-3, (weighted, unweighted)


# ----------------------------------------------------------------------------- layer-wise lr decay
def _beit_layer_id(var_name, num_max_layer):
    """BEiT's `get_num_layer_for_vit` (microsoft/unilm beit/optim_factory.py), transcribed."""
    if var_name in ("cls_token", "mask_token", "pos_embed"):
        return 0
    elif var_name.startswith("patch_embed"):
        return 0
    elif var_name.startswith("rel_pos_bias"):
        return num_max_layer - 1
    elif var_name.startswith("blocks"):
        return int(var_name.split(".")[1]) + 1
    else:
        return num_max_layer - 1


def _mae_layer_id(name, num_layers):
    """MAE's `get_layer_id_for_vit` (facebookresearch/mae util/lr_decay.py), transcribed."""
    if name in ["cls_token", "pos_embed"]:
        return 0
    elif name.startswith("patch_embed"):
        return 0
    elif name.startswith("blocks"):
        return int(name.split(".")[1]) + 1
    else:
        return num_layers


@pytest.mark.parametrize("depth", [1, 2, 12, 40])
@pytest.mark.parametrize("decay", [0.5, 0.65, 0.75, 0.9])
def test_layer_decay_multipliers_equal_beit_and_mae(depth, decay):
    """hcdtf's table against the two published rules on a timm/BEiT ViT's parameter names:
    BEiT's scales are `decay ** (L + 1 - id)` for ids 0..L+1 (run_class_finetuning.py), MAE's
    `decay ** (L + 1 - id)` with `num_layers = L + 1` (param_groups_lrd). Both give the final
    norm and the head the full rate, blocks `decay ** (L - i)`, the embeddings `decay ** (L + 1)`.
    (timm's `param_groups_layer_decay` differs in one place: its ViT `group_matcher` puts the
    final `norm` with the last block, `decay ** 1`; checked with timm 1.0.31.)"""
    from hcdtf.models.encoders import train_rules

    ours = train_rules.layer_decay_multipliers(depth, decay)
    beit_scales = [decay ** (depth + 1 - i) for i in range(depth + 2)]
    mae_scales = [decay ** (depth + 1 - i) for i in range(depth + 2)]
    names = {"cls_token": "embed", "pos_embed": "embed", "patch_embed.proj.weight": "embed",
             "norm.weight": "head", "head.weight": "head", "head.bias": "head"}
    names.update({f"blocks.{i}.attn.qkv.weight": i for i in range(depth)})
    names.update({f"blocks.{i}.mlp.fc2.bias": i for i in range(depth)})
    for name, group in names.items():
        beit = beit_scales[_beit_layer_id(name, len(beit_scales))]
        mae = mae_scales[_mae_layer_id(name, depth + 1)]
        assert ours[group] == pytest.approx(beit, rel=1e-12) == mae, (name, group)
    assert set(ours) == {"embed", "head", *range(depth)}
