"""Every row of a window bigger than its sample: the tallies of its parts add up to the tally of the whole, the rows
the domain classifier was fitted on are never scored again (also when the parts are read back from Parquet), its
all-rows AUC sits at its null on a clean window and far above the threshold on a shifted one, and the judgement
uses the all-rows evidence."""

import numpy as np
import pandas as pd
import pytest

from poise.agents.data_engineering import column_types, loading
from poise.agents.drift import detection, stability, whole_window
from poise.agents.drift.reference import LABEL

TYPES = {"amount": "numeric", "visits": "numeric", "plan": "categorical", "active": "boolean", "steady": "numeric"}


def _table(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    amount = rng.normal(100 + shift * 30, 20, rows)
    amount[rng.random(rows) < 0.05] = np.nan
    plan = rng.choice([f"p{i}" for i in range(8)], rows).astype(object)
    plan[rng.random(rows) < 0.03] = None
    return pd.DataFrame({"amount": amount, "visits": rng.poisson(3 + shift * 3, rows), "plan": plan,
                         "active": rng.random(rows) < 0.3 + shift * 0.4, "steady": rng.normal(0, 1, rows)})


def _predictions(frame: pd.DataFrame) -> pd.DataFrame:
    """What a served model would say: any labels do, the tally only counts them."""
    return pd.DataFrame({LABEL: np.where(frame["amount"].fillna(0) > 120, "yes", "no")})


def _pass(reference: pd.DataFrame, window: pd.DataFrame, chunks) -> dict:
    sample = column_types.cast_columns(window.sample(n=2_000, random_state=0), TYPES)
    scorer = whole_window.fit_domain_scorer(reference, sample, list(TYPES), seed=0)
    tallies = [whole_window.tally(column_types.cast_columns(chunk, TYPES), _predictions(chunk), scorer)
               for chunk in chunks]
    return whole_window.summary(whole_window.merged(tallies), scorer)


@pytest.fixture
def reference() -> pd.DataFrame:
    return column_types.cast_columns(_table(8_000, 0), TYPES)


def test_parts_add_up_and_the_fitted_rows_are_never_scored_again(reference, tmp_path):
    window = _table(30_000, 1)
    whole = _pass(reference, window, [window])
    in_parts = _pass(reference, window, np.array_split(window, 7))
    assert in_parts == whole
    assert whole["rows"] == 30_000 and sum(whole["predicted"].values()) == 30_000
    assert whole["predicted"]["yes"] == int((window["amount"] > 120).sum())
    assert whole["domain"]["window_rows"] == 30_000 - 2_000  # the sample it was fitted on left out
    assert whole["domain"]["reference_rows"] == 4_000

    (tmp_path / "window").mkdir()
    for position, part in enumerate(np.array_split(window, 3)):
        part.to_parquet(tmp_path / "window" / f"part-{position}.parquet", index=False)
    from_parquet = _pass(reference, window, loading.parquet_chunks(loading.parquet_files(tmp_path / "window"), [],
                                                                   4_000))
    assert from_parquet == whole  # the same rows recognised whichever way they were read


def test_a_clean_window_sits_at_the_null_and_a_shifted_one_is_judged_drifted(reference):
    clean = _pass(reference, _table(40_000, 2), [_table(40_000, 2)])
    domain = clean["domain"]
    assert abs(domain["auc"] - 0.5) < 4 * domain["null_sd"]

    shifted_window = _table(40_000, 3, shift=0.3)
    shifted = _pass(reference, shifted_window, [shifted_window])
    assert shifted["domain"]["auc"] > 0.5 + 10 * shifted["domain"]["null_sd"]
    assert set(shifted["domain"]["top_columns"]) >= {"amount", "visits"}

    bins = stability.bins(reference, list(TYPES))
    importance = dict.fromkeys(TYPES, 1.0)
    sample_evidence = {"columns": {"drifted": False, "weighted_share": 0.0, "n_drifted": 0, "columns": {}},
                       "multivariate": {"auc": 0.51, "threshold": 0.53, "drifted": False}, "drifted": False}
    for found, drifted in ((clean, False), (shifted, True)):
        counts = stability.counts(column_types.cast_columns(shifted_window if drifted else _table(40_000, 2), TYPES),
                                  bins)
        evidence = {**found, "stability": stability.stability(reference, bins, counts)}
        judged = detection.judged_on_every_row(sample_evidence, evidence, importance)
        assert judged["multivariate"]["drifted"] is drifted and judged["drifted"] is drifted
        assert judged["multivariate"]["threshold"] >= 0.53  # never below the threshold calibrated for the sample
        assert judged["sample"]["multivariate"]["auc"] == 0.51  # the sample's evidence kept beside
        assert judged["columns"]["n_drifted"] == len(evidence["stability"]["shifted"])
    assert judged["columns"]["drifted"] is False  # 0.3 sd moves shift no column by PSI >= 0.2: the classifier does
