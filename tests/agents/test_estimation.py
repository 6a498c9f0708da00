"""The quality estimate without labels (agents/drift/estimation.py): on windows whose P(label | inputs) is the
baseline's, the estimate follows the realised macro-F1 however the inputs move, from probabilities fitted with
balanced weights (not calibrated as they stand); under a concept shift it cannot, and says so; a big enough
estimated fall is a drop; a baseline too small to calibrate gives no estimate."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import f1_score

from poise.agents.drift import estimation
from poise.agents.drift.decision import decide
from poise.agents.drift.reference import Reference, Window

META = {"classes": ["no", "yes"], "positive_class": "yes", "target": "t", "features": ["x"]}


def served(x: np.ndarray) -> pd.DataFrame:
    """A model fitted with balanced weights: its probabilities aim at a balanced prior, so they are too high."""
    q = 1 / (1 + np.exp(-(3 * x - 1.5)))
    return pd.DataFrame({"label": np.where(q > 0.5, "yes", "no"), "proba_no": 1 - q, "proba_yes": q})


def labelled(x: np.ndarray, rng: np.random.Generator, concept_shift: float = 0.0) -> np.ndarray:
    p = 1 / (1 + np.exp(-(3 * x - 4 + concept_shift)))
    return np.where(rng.random(len(x)) < p, "yes", "no")


def reference(rng: np.random.Generator, n: int = 4000) -> Reference:
    x = rng.normal(0, 1, n)
    frame = pd.DataFrame({"x": x, "t": labelled(x, rng)})
    return Reference(train=frame, holdout=frame, predictions=served(x), meta=META)


def window(rng: np.random.Generator, shift: float, concept_shift: float = 0.0, n: int = 3000,
           labels: bool = True) -> tuple[Window, np.ndarray]:
    x = rng.normal(shift, 1, n)
    truth = labelled(x, rng, concept_shift)
    return Window(features=pd.DataFrame({"x": x}), predictions=served(x),
                  labels=pd.Series(truth if labels else np.nan), n_rows=n), truth


@pytest.mark.parametrize("shift", [0.0, 0.7, -0.7])
def test_the_estimate_follows_the_realised_macro_f1_under_covariate_shift(shift):
    rng = np.random.default_rng(1)
    ref = reference(rng)
    found, truth = window(rng, shift)
    estimate = estimation.estimate(ref, found, None, seed=0)
    realised = f1_score(truth, found.predictions["label"], average="macro")
    assert abs(estimate["estimated"]["macro_f1"] - realised) < 0.03
    low, high = estimate["interval"]["macro_f1"]
    assert low <= realised <= high
    # uncalibrated, the same arithmetic is far off: the balanced-weight probabilities overstate the positives
    raw = estimation._expected_confusion(found.predictions[["proba_no", "proba_yes"]].to_numpy(),
                                         (found.predictions["label"] == "yes").to_numpy().astype(int))
    assert abs(estimation._figures(raw, 1)["macro_f1"] - realised) > abs(estimate["estimated"]["macro_f1"] - realised)
    assert estimate["realised"]["n_labelled"] == len(truth)
    assert estimate["realised"]["realised"]["macro_f1"] == pytest.approx(realised)


def test_a_concept_shift_is_not_seen_and_the_record_says_so():
    rng = np.random.default_rng(2)
    ref = reference(rng)
    found, truth = window(rng, 0.0, concept_shift=2.5)
    estimate = estimation.estimate(ref, found, None, seed=0)
    realised = f1_score(truth, found.predictions["label"], average="macro")
    assert abs(estimate["estimated"]["macro_f1"] - estimate["baseline"]["macro_f1"]) < 0.03  # inputs unchanged
    assert estimate["realised"]["realised"]["macro_f1"] == pytest.approx(realised)
    assert realised > estimate["interval"]["macro_f1"][1]  # the labels moved, the estimate cannot know
    assert "P(label | inputs) is unchanged" in estimation.described(estimate)


def test_the_estimate_never_reads_the_window_labels():
    rng = np.random.default_rng(3)
    ref = reference(rng)
    found, _ = window(rng, 0.5)
    unlabelled = Window(features=found.features, predictions=found.predictions,
                        labels=pd.Series(np.nan, index=found.labels.index), n_rows=found.n_rows)
    with_labels, without = (estimation.estimate(ref, w, None, seed=0) for w in (found, unlabelled))
    assert with_labels["estimated"] == without["estimated"]
    assert with_labels["interval"] == without["interval"]
    assert without["realised"] is None


def test_inputs_moved_to_where_the_model_is_unsure_are_an_estimated_drop():
    rng = np.random.default_rng(4)
    ref = reference(rng)
    near_boundary = Window(features=pd.DataFrame({"x": np.full(2000, 1.2)}), predictions=served(np.full(2000, 1.2)),
                           labels=pd.Series(np.nan, index=range(2000)), n_rows=2000)
    estimate = estimation.estimate(ref, near_boundary, None, seed=0)
    assert estimate["dropped"]
    assert estimate["drop_test"]["macro_f1_fall"] >= estimation.MIN_ESTIMATED_DROP
    clean, _ = window(rng, 0.0)
    assert not estimation.estimate(ref, clean, None, seed=0)["dropped"]
    analysis = {"performance": None, "prior": {"shifted": False}, "prior_matched": None, "drifted": False,
                "estimated_quality": estimate}
    outcome, reason = decide(analysis)
    assert outcome == "estimated_drop"
    assert "estimated macro-F1" in reason and "without labels" in reason


def test_a_new_class_prior_moves_the_estimate():
    rng = np.random.default_rng(5)
    ref = reference(rng)
    found, _ = window(rng, 0.0, labels=False)
    as_is = estimation.estimate(ref, found, None, seed=0)
    shares = ref.holdout["t"].value_counts(normalize=True)
    moved = estimation.estimate(ref, found, {"yes": 3 * shares["yes"], "no": 1 - 3 * shares["yes"]}, seed=0)
    assert moved["estimated"]["f1"] > as_is["estimated"]["f1"] + 0.05  # more positives: more of the flags are right
    assert "estimated class prior" in moved["method"]


def test_too_small_a_baseline_gives_no_estimate_and_says_so():
    rng = np.random.default_rng(6)
    ref = reference(rng, n=40)
    found, _ = window(rng, 0.0)
    assert estimation.estimate(ref, found, None, seed=0) is None
    assert "not estimated" in estimation.described(None)
    assert estimation.short(None) == ""


def test_multiclass_estimates_every_class():
    rng = np.random.default_rng(7)
    n = 3000
    x = rng.normal(0, 1, n)
    logits = np.column_stack([-x, np.zeros(n), x]) * 2
    proba = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    truth = np.array([rng.choice(["a", "b", "c"], p=p) for p in proba])
    predictions = pd.DataFrame({"label": np.array(["a", "b", "c"])[proba.argmax(axis=1)],
                                **{f"proba_{c}": proba[:, i] for i, c in enumerate("abc")}})
    meta = {"classes": ["a", "b", "c"], "positive_class": None, "target": "t", "features": ["x"]}
    frame = pd.DataFrame({"x": x, "t": truth})
    ref = Reference(train=frame, holdout=frame, predictions=predictions, meta=meta)
    found = Window(features=frame[["x"]], predictions=predictions, labels=pd.Series(truth), n_rows=n)
    estimate = estimation.estimate(ref, found, None, seed=0)
    assert "f1" not in estimate["estimated"]
    assert set(estimate["per_class_f1"]) == {"a", "b", "c"}
    assert abs(estimate["estimated"]["macro_f1"] - f1_score(truth, predictions["label"], average="macro")) < 0.03
