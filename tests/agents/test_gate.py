"""The quality gate's rule against a champion, on hand-made evidence: what passes, what is refused, and that the
verdict names the data behind every score (the end-to-end runs are in tests/pipelines/test_gate.py)."""

import pandas as pd
import pytest

from poise.agents.deployment.gate import ChampionEvidence, quality_gate, reference_scores, schema_changes
from poise.agents.drift.reference import Reference

POLICY = {"problem_type": "binary", "objective": "f1", "positive_class": "yes", "minority_class": "yes",
          "cost_fn": None, "cost_fp": None}
METRICS = {"f1": 0.8, "n_holdout": 200}
CHAMPION_META = {"target": "churned", "types": {"tenure": "numeric", "plan": "categorical"}, "classes": ["no", "yes"],
                 "positive_class": "yes", "primary_metric": "f1", "cost": None}
HOLDOUT = "holdout of job 0123456789ab"


def _reference(challenger: float, champion: float, worse: bool) -> dict:
    return {"data": "reference holdout of champion v1", "rows": 100, "metric": "f1", "challenger": challenger,
            "champion": champion, "difference_interval": [-0.2, -0.1] if worse else [-0.1, 0.1], "worse": worse}


def _gate(on_holdout: dict, reference: dict) -> dict:
    return quality_gate(METRICS, {}, POLICY, HOLDOUT, ChampionEvidence("churn", "1", on_holdout=on_holdout,
                                                                       reference=reference))


def test_a_challenger_passes_only_beating_the_champion_on_its_holdout_and_not_worse_on_the_reference():
    passed = _gate({"f1": 0.7}, _reference(0.75, 0.78, worse=False))
    assert passed["passed"] and passed["champion"] == "1" and passed["reference_value"] == 0.7
    assert passed["scores"] == [{"data": HOLDOUT, "rows": 200, "metric": "f1", "challenger": 0.8, "champion": 0.7},
                                _reference(0.75, 0.78, worse=False)]
    assert passed["reason"] == ("f1 0.8000 beats champion v1 (0.7000) on the holdout of job 0123456789ab; on the "
                                "reference holdout of champion v1 (100 rows) f1 0.7500 vs the champion's 0.7800 is "
                                "not worse beyond chance (difference 95% CI -0.1000 to +0.1000)")

    flipped = _gate({"f1": 0.02}, _reference(0.05, 0.78, worse=True))  # beats it only on its own holdout
    assert not flipped["passed"]
    assert "is worse beyond chance" in flipped["reason"] and flipped["reason"].endswith("keeping the current champion")

    no_better = _gate({"f1": 0.8}, _reference(0.9, 0.78, worse=False))  # a tie on its own holdout is not enough
    assert not no_better["passed"] and "does not beat champion v1 (0.8000)" in no_better["reason"]


def test_a_change_of_schema_or_label_set_is_refused_without_scores_against_the_champion():
    changes = ["label set changed: {'maybe', 'no', 'yes'} vs the champion's {'no', 'yes'}"]
    verdict = quality_gate(METRICS, {}, POLICY, HOLDOUT, ChampionEvidence("churn", "1", changes))
    assert not verdict["passed"] and verdict["changes"] == changes and verdict["reference_value"] is None
    assert verdict["reason"] == (changes[0] + ": a change of schema or label set against champion v1 needs an admin, "
                                 "who can promote this version explicitly with `poise promote churn VERSION --reason "
                                 "...`; keeping the current champion")
    assert verdict["scores"] == [{"data": HOLDOUT, "rows": 200, "metric": "f1", "challenger": 0.8, "champion": None}]


def test_a_champion_without_a_reference_holdout_or_unable_to_score_keeps_its_alias():
    missing = quality_gate(METRICS, {}, POLICY, HOLDOUT, ChampionEvidence(
        "churn", "1", reference={"error": "champion v1 has no reference holdout"}))
    assert not missing["passed"] and missing["reference_value"] is None
    assert missing["reason"] == "champion v1 has no reference holdout; keeping the current champion"
    broken = _gate({"error": "champion v1 cannot score this holdout: boom"}, _reference(0.9, 0.1, worse=False))
    assert not broken["passed"] and broken["reason"].startswith("champion v1 cannot score this holdout")


def test_schema_changes_name_the_target_columns_types_and_labels():
    same = schema_changes(CHAMPION_META, "churned", {"plan": "categorical", "tenure": "numeric"}, ["yes", "no"])
    assert same == []  # order does not matter
    assert schema_changes(CHAMPION_META, "churn", {"tenure": "categorical", "region": "categorical"},
                          ["no", "yes", "maybe"]) == [
        "target changed: 'churn' vs the champion's 'churned'",
        "feature column(s) missing: 'plan'",
        "new feature column(s): 'region'",
        "feature type(s) changed: 'tenure' categorical (was numeric)",
        "label set changed: {'maybe', 'no', 'yes'} vs the champion's {'no', 'yes'}",
    ]


def _stored(truth: list[str], champion: list[str], meta: dict) -> Reference:
    holdout = pd.DataFrame({"tenure": range(len(truth)), "churned": truth})
    return Reference(train=holdout, holdout=holdout, predictions=pd.DataFrame({"label": champion}), meta=meta)


def test_reference_scores_use_the_champions_measure_and_call_worse_only_beyond_chance():
    truth = ["yes"] * 20 + ["no"] * 80
    reference = _stored(truth, truth, CHAMPION_META)  # the champion got every row right
    flipped = reference_scores("reference holdout of champion v1", reference,
                               pd.Series(["no"] * 20 + ["yes"] * 80), seed=0)
    assert flipped["challenger"] == 0.0 and flipped["champion"] == 1.0 and flipped["rows"] == 100
    assert flipped["worse"] and flipped["difference_interval"][1] < 0

    one_miss = pd.Series(["no"] + ["yes"] * 19 + ["no"] * 80)  # one positive missed: within chance
    close = reference_scores("reference holdout of champion v1", reference, one_miss, seed=0)
    assert close["challenger"] == pytest.approx(38 / 39) and not close["worse"]

    # the champion's measure decides, whatever the challenger optimised: here an expected cost (lower is better),
    # where flagging every row costs 80 false alarms at 1 each against the champion's 0
    costly = _stored(truth, truth, {**CHAMPION_META, "primary_metric": "expected_cost", "cost": [10.0, 1.0]})
    everyone = reference_scores("reference holdout of champion v1", costly, pd.Series(["yes"] * 100), seed=0)
    assert everyone["metric"] == "expected_cost" and everyone["challenger"] == pytest.approx(0.8)
    assert everyone["champion"] == 0.0 and everyone["worse"] and everyone["difference_interval"][0] > 0
