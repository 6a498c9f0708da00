"""Tests for the class-overlap diagnostic (kDN) on generated tables: no mocks, no model fits."""

import json

import numpy as np
import pandas as pd

from poise.agents.data_engineering.overlap import class_overlap
from poise.agents.data_engineering.profiling import profile_table


def two_classes(n_rows: int, minority_share: float, shift: float, seed: int = 0) -> pd.DataFrame:
    """Two numeric features, an XOR: the minority ("yes") around (s, s) and (-s, -s), the majority around (s, -s)
    and (-s, s), with s = `shift` standard deviations. Neither column alone tells the classes apart, so the profiler
    keeps both (it drops a column that alone separates the target as a leak); s = 0 is pure overlap."""
    rng = np.random.default_rng(seed)
    yes = rng.random(n_rows) < minority_share
    side = rng.choice([-1.0, 1.0], n_rows) * shift
    return pd.DataFrame({"x1": rng.normal(size=n_rows) + side,
                         "x2": rng.normal(size=n_rows) + np.where(yes, side, -side),
                         "label": np.where(yes, "yes", "no")})


def overlap_of(frame: pd.DataFrame, target: str = "label", **options) -> dict:
    return class_overlap(frame, target, profile_table(frame, target), **options)


def test_well_separated_classes_are_low_overlap():
    result = overlap_of(two_classes(2000, 0.1, shift=8.0))
    assert result["level"] == "low"
    assert result["minority_in_majority_regions"] < 0.05
    assert result["classes"]["yes"]["mean_kdn"] < 0.05
    assert "largely apart" in result["sentence"] and "can help" in result["sentence"]
    assert json.loads(json.dumps(result)) == result  # JSON-able as it is


def test_labels_independent_of_features_are_high_overlap():
    result = overlap_of(two_classes(2000, 0.1, shift=0.0))
    assert result["level"] == "high"
    assert result["minority_in_majority_regions"] > 0.9
    assert result["worst_class"] == "yes"
    assert "reweighting is unlikely to help beyond" in result["sentence"]
    assert "decision threshold" in result["sentence"] and "error costs" in result["sentence"]


def test_mixed_column_types_are_encoded_and_text_is_left_out():
    """The label is carried only by the categorical, boolean and datetime columns together (each alone is imperfect,
    so the profiler keeps it): were they not encoded, the minority would sit among the majority (the numeric column
    is noise with gaps)."""
    rng = np.random.default_rng(1)
    n_rows = 1500
    yes = rng.random(n_rows) < 0.15
    noise = rng.normal(size=n_rows)
    noise[rng.random(n_rows) < 0.2] = np.nan
    words = np.array(["late", "parcel", "refund", "great", "service", "broken", "again", "thanks"])
    frame = pd.DataFrame({
        "noise": noise,
        "segment": np.where(yes, "D", rng.choice(["A", "B", "C", "D"], n_rows, p=[0.32, 0.32, 0.31, 0.05])),
        "flagged": np.where(yes, rng.random(n_rows) < 0.95, rng.random(n_rows) < 0.05),
        "signed_up": pd.to_datetime(np.where(yes, "2024-06-01", "2020-01-01"))
        + pd.to_timedelta(np.where(yes, rng.integers(0, 90, n_rows), rng.integers(0, 1800, n_rows)), unit="D"),
        "comment": [f"customer {i} wrote: " + " ".join(rng.choice(words, 5)) for i in range(n_rows)],
        "label": np.where(yes, "yes", "no"),
    })
    profile = profile_table(frame, "label")
    types = {entry["name"]: entry["inferred_type"] for entry in profile["columns"] if entry["role"] == "feature"}
    assert types == {"noise": "numeric", "segment": "categorical", "flagged": "boolean", "signed_up": "datetime",
                     "comment": "text"}
    assert profile["features"] == list(types)
    result = class_overlap(frame, "label", profile)
    assert result["features_used"] == ["noise", "segment", "flagged", "signed_up"]
    assert result["level"] == "low"
    assert result["minority_in_majority_regions"] < 0.05
    noise_only = profile | {"features": ["noise", "comment"]}  # the same rows without the informative columns
    assert class_overlap(frame, "label", noise_only)["level"] == "high"


def test_big_table_is_sampled_and_the_sample_keeps_the_tables_class_mix():
    """60k rows, 1 % minority: the sample keeps every minority row, and weighted votes keep its figure near the one
    measured on every row (0.72-0.75 over seeds 0-3 against 0.76; with unweighted votes a minority kept whole among a
    thinned majority looks apart: 0.63)."""
    frame = two_classes(60_000, 0.01, shift=1.5, seed=2)
    profile = profile_table(frame, "label")
    sampled = class_overlap(frame, "label", profile, max_rows=20_000)
    every_row = class_overlap(frame, "label", profile, max_rows=60_000)
    assert sampled["sampled"] is True and every_row["sampled"] is False
    assert sampled["rows_used"] <= 20_000
    assert sampled["classes"]["yes"]["rows"] == (frame["label"] == "yes").sum()
    assert 0.3 < every_row["minority_in_majority_regions"] < 0.9
    assert abs(sampled["minority_in_majority_regions"] - every_row["minority_in_majority_regions"]) < 0.08
    assert class_overlap(frame, "label", profile, max_rows=20_000, seed=1)["rows_used"] <= 20_000


def test_tiny_class_uses_fewer_neighbours_and_multiclass_is_judged_on_its_worst_class():
    """'rare' has 4 rows clustered far from the rest: with k = 5 each row would count 2 other-class neighbours
    (kDN >= 0.4); with k = its rows - 1 = 3 it is apart. 'mixed' overlaps the majority, so the level is high."""
    rng = np.random.default_rng(3)
    common = pd.DataFrame({"x1": rng.normal(size=900), "x2": rng.normal(size=900),
                           "label": np.where(rng.random(900) < 0.15, "mixed", "common")})
    rare = pd.DataFrame({"x1": 50 + rng.normal(size=4) * 0.1, "x2": 50 + rng.normal(size=4) * 0.1, "label": "rare"})
    frame = pd.concat([common, rare], ignore_index=True)
    result = overlap_of(frame)
    assert set(result["classes"]) == {"common", "mixed", "rare"}
    assert result["classes"]["rare"]["k"] == 3 and result["classes"]["rare"]["mean_kdn"] == 0
    assert result["classes"]["common"]["k"] == 5
    assert result["minority_class"] == "rare" and result["minority_in_majority_regions"] == 0
    assert result["worst_class"] == "mixed" and result["level"] == "high"

    one_rare_row = frame.drop(index=frame.index[frame["label"] == "rare"][1:])
    unmeasured = class_overlap(one_rare_row, "label", profile_table(frame, "label"))
    assert unmeasured["classes"]["rare"] == {"rows": 1, "k": 0, "mean_kdn": None,
                                             "share_in_other_class_regions": None}
    assert unmeasured["minority_in_majority_regions"] is None and unmeasured["level"] == "high"


def test_gaps_in_every_feature_and_in_the_target_are_handled():
    frame = two_classes(1000, 0.2, shift=8.0, seed=4)
    frame.loc[frame.sample(frac=0.3, random_state=0).index, "x1"] = np.nan
    frame.loc[frame.sample(frac=0.3, random_state=1).index, "x2"] = np.nan
    profile = profile_table(frame, "label")
    frame.loc[:9, "label"] = None
    result = class_overlap(frame, "label", profile)
    assert result["rows_used"] == 990
    assert all(np.isfinite(figures["mean_kdn"]) for figures in result["classes"].values())


def test_no_usable_features_says_so():
    rng = np.random.default_rng(5)
    words = np.array(["slow", "delivery", "friendly", "staff", "will", "order", "again", "never"])
    frame = pd.DataFrame({"note": [f"note {i}: " + " ".join(rng.choice(words, 6)) for i in range(300)],
                          "label": np.where(rng.random(300) < 0.2, "yes", "no")})
    profile = profile_table(frame, "label")
    assert profile["features"] == ["note"]
    result = class_overlap(frame, "label", profile)
    assert result["level"] is None and result["minority_in_majority_regions"] is None
    assert result["features_used"] == [] and result["classes"] == {}
    assert "could not be measured" in result["sentence"]


def test_a_training_split_typed_by_splitting_is_measured_as_the_raw_table_is():
    """The prepare step measures the split `splitting` typed: categories with gaps, booleans as categories."""
    from poise.agents.data_engineering import splitting

    rng = np.random.default_rng(5)
    n = 1200
    y = rng.random(n) < 0.1
    table = pd.DataFrame({"x": np.where(y, rng.normal(3, 1, n), rng.normal(0, 1, n)),
                          "colour": np.where(rng.random(n) < 0.2, None, rng.choice(["red", "blue"], n)),
                          "flag": rng.random(n) < 0.5, "y": np.where(y, "yes", "no")})
    profile = profile_table(table, "y")
    train, _, _ = splitting.prepare_split(table, profile, holdout_fraction=0.2, seed=0)
    assert isinstance(train["colour"].dtype, pd.CategoricalDtype) and train["colour"].isna().any()
    typed = class_overlap(train, "y", profile)
    as_read = class_overlap(train.astype({"colour": object, "flag": object}), "y", profile)
    assert typed == as_read and typed["rows_used"] == len(train)
    assert typed["level"] == "low"  # the minority sits apart on x
