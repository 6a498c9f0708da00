"""Tables larger than the memory budget: read out of core (Polars), split, and sampled with prior-restoring weights;
and folders or globs of Parquet parts read as one table."""

import numpy as np
import pandas as pd
import pytest

from poise.agents.data_engineering import large_tables, loading
from poise.agents.data_engineering.profiling import profile_table
from poise.agents.errors import DataError


def test_a_sample_keeps_every_minority_row_and_weighs_the_majority_back_to_the_prior(tmp_path, parquet_parts):
    table = parquet_parts(tmp_path / "parts")
    files = loading.parquet_files(tmp_path / "parts")
    assert [path.name for path in files] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]

    sample, record = large_tables.sample_table(files, "bad", max_rows=2_000, holdout_fraction=0.2, seed=3,
                                               holdout_path=tmp_path / "job" / "holdout.parquet", na_values=["n.a."])
    holdout = pd.read_parquet(record["holdout_path"])
    labelled = table[table["bad"].notna()]
    true_rows = {"False": int((~labelled["bad"].astype(bool)).sum()), "True": int(labelled["bad"].sum())}
    # counted over every row, labels named as pandas and the rest of Poise name them
    assert record["class_rows"] == true_rows and record["rows"] == len(table) and record["unlabelled_rows"] == 15
    # the holdout and the sample are disjoint, unlabelled rows are in neither, and every positive is in one of them
    assert not set(holdout["row_id"]) & set(sample["row_id"])
    assert set(holdout["row_id"]) | set(sample["row_id"]) <= set(labelled["row_id"])
    positives = set(labelled.loc[labelled["bad"].astype(bool), "row_id"])
    assert positives <= set(holdout["row_id"]) | set(sample["row_id"])
    assert len(holdout) == pytest.approx(0.2 * len(labelled), rel=0.1)
    assert record["sampled_rows"] == len(sample) == pytest.approx(2_000, rel=0.15)
    # positives are weighted 1, the sampled majority by the inverse of its sampling rate: the weights add up to
    # the training part's class counts
    weights = sample.groupby(sample["bad"].astype(bool))[large_tables.PRIOR_WEIGHT].sum()
    train_rows = labelled[~labelled["row_id"].isin(holdout["row_id"])]["bad"].astype(bool).value_counts()
    assert weights[True] == train_rows[True]
    assert weights[False] == pytest.approx(train_rows[False], rel=0.05)
    assert record["class_sampling_rate"]["True"] == 1.0 and 0 < record["class_sampling_rate"]["False"] < 0.2
    # a user's missing-value token is missing in the sample, as it is when the holdout is read by `load_table`
    assert sample["colour"].isna().any() and "n.a." not in set(sample["colour"].dropna())
    # and over every row: the token counts as missing there too, and no longer as a distinct value
    assert record["columns"]["colour"]["missing"] == (table["colour"] == "n.a.").sum() > 0
    assert record["columns"]["colour"]["approx_distinct"] == 2
    assert record["columns"]["x"]["approx_distinct"] <= len(table)

    again, _ = large_tables.sample_table(files, "bad", max_rows=2_000, holdout_fraction=0.2, seed=3,
                                         holdout_path=tmp_path / "again.parquet")
    assert again["row_id"].tolist() == sample["row_id"].tolist()  # the same seed draws the same rows


def test_a_sampled_tables_flags_follow_every_row_not_the_sample(tmp_path):
    """An account id that each account's two orders repeat looks unique in a sample of 1 majority row in 250, and a
    note present in a handful of rows may be absent from it: neither is an identifier or all-null. A true row id
    still is."""
    rng = np.random.default_rng(0)
    rows = 100_000
    table = pd.DataFrame({"order_id": np.arange(rows), "account_id": np.arange(rows) // 2,
                          "amount": rng.normal(size=rows), "note": pd.Series([None] * rows, dtype=object),
                          "bad": rng.random(rows) < 0.003})
    table.loc[rng.choice(np.flatnonzero(~table["bad"]), 8, replace=False), "note"] = "disputed"
    table = table.sample(frac=1.0, random_state=0)  # ids out of order, as rows of a real export are
    (tmp_path / "parts").mkdir()
    table.to_parquet(tmp_path / "parts" / "part-0.parquet", index=False)
    sample, record = large_tables.sample_table(loading.parquet_files(tmp_path / "parts"), "bad", max_rows=600,
                                               holdout_fraction=0.2, seed=0, holdout_path=tmp_path / "h.parquet")
    sample = sample.drop(columns=[large_tables.PRIOR_WEIGHT])
    # what the sample alone shows: accounts (nearly) unique, no note
    assert sample["account_id"].nunique() >= 0.99 * len(sample) and sample["note"].isna().all()

    by_sample = {entry["name"]: entry["flags"] for entry in profile_table(sample, "bad")["columns"]}
    assert by_sample["account_id"] == ["id_like"] and by_sample["note"] == ["all_null"]
    profile = profile_table(sample, "bad", every_row=record)
    flags = {entry["name"]: entry["flags"] for entry in profile["columns"]}
    assert flags["order_id"] == ["id_like"] and flags["account_id"] == [] and flags["note"] == []
    assert {"account_id", "note", "amount"} <= set(profile["features"]) and "order_id" not in profile["features"]
    account = next(entry for entry in profile["columns"] if entry["name"] == "account_id")
    assert account["every_row"]["approx_distinct"] == pytest.approx(rows // 2, rel=0.03)


def test_a_sampled_table_names_its_problems(tmp_path, parquet_parts):
    table = parquet_parts(tmp_path / "parts", parts=1, rows=500)
    files = loading.parquet_files(tmp_path / "parts")
    with pytest.raises(DataError, match="target column 'churned' not found"):
        large_tables.sample_table(files, "churned", max_rows=100, holdout_fraction=0.2, seed=0,
                                  holdout_path=tmp_path / "h.parquet")
    table.assign(bad=False).to_parquet(tmp_path / "one_class.parquet")
    with pytest.raises(DataError, match="1 class"):
        large_tables.sample_table([tmp_path / "one_class.parquet"], "bad", max_rows=100, holdout_fraction=0.2,
                                  seed=0, holdout_path=tmp_path / "h.parquet")


def test_a_folder_or_glob_of_parquet_parts_is_read_as_one_table(tmp_path, parquet_parts):
    table = parquet_parts(tmp_path / "parts", parts=2, rows=300)
    for source in (tmp_path / "parts", str(tmp_path / "parts" / "part-*.parquet")):
        read, info = loading.load_table(source, na_values=["n.a."])
        assert len(read) == len(table) and info["files"] == 2 and info["format"] == "parquet"
        assert read["row_id"].tolist() == table["row_id"].tolist()
        assert read["colour"].isna().sum() == (table["colour"] == "n.a.").sum()
    assert loading.load_table(tmp_path / "parts")[1]["content_hash"] == loading.files_hash(
        loading.parquet_files(tmp_path / "parts"))

    with pytest.raises(DataError, match="no Parquet files match this pattern"):
        loading.load_table(str(tmp_path / "parts" / "*.csv"))
    pd.DataFrame({"other": ["a"]}).to_parquet(tmp_path / "parts" / "part-00009.parquet")
    with pytest.raises(DataError, match="part-00009.parquet: its columns differ from part-00000.parquet's"):
        loading.load_table(tmp_path / "parts")
    with pytest.raises(DataError, match="its columns differ"):
        large_tables.memory_estimate(loading.parquet_files(tmp_path / "parts"))


def test_a_window_is_sampled_uniformly_and_its_columns_counted_over_every_row(tmp_path, parquet_parts):
    table = parquet_parts(tmp_path / "parts", parts=3, rows=4_000)
    files = loading.parquet_files(tmp_path / "parts")
    sample, record = large_tables.window_sample(files, rows_wanted=1_200, seed=0)
    assert record["rows"] == len(table) and record["sampling_rate"] == 0.1
    assert 1_000 < record["sampled_rows"] == len(sample) < 1_400
    assert set(sample["row_id"]) <= set(table["row_id"]) and sample["row_id"].is_unique
    # every part in its share, and the rare class too
    part_of = sample["row_id"] // 4_000
    assert all(250 < (part_of == part).sum() < 550 for part in range(3))
    assert abs(sample["bad"].mean() - table["bad"].mean()) < 0.02
    assert record["columns"]["bad"]["missing"] == table["bad"].isna().sum() == 15  # over every row, not the sample
    again, _ = large_tables.window_sample(files, rows_wanted=1_200, seed=0)
    assert again["row_id"].tolist() == sample["row_id"].tolist()  # the same seed draws the same rows
