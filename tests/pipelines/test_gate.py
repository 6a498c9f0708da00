"""The quality gate against a champion, end to end: real AutoGluon fits, the real MLflow store.

One champion (v1) is trained for the module on a table whose class is a thin diagonal band (`|a - b| < 0.3`):
hard for trees on a few hundred rows, so a challenger with more rows is really better. Holdouts are 45 % of a
table, so the champion's reference holdout has 21 'yes' rows, not 9. Each test puts `champion` back on v1,
submits a challenger under the same name, and reads what the gate decided and recorded."""

from __future__ import annotations

import uuid

import mlflow
import numpy as np
import pandas as pd
import pytest

from poise.pipelines import runner
from poise.pipelines.settings import Settings
from poise.registry import tracking

pytestmark = pytest.mark.slow

NAME = "band"
TARGET = "outcome"
TIME_LIMIT = 8


def band_table(rows: int, seed: int) -> pd.DataFrame:
    """'yes' (about 17 %) when `a` and `b` are close; `c` and `d` carry no signal."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=rows), rng.normal(size=rows)
    return pd.DataFrame({"a": a.round(3), "b": b.round(3), "c": rng.choice(["x", "y", "z"], rows),
                         "d": rng.normal(size=rows).round(3),
                         TARGET: np.where(np.abs(a - b) < 0.3, "yes", "no")})


@pytest.fixture(scope="module")
def champion(tmp_path_factory):
    """v1, trained on 300 rows: (settings, folder for tables, its job result)."""
    folder = tmp_path_factory.mktemp("gate")
    home = folder / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("POISE_HOME", str(home))
        for name in ("POISE_DATABASE_URL", "POISE_MLFLOW_TRACKING_URI", "POISE_MLFLOW_REGISTRY_URI"):
            patch.delenv(name, raising=False)
        settings = Settings(home=home, holdout_fraction=0.45)
        data = folder / "champion.csv"
        band_table(300, seed=0).to_csv(data, index=False)
        first = runner.train(data, TARGET, name=NAME, time_limit=TIME_LIMIT, settings=settings)
        assert first.status == "succeeded" and first.is_champion and first.model_version == "1", first.error
        yield settings, folder, first


def _client(settings):
    return tracking.configure(settings.tracking_uri, settings.registry_uri)


def _challenge(champion, table: pd.DataFrame) -> runner.JobResult:
    """Train `table` under the champion's name against v1."""
    settings, folder, first = champion
    tracking.promote(_client(settings), NAME, first.model_version)
    data = folder / f"challenger-{uuid.uuid4().hex[:8]}.csv"
    table.to_csv(data, index=False)
    result = runner.train(data, TARGET, name=NAME, time_limit=TIME_LIMIT, settings=settings)
    assert result.status == "succeeded", result.error
    return result


def _recorded(settings, result: runner.JobResult) -> tuple[dict, dict, dict]:
    """The gate as the job's run (gate.json, run tags) and its registered version (tags) recorded it."""
    client = _client(settings)
    return (mlflow.artifacts.load_dict(f"runs:/{result.mlflow_run_id}/gate.json"),
            client.get_run(result.mlflow_run_id).data.tags, client.get_model_version(NAME, result.model_version).tags)


def test_the_first_version_is_judged_on_its_own_holdout_and_says_so(champion):
    settings, _, first = champion
    (score,) = first.gate["scores"]
    assert score["data"] == f"holdout of job {first.job_id[:12]}" and score["rows"] == first.metrics["n_holdout"]
    assert score["challenger"] == first.metrics["f1"] and score["baseline"] == first.gate["reference_value"]
    assert first.gate["reason"].endswith(f"baseline ({score['baseline']:.4f}) on the holdout of job {first.job_id[:12]}")
    gate_json, _, version_tags = _recorded(settings, first)
    assert gate_json == first.gate and version_tags["poise.gate"] == first.gate["reason"]


def test_a_label_flipped_challenger_is_refused_on_the_champions_reference_holdout(champion):
    settings, _, first = champion
    flipped = band_table(300, seed=0)  # the champion's own table, every label flipped
    flipped[TARGET] = flipped[TARGET].map({"yes": "no", "no": "yes"})

    result = _challenge(champion, flipped)

    gate = result.gate
    assert not gate["passed"] and not result.is_champion
    assert tracking.champion_version(_client(settings), NAME) == "1"
    own, reference = gate["scores"]
    # on the holdout its submitter chose it beats the champion: what the gate used to go by
    assert own["data"] == f"holdout of job {result.job_id[:12]}"
    assert own["challenger"] > own["champion"]
    # on the champion's reference holdout, by the champion's measure, it is worse beyond chance
    assert reference["data"] == "reference holdout of champion v1"
    assert reference["rows"] == first.metrics["n_holdout"] and reference["metric"] == "f1"
    assert reference["champion"] == pytest.approx(first.metrics["f1"])  # the champion's score when it was judged
    assert reference["challenger"] < reference["champion"] and reference["worse"]
    assert reference["difference_interval"][1] < 0
    assert "on the reference holdout of champion v1" in gate["reason"]
    assert "is worse beyond chance" in gate["reason"] and gate["reason"].endswith("keeping the current champion")
    gate_json, run_tags, version_tags = _recorded(settings, result)
    assert gate_json == gate and run_tags["poise.gate"] == "failed" and version_tags["poise.gate"] == gate["reason"]


def test_an_honest_better_challenger_passes_on_both_holdouts(champion):
    settings, _, _ = champion

    result = _challenge(champion, band_table(2000, seed=1))  # the same task, eight times the rows

    gate = result.gate
    own, reference = gate["scores"]
    assert gate["passed"] and result.is_champion, gate["reason"]
    assert tracking.champion_version(_client(settings), NAME) == result.model_version
    assert own["challenger"] > own["champion"] and own["rows"] == result.metrics["n_holdout"] == 900
    assert reference["data"] == "reference holdout of champion v1" and not reference["worse"]
    assert "beats champion v1" in gate["reason"] and "is not worse beyond chance" in gate["reason"]


def test_a_changed_label_set_or_feature_column_is_refused_naming_the_change(champion):
    settings, _, _ = champion
    three_classes = band_table(240, seed=2)
    three_classes.loc[:9, TARGET] = "maybe"
    renamed = band_table(240, seed=3).rename(columns={"b": "b_new"})

    for table, change in (
            (three_classes, "label set changed: {'maybe', 'no', 'yes'} vs the champion's {'no', 'yes'}"),
            (renamed, "feature column(s) missing: 'b'; new feature column(s): 'b_new'")):
        result = _challenge(champion, table)

        gate = result.gate
        assert not gate["passed"] and not result.is_champion
        assert tracking.champion_version(_client(settings), NAME) == "1"
        assert gate["changes"] == change.split("; ") and gate["reason"].startswith(change)
        assert f"poise promote {NAME} VERSION --reason" in gate["reason"]
        assert [score["data"] for score in gate["scores"]] == [f"holdout of job {result.job_id[:12]}"]
        # no fit on this table can pass: the next steps are the version's, not another training run
        assert f"poise promote {NAME} {result.model_version} --reason" in result.summary
        assert "poise train" not in result.summary
        assert _recorded(settings, result)[0] == gate
