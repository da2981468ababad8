"""Statistics across repeated training runs: per-model summaries, the paired test over repeats
with Holm families, and the verdict on depth written from them.

A *model* is an architecture trained one way (transfer strategy, kind of initial weights); a
*repeat* is one training run of it, identified by its seed and fold. A DeLong test
(:func:`hcdtf.evaluation.metrics.delong_test`) compares two trained networks on one test set and treats
each as fixed; it cannot say whether architecture A, trained again, would still beat B. That
question needs the variation between runs, estimated from repeats.

The test: a paired t-test over repeats
    For models A and B, the repeats they share (same seed and fold) give differences
    d_r = AUC_A,r - AUC_B,r; t = mean(d) / (sd(d) / sqrt(n)) with n - 1 degrees of freedom,
    two-sided. Why this one, with the 2-5 repeats that training budgets allow:

    - Pairing by (seed, fold) removes what runs of one repeat share (data order, fold).
    - A permutation (sign-flip) test over n repeats has only 2^n sign patterns, so its smallest
      two-sided p-value is 2 / 2^n: 0.0625 for n = 5 and 0.5 for n = 2. It can never reject at
      0.05 with five repeats or fewer.
    - A (hierarchical) bootstrap over n <= 5 repeats underestimates the spread of a mean of so
      few values (its variance is (n-1)/n of the plug-in estimate, and it has no t-like tails),
      so it rejects too often at exactly the repeat counts used here.
    - The t-test is exact when the differences are normal; under the null hypothesis "A and B
      have the same distribution of run AUCs" the differences are symmetric about 0, where the
      t-test holds its level well even for non-normal AUCs. Its n - 1 degrees of freedom make it
      honest about how little a few runs show: the 95% critical |t| is 12.7 for 2 repeats, 4.3
      for 3, 2.8 for 5. ``tests/test_repeats.py`` checks its false-positive rate on simulated
      grids whose run AUCs come from simulated predictions (bounded, skewed, with run-to-run and
      test-set noise), where single-run DeLong tests reject far too often.

    The test set is fixed, so the inference is conditional on it: it asks whether retraining
    reproduces the ordering on these test examples. With one repeat no such test exists, and the
    verdict says so.

Multiple comparisons
    Holm's adjustment (:func:`hcdtf.evaluation.metrics.holm_adjust`) within *families*: the pairs of models
    of one setting (transfer strategy and weights: the depth question for that setting) form one
    family; pairs across settings form another. The verdict for a setting uses its family.
"""

from __future__ import annotations

import itertools
import math
from typing import Any, Mapping, Sequence

import numpy as np

from hcdtf.evaluation.metrics import holm_adjust

__all__ = ["ACROSS_SETTINGS", "compare_repeats", "depth_verdict", "paired_t_test", "summarize"]

#: Holm family of the pairs whose two models belong to different settings.
ACROSS_SETTINGS = "across settings"


def summarize(values: Sequence[float]) -> dict[str, Any]:
    """``n``, ``mean``, ``sd`` (sample standard deviation; None for one value), ``min``, ``max``."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("no values to summarise")
    return {
        "n": int(v.size),
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if v.size > 1 else None,
        "min": float(v.min()),
        "max": float(v.max()),
    }


def paired_t_test(a: Sequence[float], b: Sequence[float], alpha: float = 0.05) -> dict[str, Any]:
    """Two-sided paired t-test of mean(a - b) = 0 over repeats (``a[r]`` pairs with ``b[r]``).

    Returns ``n``, ``mean_diff``, ``sd_diff``, ``diff_ci`` (the (1 - alpha) t interval), ``t``,
    ``df`` and ``p_value``; with fewer than 2 pairs everything but ``n`` and ``mean_diff`` is None
    (no between-run variance can be estimated from one run). Identical differences in every
    repeat (sd 0) give p = 1 if they are 0; if they are not, the test is undefined (p None): with
    so few repeats and AUCs on a small test set, equal differences happen by chance (0.61 - 0.56
    and 0.55 - 0.50), and t = inf would claim a certainty that two runs cannot give.
    """
    from scipy.stats import t as student_t

    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    if d.ndim != 1 or not np.all(np.isfinite(d)):
        raise ValueError("paired_t_test needs two equally long 1-D vectors of finite AUCs")
    n = int(d.size)
    out: dict[str, Any] = {"n": n, "mean_diff": float(d.mean()) if n else None, "sd_diff": None,
                           "diff_ci": None, "t": None, "df": None, "p_value": None}
    if n < 2:
        return out
    mean, sd = float(d.mean()), float(d.std(ddof=1))
    out.update(sd_diff=sd, df=n - 1)
    if sd <= 1e-12 * max(1.0, abs(mean)):
        if abs(mean) <= 1e-12:
            out.update(t=0.0, p_value=1.0, diff_ci=[mean, mean])
        return out
    se = sd / math.sqrt(n)
    t = mean / se
    half = float(student_t.ppf(1.0 - alpha / 2.0, n - 1)) * se
    out.update(t=t, p_value=float(2.0 * student_t.sf(abs(t), n - 1)),
               diff_ci=[mean - half, mean + half])
    return out


def compare_repeats(models: Sequence[Mapping[str, Any]], alpha: float = 0.05) -> list[dict[str, Any]]:
    """Paired t-tests for every pair of models, Holm-adjusted within families.

    ``models``: dicts with ``name``, ``family`` (the setting: pairs within one family form one
    Holm family, pairs across families the family :data:`ACROSS_SETTINGS`) and ``aucs`` (a
    mapping repeat key -> test AUC). Returns one dict per pair, in model order: ``a``, ``b``,
    ``family``, ``repeats`` (the paired keys), ``unpaired`` (repeats of only one of the two), the
    fields of :func:`paired_t_test` and ``p_value_holm`` (None where no test was possible).
    """
    pairs = []
    for a, b in itertools.combinations(models, 2):
        keys = [k for k in a["aucs"] if k in b["aucs"]]
        unpaired = [k for k in a["aucs"] if k not in b["aucs"]] + [
            k for k in b["aucs"] if k not in a["aucs"]
        ]
        test = paired_t_test([a["aucs"][k] for k in keys], [b["aucs"][k] for k in keys], alpha)
        family = a["family"] if a["family"] == b["family"] else ACROSS_SETTINGS
        pairs.append({"a": a["name"], "b": b["name"], "family": family, "repeats": keys,
                      "unpaired": unpaired, **test, "p_value_holm": None})
    for family in dict.fromkeys(p["family"] for p in pairs):
        tested = [p for p in pairs if p["family"] == family and p["p_value"] is not None]
        for p, adj in zip(tested, holm_adjust([p["p_value"] for p in tested])):
            p["p_value_holm"] = adj
    return pairs


# --------------------------------------------------------------------------------------------
# The verdict
# --------------------------------------------------------------------------------------------


def _auc_list(members: Sequence[Mapping[str, Any]]) -> str:
    def one(m: Mapping[str, Any]) -> str:
        sd = f" ± {m['auc_sd']:.4f}" if m["n_repeats"] > 1 else ""
        return f"{m['arch']} {m['auc_mean']:.4f}{sd}"

    return ", ".join(one(m) for m in members)


def _repeats_phrase(members: Sequence[Mapping[str, Any]]) -> str:
    counts = sorted({m["n_repeats"] for m in members})
    if counts == [1]:
        return "one run each"
    n = str(counts[0]) if len(counts) == 1 else f"{counts[0]}-{counts[-1]}"
    return f"mean ± sd over {n} runs"


def _ratio(deep: Mapping[str, Any], shallow: Mapping[str, Any], key: str) -> float | None:
    a, b = deep.get(key), shallow.get(key)
    return a / b if a and b else None


def _cost_sentence(members: Sequence[Mapping[str, Any]]) -> str:
    deep, shallow = members[-1], members[0]
    parts = []
    r_time = _ratio(deep, shallow, "wall_time_s_mean")
    r_flops = _ratio(deep, shallow, "flops_per_image")
    if r_time is not None:
        parts.append(f"{r_time:.1f}x the training time")
    if r_flops is not None:
        parts.append(f"{r_flops:.1f}x the FLOPs per image")
    if not parts:
        return ""
    return f" Cost: {deep['arch']} takes {' and '.join(parts)} of {shallow['arch']}."


def _pair_phrase(p: Mapping[str, Any], by_name: Mapping[str, Mapping[str, Any]]) -> str:
    """'X beats Y by d AUC (95% CI lo to hi, adjusted p = ...)', the winner first."""
    a, b = by_name[p["a"]], by_name[p["b"]]
    lo, hi = p["diff_ci"]
    win, lose = (a, b) if p["mean_diff"] > 0 else (b, a)
    if p["mean_diff"] < 0:
        lo, hi = -hi, -lo
    return (f"{win['arch']} beats {lose['arch']} by {abs(p['mean_diff']):.4f} AUC "
            f"(unadjusted 95% CI {lo:.4f} to {hi:.4f}, adjusted p = {p['p_value_holm']:.3g})")


def _cheapest_equivalent(members, tested, alpha: float) -> str:
    """The cheapest model (FLOPs, then time) not distinguishable from the best mean AUC."""
    best = max(members, key=lambda m: m["auc_mean"])
    worse = set()
    for p in tested:
        if p["p_value_holm"] < alpha and best["name"] in (p["a"], p["b"]):
            worse.add(p["b"] if p["a"] == best["name"] else p["a"])
    cost = lambda m: (m.get("flops_per_image") or math.inf, m.get("wall_time_s_mean") or math.inf)  # noqa: E731
    cheapest = min((m for m in members if m["name"] not in worse), key=cost)
    if cheapest is best:
        return f" {best['arch']} has the best mean AUC and no cheaper depth matches it."
    return (f" The cheapest depth not distinguishable from the best ({best['arch']}) is "
            f"{cheapest['arch']}.")


def _family_verdict(family: str, members, pairs, alpha: float) -> str:
    by_name = {m["name"]: m for m in members}
    head = f"**{family}** ({_repeats_phrase(members)}): test AUC {_auc_list(members)}."
    tested = [p for p in pairs if p["p_value"] is not None]
    note = ""
    if members[0].get("weights_kind") not in ("imagenet", None):
        start = "random weights" if members[0]["weights_kind"] == "none" else "a weights file"
        note = f" These runs start from {start}, not ImageNet: they do not test the paper's setting."
    if not tested and pairs and all(p["n"] >= 2 for p in pairs):
        # paired repeats, but each pair's difference is the same in every repeat (sd 0): the t-test
        # is undefined there (paired_t_test), which is not "one run per model"
        return (head + " The runs are paired by seed and fold, but each pair's AUC difference is the "
                "same in every repeat it shares (sd 0), where the paired t-test is undefined: more "
                "repeats would tell whether depth improves AUC." + _cost_sentence(members) + note)
    if not tested:
        return (head + " With one run per model (no two runs paired by seed and fold), run-to-run "
                "variation cannot be estimated, so whether depth improves AUC cannot be judged from "
                "these runs; the DeLong tests compare only these particular trained networks."
                + _cost_sentence(members) + note)
    n_min = min(p["n"] for p in tested)
    test = (f"paired t-test over {n_min}{'+' if any(p['n'] > n_min for p in tested) else ''} "
            f"repeats, Holm-adjusted over {len(tested)} pair{'s' if len(tested) > 1 else ''}")
    weak = (f" With {n_min} repeats only differences several times the run-to-run spread can be "
            "detected." if n_min < 3 else "")
    sig = [p for p in tested if p["p_value_holm"] < alpha]
    if not sig:
        top = min(tested, key=lambda p: p["p_value_holm"])
        return (head + f" Not distinguishable: no difference between depths exceeds run-to-run "
                f"variation ({test}; smallest adjusted p = {top['p_value_holm']:.3g}, "
                f"{top['a']} vs {top['b']}), so these runs do not show that depth improves AUC."
                + weak + _cost_sentence(members) + note)

    def deeper_wins(p) -> bool:
        a, b = by_name[p["a"]], by_name[p["b"]]
        return (a["depth"] > b["depth"]) == (p["mean_diff"] > 0)

    up = [p for p in sig if deeper_wins(p)]
    down = [p for p in sig if not deeper_wins(p)]
    if up and not down:
        lead = "Depth helps beyond run-to-run variation"
    elif down and not up:
        lead = "Depth hurts beyond run-to-run variation"
    else:
        lead = "Mixed: greater depth helps in some pairs and hurts in others"
    rest = (f"; the other {len(tested) - len(sig)} pairs are not distinguishable"
            if len(sig) < len(tested) else "")
    return (head + f" {lead} ({test}): " + "; ".join(_pair_phrase(p, by_name) for p in sig)
            + rest + "." + _cheapest_equivalent(members, tested, alpha) + _cost_sentence(members)
            + note)


def depth_verdict(models: Sequence[Mapping[str, Any]], pairs: Sequence[Mapping[str, Any]],
                  alpha: float = 0.05) -> str:
    """One paragraph: per setting (family), does depth improve test AUC beyond run-to-run
    variation, and at what cost (training time and FLOPs of the deepest vs the shallowest).

    ``models``: dicts with ``name``, ``arch``, ``family``, ``kind``, ``depth``, ``n_repeats``,
    ``auc_mean``, ``auc_sd``, ``wall_time_s_mean``, ``flops_per_image`` and ``weights_kind``;
    ``pairs`` from :func:`compare_repeats`. Baselines and models without a depth are left out.
    """
    cnn = [m for m in models if m.get("kind") == "cnn" and m.get("depth") is not None]
    parts = []
    for family in dict.fromkeys(m["family"] for m in cnn):
        members = sorted((m for m in cnn if m["family"] == family), key=lambda m: m["depth"])
        if len({m["depth"] for m in members}) < 2:
            continue
        names = {m["name"] for m in members}
        mine = [p for p in pairs if p["family"] == family and {p["a"], p["b"]} <= names]
        parts.append(_family_verdict(family, members, mine, alpha))
    if not parts:
        return ("No setting (transfer strategy and initial weights) was trained at more than one "
                "depth, so these runs cannot say whether depth improves AUC.")
    return " ".join(parts)
