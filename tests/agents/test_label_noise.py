"""The label-noise audit: it finds labels flipped on purpose in a real bagged AutoGluon fit, flags few on clean
labels, and its summary, errors and weights say what they claim."""

import json

import numpy as np
import pandas as pd
import pytest
from autogluon.tabular import TabularPredictor

from poise.agents.label_noise import (
    DOWN_WEIGHT,
    MIN_ROWS_PER_CLASS,
    LabelAudit,
    audit,
    downweighted,
    kept_rows,
    with_overlap_caveat,
)

FLIPS_PER_CLASS = 15


def separable_table(rows: int = 1500, seed: int = 0) -> pd.DataFrame:
    """10 % positives, apart by three standard deviations on each of two numeric features; a colour that is noise."""
    rng = np.random.default_rng(seed)
    positive = rng.random(rows) < 0.1
    return pd.DataFrame({
        "x1": rng.normal(np.where(positive, 3.0, 0.0), 1.0),
        "x2": rng.normal(np.where(positive, -3.0, 0.0), 1.0),
        "colour": rng.choice(["red", "green", "blue"], rows),
        "y": np.where(positive, "yes", "no"),
    })


def with_flips(frame: pd.DataFrame, seed: int = 1) -> tuple[pd.DataFrame, np.ndarray]:
    """The table with 15 positives relabelled "no" and 15 negatives relabelled "yes", and their positions."""
    rng = np.random.default_rng(seed)
    flips = np.sort(np.concatenate([rng.choice(np.flatnonzero(frame["y"] == label), FLIPS_PER_CLASS, replace=False)
                                    for label in ("yes", "no")]))
    noisy = frame.copy()
    noisy.loc[flips, "y"] = np.where(frame.loc[flips, "y"] == "yes", "no", "yes")
    return noisy, flips


def oof_audit(frame: pd.DataFrame, path) -> LabelAudit:
    predictor = TabularPredictor("y", path=str(path), verbosity=0).fit(
        frame, num_bag_folds=5, hyperparameters={"GBM": {"ag_args_fit": {"num_cpus": 1}}}, time_limit=15,
        ag_args_ensemble={"fold_fitting_strategy": "sequential_local"})
    return audit(frame["y"], predictor.predict_proba_oof(), frame.index.to_series().map("row-{}".format))


@pytest.mark.slow
def test_the_audit_finds_flipped_labels_in_a_bagged_fit(tmp_path):
    noisy, flips = with_flips(separable_table())
    found = oof_audit(noisy, tmp_path / "noisy")
    hits = len(np.intersect1d(found.positions, flips))
    # measured: 32 flagged, 27 of the 30 flips (recall 0.90, precision 0.84)
    assert hits / len(flips) >= 0.7
    assert hits / len(found.positions) >= 0.7
    assert found.summary["suspects"] == len(found.positions)
    worst = found.summary["top"][0]
    assert worst["row_id"] in {f"row-{position}" for position in flips}
    assert worst["likely"] != worst["given"] == noisy.loc[int(worst["row_id"].removeprefix("row-")), "y"]
    json.dumps(found.summary)


@pytest.mark.slow
def test_clean_labels_are_rarely_flagged(tmp_path):
    found = oof_audit(separable_table(), tmp_path / "clean")
    # measured: 6 of 1,500 rows (the classes overlap a little: some rows are ambiguous, not mislabelled)
    assert len(found.positions) <= 15


def probabilities(proba_of_no) -> pd.DataFrame:
    """Binary out-of-fold probabilities from those of "no"."""
    return pd.DataFrame({"no": np.asarray(proba_of_no, dtype=float), "yes": 1 - np.asarray(proba_of_no, dtype=float)})


def audited_by_hand() -> tuple[pd.Series, pd.DataFrame, list[int]]:
    """40 "no" and 10 "yes" rows, predicted confidently as given, except three "no" rows that look like "yes" (rows
    5, 17, 30: label quality 0.1, 0.05, 0.01) and one "yes" row that looks like "no" (row 45: 0.03)."""
    labels = pd.Series(["no"] * 40 + ["yes"] * 10)
    proba_of_no = np.array([0.95] * 40 + [0.05] * 10)
    proba_of_no[[5, 17, 30, 45]] = [0.1, 0.05, 0.01, 0.97]
    return labels, probabilities(list(proba_of_no)), [5, 17, 30, 45]


def test_the_summary_counts_add_up_and_name_the_worst_rows_first():
    labels, proba, wrong = audited_by_hand()
    found = audit(labels, proba, pd.Series([f"id{n}" for n in range(50)]), top=3)
    assert sorted(found.positions.tolist()) == wrong
    summary = found.summary
    assert summary["rows"] == 50 and summary["suspects"] == 4
    assert summary["per_class"] == {"no": {"rows": 40, "suspects": 3, "share": 0.075},
                                    "yes": {"rows": 10, "suspects": 1, "share": 0.1}}
    qualities = [entry["label_quality"] for entry in summary["top"]]
    assert qualities == sorted(qualities) and len(qualities) == 3
    assert [entry["row_id"] for entry in summary["top"]] == ["id30", "id45", "id17"]
    assert summary["top"][0] == {"row_id": "id30", "given": "no", "likely": "yes", "label_quality": 0.01}
    assert summary["sentence"] == ("cleanlab flags 4 of 50 rows (8.0 %) as likely mislabelled: 3 of class 'no', "
                                   "1 of class 'yes'; training uses them as given unless you ask to down-weight or "
                                   "drop them")
    assert "cleanlab" in summary["method"]
    json.dumps(summary)


def test_rows_are_named_by_position_without_row_ids():
    labels, proba, _ = audited_by_hand()
    assert audit(labels, proba, top=1).summary["top"][0]["row_id"] == 30


def test_multiclass_labels_are_audited():
    rng = np.random.default_rng(0)
    classes = ["a", "b", "c"]
    truth = rng.choice(3, 300)
    proba = np.full((300, 3), 0.02) + np.eye(3)[truth] * 0.94
    labels = pd.Series(np.array(classes)[truth])
    labels[[3, 10]] = [classes[(truth[3] + 1) % 3], classes[(truth[10] + 2) % 3]]
    found = audit(labels, pd.DataFrame(proba, columns=classes))
    assert found.positions.tolist() == [3, 10]
    assert {entry["likely"] for entry in found.summary["top"]} == {classes[truth[3]], classes[truth[10]]}
    assert sum(entry["rows"] for entry in found.summary["per_class"].values()) == 300


def test_clean_confident_labels_give_no_suspects():
    labels = pd.Series(["no"] * 40 + ["yes"] * 10)
    found = audit(labels, probabilities([0.95] * 40 + [0.05] * 10))
    assert found.positions.size == 0 and found.summary["top"] == []
    assert found.summary["sentence"] == "cleanlab flags none of 50 rows as likely mislabelled"


def test_a_class_with_too_few_rows_is_not_audited():
    labels = pd.Series(["no"] * 40 + ["yes"] * (MIN_ROWS_PER_CLASS - 1))
    proba_of_no = [0.95] * 40 + [0.05] * (MIN_ROWS_PER_CLASS - 1)
    proba_of_no[0] = 0.01  # would be flagged, were the audit run
    found = audit(labels, probabilities(proba_of_no))
    assert found.positions.size == 0 and found.summary["suspects"] == 0
    assert "'yes' has 4 rows" in found.summary["sentence"]
    assert f"at least {MIN_ROWS_PER_CLASS}" in found.summary["sentence"]


@pytest.mark.parametrize("labels, columns, message", [
    (["no", "yes", "maybe"] * 5, ["no", "yes"], r"\['maybe'\] are labels but not columns"),
    (["no", "yes"] * 5, ["no", "yes", "maybe"], r"\['maybe'\] of oof_proba are not labels"),
])
def test_labels_and_columns_must_name_the_same_classes(labels, columns, message):
    proba = pd.DataFrame(np.full((len(labels), len(columns)), 1 / len(columns)), columns=columns)
    with pytest.raises(ValueError, match=message):
        audit(pd.Series(labels), proba)


def test_missing_probabilities_labels_or_rows_are_refused():
    labels, proba, _ = audited_by_hand()
    with pytest.raises(ValueError, match="1 rows of oof_proba have missing"):
        audit(labels, proba.assign(no=proba["no"].where(proba.index != 3)))
    with pytest.raises(ValueError, match="1 labels are missing"):
        audit(labels.where(labels.index != 3), proba)
    with pytest.raises(ValueError, match="same rows in the same order"):
        audit(labels, proba.iloc[::-1])
    with pytest.raises(ValueError, match="row_ids has 2 values"):
        audit(labels, proba, pd.Series(["a", "b"]))


def test_down_weighting_and_dropping_touch_only_the_suspects():
    weights = downweighted(5, np.array([1, 3]))
    assert weights.tolist() == [1.0, DOWN_WEIGHT, 1.0, DOWN_WEIGHT, 1.0]
    assert downweighted(3, np.array([], dtype=int), 0.5).tolist() == [1.0, 1.0, 1.0]
    assert kept_rows(5, np.array([1, 3])).tolist() == [True, False, True, False, True]
    assert kept_rows(2, np.array([], dtype=int)).dtype == bool
    with pytest.raises(ValueError, match="in \\(0, 1\\]"):
        downweighted(5, np.array([1]), 0.0)


def test_flags_on_heavily_overlapping_classes_carry_a_caveat_and_nothing_else_does():
    summary = {"suspects": 3, "sentence": "cleanlab flags 3 of 100 rows (3.0 %) as likely mislabelled"}
    warned = with_overlap_caveat(summary, "high")
    assert warned["sentence"].startswith(summary["sentence"]) and "review them before dropping" in warned["sentence"]
    assert with_overlap_caveat(summary, "low") == summary
    assert with_overlap_caveat(summary | {"suspects": 0}, "high")["sentence"] == summary["sentence"]
    assert with_overlap_caveat(summary | {"suspects": None}, "high")["sentence"] == summary["sentence"]
