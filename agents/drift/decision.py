"""The decision: one of four outcomes of a check, the action it calls for, and the reason in words.

Kept apart from detection so the rule that weighs the evidence — covariate drift beyond what the prior explains,
else a performance drop, else a prior shift, else nothing — can be read (and changed) in one place.
"""

from __future__ import annotations

from typing import Any

from poise.agents.drift.detection import DRIFT_SHARE
from poise.agents.metrics import lower_is_better

# Every decision a check can reach, and the action it calls for.
ACTION_OF = {"no_drift": "none", "prior_shift": "recalibrate", "covariate_drift": "retrain",
             "performance_drop": "retrain", "estimated_drop": "retrain"}


def _drift_text(evidence: dict[str, Any]) -> str:
    columns, multi = evidence["columns"], evidence["multivariate"]
    found = []
    if columns["drifted"]:
        found.append(f"{columns['n_drifted']} drifted columns, importance-weighted share "
                     f"{columns['weighted_share']:.2f} >= {DRIFT_SHARE}")
    if multi["drifted"]:
        found.append(f"domain classifier AUC {multi['auc']:.3f} > {multi['threshold']:.3f} "
                     f"(mostly {', '.join(list(multi['top_columns'])[:3])})")
    return "; ".join(found)


def _drop_text(perf: dict[str, Any]) -> str:
    worse = [f"{j['metric']} is {j['window_value']:.3f}, {'above' if lower_is_better(j['metric']) else 'below'} "
             f"the {j['expected_value']:.3f} expected at the window's class prior (difference 99% interval "
             f"{j['difference_interval_99'][0]:+.3f} to {j['difference_interval_99'][1]:+.3f})"
             for j in (perf["primary"], perf["brier"]) if j["dropped"]]
    return f"on {perf['n_labelled']} labelled rows " + " and ".join(worse)


def _estimate_text(estimate: dict[str, Any]) -> str:
    low, high = estimate["interval"]["macro_f1"]
    return (f"estimated macro-F1 {estimate['estimated']['macro_f1']:.3f} ({estimate['interval_level']:.0%} interval "
            f"{low:.3f} to {high:.3f}) without labels, against {estimate['baseline']['macro_f1']:.3f} on the "
            f"labelled baseline")


def decide(analysis: dict[str, Any]) -> tuple[str, str]:
    """One decision and its reason: covariate drift when the features moved beyond what the prior explains,
    else a performance drop on labelled feedback (the concept changed), else a prior shift, else an estimated
    drop (the unlabelled rows moved to where the model is less sure, by `estimation`), else no drift. Labels
    outrank the estimate, and a prior shift, which moves F1 by itself, is recalibrated rather than retrained."""
    perf, prior, matched = analysis["performance"], analysis["prior"], analysis["prior_matched"]
    dropped = perf is not None and perf["dropped"]
    perf_text = _drop_text(perf) if dropped else ""
    if analysis["drifted"] and (matched is None or matched["drifted"]):
        text = _drift_text(analysis)
        if matched is not None:
            text += f"; still drifted against the reference resampled to the new prior ({_drift_text(matched)})"
        return "covariate_drift", text + (f"; and {perf_text}" if dropped else "")
    if dropped:
        return "performance_drop", perf_text + "; the features did not move beyond the prior: the concept changed"
    if prior["shifted"]:
        shares = ", ".join(f"{c}: {prior['reference_prior'].get(c, 0):.3f} → {q:.3f}" for c, q in prior["prior"].items())
        how = ("the features match the reference once it is resampled to the new prior" if matched is not None
               else "the features did not move")
        return "prior_shift", f"class prior moved ({shares}, {prior['method']}); {how}"
    estimate = analysis["estimated_quality"]
    if perf is None and estimate is not None and estimate["dropped"]:
        return "estimated_drop", _estimate_text(estimate) + "; the inputs moved to where the model is less sure"
    columns, multi = analysis["columns"], analysis["multivariate"]
    return "no_drift", (f"{columns['n_drifted']} of {len(columns['columns'])} columns drifted (weighted share "
                        f"{columns['weighted_share']:.2f} < {DRIFT_SHARE}); domain classifier AUC "
                        f"{multi['auc']:.3f} <= {multi['threshold']:.3f}; prior unchanged")

