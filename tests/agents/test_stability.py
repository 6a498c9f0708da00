"""Population stability over every row of a big window: the bins counted out of core (Polars, streaming) equal the
bins counted in pandas, and the index tells a shifted column from a steady one."""

import numpy as np
import pandas as pd

from poise.agents.data_engineering import large_tables, loading
from poise.agents.drift import stability


def _table(rows: int, seed: int, shift: float = 0.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    amount = rng.normal(100 + shift * 30, 20, rows)
    amount[rng.random(rows) < 0.05] = np.nan
    plan = rng.choice([f"p{i}" for i in range(30)], rows).astype(object)  # more levels than MAX_LEVELS
    plan[rng.random(rows) < 0.03] = None
    return pd.DataFrame({"amount": amount, "visits": rng.poisson(3 + shift * 3, rows), "plan": plan,
                         "active": rng.random(rows) < 0.3 + shift * 0.4, "steady": rng.normal(0, 1, rows)})


def test_out_of_core_bins_equal_in_memory_bins(tmp_path):
    reference, window = _table(5_000, 0), _table(9_000, 1, shift=1.0)
    (tmp_path / "window").mkdir()
    for position, part in enumerate(np.array_split(window, 3)):
        part.to_parquet(tmp_path / "window" / f"part-{position}.parquet", index=False)
    bins = stability.bins(reference, list(reference.columns))
    assert set(bins) == set(reference.columns) and len(bins["plan"]["levels"]) == stability.MAX_LEVELS
    _, record = large_tables.window_sample(loading.parquet_files(tmp_path / "window"), 500, 0, bins)

    assert record["bin_counts"] == stability.counts(window, bins)
    assert all(sum(counts) == len(window) for counts in record["bin_counts"].values())
    assert record["bin_counts"]["amount"][0] == window["amount"].isna().sum() > 0  # missing: a bin of its own


def test_a_shifted_column_stands_out_and_a_steady_one_does_not():
    reference, window = _table(5_000, 0), _table(50_000, 1, shift=1.0)
    bins = stability.bins(reference, list(reference.columns))
    found = stability.stability(reference, bins, stability.counts(window, bins))
    assert found["psi"]["steady"] < stability.PSI_MODERATE and found["psi"]["plan"] < stability.PSI_MODERATE
    assert found["psi"]["amount"] >= stability.PSI_SHIFTED and found["psi"]["active"] >= stability.PSI_SHIFTED
    assert set(found["shifted"]) == {"amount", "visits", "active"}
    same = stability.stability(reference, bins, stability.counts(reference, bins))
    assert max(same["psi"].values()) == 0 and same["shifted"] == []
