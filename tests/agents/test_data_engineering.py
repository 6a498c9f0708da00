"""Tests for the data engineering agent: reading real files, profiling, splitting, data card."""

import hashlib
import json

import numpy as np
import pandas as pd
import pytest

from poise.agents.data_engineering import loading
from poise.agents.data_engineering.column_types import class_counts
from poise.agents.data_engineering.data_card import write_data_card
from poise.agents.data_engineering.leakage import LEAK_AUC
from poise.agents.data_engineering.loading import load_table
from poise.agents.data_engineering.profiling import profile_table
from poise.agents.data_engineering.splitting import prepare_split, split_with_holdout
from poise.agents.errors import DataError


def make_frame(n_rows: int = 300, seed: int = 0) -> pd.DataFrame:
    """A small imbalanced binary table with one informative and a few plain feature columns."""
    rng = np.random.default_rng(seed)
    label = np.where(rng.random(n_rows) < 0.2, "yes", "no")
    return pd.DataFrame({
        "income": rng.normal(50_000, 12_000, n_rows).round(2) + (label == "yes") * 5_000,
        "age": rng.integers(18, 80, n_rows),
        "city": rng.choice(["Paris", "Lyon", "Nice", "Lille"], n_rows),
        "churned": label,
    })


def column(profile: dict, name: str) -> dict:
    return next(entry for entry in profile["columns"] if entry["name"] == name)


# --- load_table ---------------------------------------------------------------


def test_semicolon_latin1_csv_round_trips(tmp_path):
    frame = make_frame()
    frame["drink"] = np.resize(["café", "thé", "crème brûlée", "eau"], len(frame))
    path = tmp_path / "menu.csv"
    path.write_bytes(frame.to_csv(sep=";", index=False).encode("latin-1"))

    df, info = load_table(path)

    assert info["format"] == "csv" and info["delimiter"] == ";"
    assert info["encoding"] in {"latin-1", "cp1252"}
    assert df["drink"].tolist() == frame["drink"].tolist()
    assert df.shape == frame.shape
    assert info["source"] == str(path.resolve()) and info["bytes"] == path.stat().st_size
    assert info["content_hash"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_encoding_guess_failing_after_first_megabyte_falls_back_to_latin1(tmp_path):
    path = tmp_path / "long.csv"
    # 0x81 is undefined in the Windows code page guessed from the café-only first megabyte.
    path.write_bytes(b"drink;n\n" + "café;1\n".encode("latin-1") * 160_000 + b"x\x81y;2\n")

    df, info = load_table(path)

    assert info["encoding"] == "latin-1"
    assert df["drink"].iloc[0] == "café" and df["drink"].iloc[-1] == "x\x81y"
    assert len(df) == 160_001


def test_tsv_and_missing_tokens(tmp_path):
    path = tmp_path / "data.tsv"
    path.write_text("a\tb\tc\n1\tNA\tx\n2\t?\tnull\n3\t4\tN/A\n", encoding="utf-8")

    df, info = load_table(path)

    assert info["delimiter"] == "\t" and info["encoding"] == "utf-8"
    assert df["a"].tolist() == [1, 2, 3]
    assert df["b"].isna().tolist() == [True, False, False]  # '?' is a value unless the user says otherwise
    assert df["c"].isna().tolist() == [False, True, True]

    df, info = load_table(path, na_values=["?"])
    assert df["b"].isna().tolist() == [True, True, False] and info["na_values"] == ["?"]


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_words_none_and_question_mark_are_values_unless_named_missing(tmp_path, suffix):
    frame = pd.DataFrame({"airbag": ["airbag", "none", "none", None], "x": [1.0, -999.0, 3.0, 4.0],
                          "note": ["?", "ok", "n/a", "fine"]})
    path = tmp_path / f"crash{suffix}"
    frame.to_csv(path, index=False) if suffix == ".csv" else frame.to_parquet(path)

    df, _ = load_table(path)
    assert df["airbag"].tolist()[:3] == ["airbag", "none", "none"] and df["airbag"].isna().tolist()[3]
    assert df["note"].tolist()[0] == "?" and df["x"].notna().all()

    df, _ = load_table(path, na_values=["none", "-999"])
    assert df["airbag"].isna().tolist() == [False, True, True, True]
    assert df["x"].isna().tolist() == [False, True, False, False]


def test_pipe_delimited_txt_with_stripped_and_empty_column_names(tmp_path):
    path = tmp_path / "data.txt"
    path.write_text(" a | |c \n1|2|3\n4|5|6\n", encoding="utf-8")

    df, info = load_table(path)

    assert info["delimiter"] == "|"
    assert df.columns.tolist() == ["a", "column_1", "c"]


def test_utf8_bom_is_not_part_of_first_column_name(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufeffnamé,value\nzoë,1\nanaïs,2\n".encode("utf-8"))

    df, info = load_table(path)

    assert info["encoding"] == "utf-8-sig"
    assert df.columns.tolist() == ["namé", "value"]
    assert df["namé"].tolist() == ["zoë", "anaïs"]


def test_parquet(tmp_path):
    frame = make_frame()
    path = tmp_path / "data.parquet"
    frame.to_parquet(path)

    df, info = load_table(path)

    assert info["format"] == "parquet" and info["delimiter"] is None
    pd.testing.assert_frame_equal(df, frame)


@pytest.mark.parametrize(
    ("file_name", "content", "message"),
    [
        ("garbage.csv", bytes(range(256)) * 20, "binary"),
        ("garbage.parquet", b"PAR1 this is not parquet", "Parquet"),
        ("empty.csv", b"", "empty"),
        ("blank.csv", b"\n\n\n", "no columns"),
        ("header_only.csv", b"a,b,c\n", "no data rows"),
        ("ragged.csv", b"a,b,c\n1,2,3\n4,5,6,7\n8,9,10\n", "cannot parse"),
        ("extra_field.csv", b"a,b\n1,2,3\n4,5,6\n", "more fields than the header"),
        ("dupes.csv", b"a, a ,b\n1,2,3\n", "duplicate column names: 'a'"),
        ("book.xlsx", b"PK\x03\x04", "unsupported file type '.xlsx'"),
    ],
)
def test_unreadable_files_raise_data_error_naming_file(tmp_path, file_name, content, message):
    path = tmp_path / file_name
    path.write_bytes(content)

    with pytest.raises(DataError, match=message) as caught:
        load_table(path)

    assert file_name in str(caught.value)
    assert "Traceback" not in str(caught.value)


def test_missing_file_and_directory(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_table(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="directory"):
        load_table(tmp_path)


def test_oversized_file_mentions_size_and_limit(tmp_path):
    path = tmp_path / "big.csv"
    path.write_text("a,b\n" + "1,2\n" * 100)

    with pytest.raises(DataError, match=r"404 bytes, larger than the limit of 100 bytes"):
        load_table(path, max_bytes=100)


# --- profile_table: target ----------------------------------------------------


def test_missing_target_suggests_close_name():
    with pytest.raises(DataError, match=r"target column 'Churn' not found; did you mean 'churned'\?"):
        profile_table(make_frame(), "Churn")


def test_missing_target_without_close_name_lists_columns():
    with pytest.raises(DataError, match=r"not found; available columns \(4\): 'income', 'age'"):
        profile_table(make_frame(), "zzz")


def test_one_class_target():
    frame = make_frame().assign(churned="no")
    with pytest.raises(DataError, match=r"target 'churned' has only one class \('no'\)"):
        profile_table(frame, "churned")


def test_too_small_minority_class_is_named_with_count():
    frame = make_frame()
    frame.loc[:2, "churned"] = "rare"
    with pytest.raises(DataError, match=r"'rare' \(3 rows\)"):
        profile_table(frame, "churned")


def test_imbalance_ratio_minority_and_missing_target():
    frame = make_frame()
    frame["churned"] = ["yes"] * 30 + ["no"] * 260 + [None] * 10

    target = profile_table(frame, "churned")["target"]

    assert target["problem_type"] == "binary"
    assert target["class_counts"] == {"no": 260, "yes": 30}
    assert target["minority_class"] == "yes" and target["majority_class"] == "no"
    assert target["imbalance_ratio"] == pytest.approx(260 / 30, rel=1e-3)
    assert target["n_missing"] == 10


def test_problem_types():
    rng = np.random.default_rng(1)
    frame = make_frame()
    frame["grade"] = np.resize([1, 2, 3, 4, 5], len(frame))
    frame["price"] = rng.normal(10, 2, len(frame))
    frame["count"] = rng.integers(0, 200, len(frame))

    assert profile_table(frame, "grade")["target"]["problem_type"] == "multiclass"
    assert profile_table(frame, "price")["target"]["problem_type"] == "regression"
    assert profile_table(frame, "count")["target"]["problem_type"] == "regression"
    assert profile_table(frame, "price")["target"]["class_counts"] is None


# --- profile_table: columns ---------------------------------------------------


def test_one_value_plus_missing_is_a_binary_feature_not_a_constant():
    frame = make_frame()
    unbelted = np.where(frame["churned"] == "yes", 0.7, 0.1) > np.random.default_rng(4).random(len(frame))
    frame["belted"] = np.where(unbelted, None, "belted")  # present or missing: that is the signal
    frame["coupon"] = np.where(np.arange(len(frame)) % 3 == 0, 5.0, np.nan)

    profile = profile_table(frame, "churned")

    assert {"belted", "coupon"} <= set(profile["features"])
    for name in ("belted", "coupon"):
        assert column(profile, name)["flags"] == [] and column(profile, name)["reason"].startswith("one value plus")
    assert column(profile, "belted")["missing_share"] == pytest.approx(unbelted.mean(), abs=1e-4)


def test_free_text_is_kept_and_identifiers_are_not():
    rng = np.random.default_rng(3)
    words = ["red", "river", "night", "story", "lost", "city", "king", "blue", "moon", "the"]
    frame = make_frame()
    frame["title"] = [" ".join(rng.choice(words, 2 + i % 2)) + f" {i}" for i in range(len(frame))]
    frame["code"] = [f"K{i:06d}" for i in range(len(frame))]

    profile = profile_table(frame, "churned")

    assert column(profile, "title")["inferred_type"] == "text" and "title" in profile["features"]
    assert column(profile, "code")["flags"] == ["id_like"]


def test_time_zones_narrow_numbers_and_mixed_objects_are_typed_for_training():
    frame = make_frame(200)
    stamps = pd.date_range("2012-01-01 06:16:41", periods=len(frame), freq="37min")
    frame["aware"] = [f"{stamp.isoformat()}+00:00" if i % 2 else f"{(stamp + pd.Timedelta(hours=2)).isoformat()}+02:00"
                      for i, stamp in enumerate(stamps)]
    frame["naive"] = stamps.astype(str)
    frame["small"] = frame["income"].astype("float32")
    frame["tiny"] = (frame["age"] % 7).astype("int8")
    frame["mixed"] = pd.Series([1, "a", 2.5, None] * 50, dtype=object)

    profile = profile_table(frame, "churned")
    types = {name: column(profile, name)["inferred_type"] for name in ("aware", "naive", "small", "tiny", "mixed")}
    assert types == {"aware": "datetime", "naive": "datetime", "small": "numeric", "tiny": "numeric",
                     "mixed": "categorical"}
    train, holdout, _ = prepare_split(frame, profile, seed=0)
    both = pd.concat([train, holdout])
    assert str(both["aware"].dtype) == "datetime64[ns]" and str(both["naive"].dtype) == "datetime64[ns]"
    assert (both["aware"] == both["naive"]).all()  # the same instants, once offsets are applied
    assert str(both["small"].dtype) == "float64" and str(both["tiny"].dtype) == "int64"


def test_constant_all_null_and_id_like_columns_are_dropped():
    frame = make_frame()
    frame["source"] = "web"
    frame["empty"] = np.nan
    frame["customer_id"] = [f"C{i:05d}-{i * 7919 % 1000}" for i in range(len(frame))]
    frame["row_number"] = np.arange(len(frame)) + 1000
    frame["amount"] = np.random.default_rng(2).normal(100, 30, len(frame))  # unique floats

    profile = profile_table(frame, "churned")

    reasons = {item["column"]: item["reason"] for item in profile["dropped"]}
    assert reasons["source"] == "constant: single value 'web'"
    assert reasons["empty"].startswith("all_null")
    assert reasons["customer_id"] == "id_like: 300 unique values in 300 rows"
    assert reasons["row_number"].startswith("id_like")
    assert column(profile, "customer_id")["flags"] == ["id_like"]
    assert column(profile, "amount")["flags"] == [] and column(profile, "amount")["action"] == "keep"
    assert profile["features"] == ["income", "age", "city", "amount"]


def test_integer_id_by_name_even_when_shuffled():
    frame = make_frame()
    frame["userId"] = np.random.default_rng(3).permutation(len(frame)) * 13 + 7

    profile = profile_table(frame, "churned")

    assert "id_like" in column(profile, "userId")["flags"]


def test_leak_column_flagged_and_dropped_unless_kept():
    frame = make_frame()
    rng = np.random.default_rng(4)
    frame["refund_issued"] = (frame["churned"] == "yes") + rng.normal(0, 0.01, len(frame))
    frame["segment_code"] = np.where(frame["churned"] == "yes", "S1", "S2")

    profile = profile_table(frame, "churned")

    for name in ("refund_issued", "segment_code"):
        entry = column(profile, name)
        assert "leak_suspect" in entry["flags"] and entry["action"] == "drop"
        assert entry["leak_auc"] >= LEAK_AUC
        assert entry["reason"].startswith("leak_suspect: alone separates the target (ROC-AUC")
    assert column(profile, "income")["leak_auc"] < 0.9

    kept = profile_table(frame, "churned", keep_columns=["refund_issued"])
    assert column(kept, "refund_issued")["action"] == "keep"
    assert "refund_issued" in kept["features"] and "segment_code" not in kept["features"]


def test_strong_real_feature_is_not_a_leak_suspect():
    """shuttle_2_vs_5 (KEEL): `A2` and `A7` alone separate the classes on every fold; `A1` is a genuine
    strong sensor reading whose out-of-fold AUC moves around 0.99 with the folds (0.9985 at seed 2)."""
    from poise.pipelines.datasets import load

    table, _ = load("shuttle_2_vs_5")
    profile = profile_table(table, "target", seed=2)
    assert column(profile, "A1")["leak_auc"] > 0.99 and column(profile, "A1")["action"] == "keep"
    assert {item["column"] for item in profile["dropped"]} == {"A2", "A7"}


def test_leak_detection_multiclass():
    frame = make_frame()
    frame["tier"] = np.resize(["gold", "silver", "bronze"], len(frame))
    frame["tier_copy"] = frame["tier"].map({"gold": 3, "silver": 2, "bronze": 1})

    profile = profile_table(frame, "tier")

    assert profile["target"]["problem_type"] == "multiclass"
    assert "leak_suspect" in column(profile, "tier_copy")["flags"]
    assert column(profile, "city")["leak_auc"] < 0.9


def test_type_inference():
    n_rows = 200
    rng = np.random.default_rng(5)
    frame = make_frame(n_rows)
    frame["active"] = rng.choice(["Yes", "no"], n_rows)
    frame["flag01"] = rng.integers(0, 2, n_rows)
    months, days = rng.integers(1, 13, n_rows), rng.integers(1, 29, n_rows)
    frame["signup"] = [f"2023-{month:02d}-{day:02d}" for month, day in zip(months, days)]
    frame["comment"] = [f"customer {i} wrote a rather long comment about the service" for i in range(n_rows)]
    frame["amount_text"] = [f"{value:.2f}" for value in rng.normal(10, 3, n_rows)]
    frame["plan"] = rng.choice(["basic", "pro", "team"], n_rows)

    types = {entry["name"]: entry["inferred_type"] for entry in profile_table(frame, "churned")["columns"]}

    assert types["active"] == "boolean" and types["flag01"] == "boolean"
    assert types["signup"] == "datetime"
    assert types["comment"] == "text"
    assert types["amount_text"] == "numeric"
    assert types["plan"] == "categorical" and types["income"] == "numeric"


def test_user_drop_and_keep_columns_validation():
    frame = make_frame()
    profile = profile_table(frame, "churned", drop_columns=["age"])
    assert {"column": "age", "reason": "dropped by user"} in profile["dropped"]
    assert "age" not in profile["features"]

    with pytest.raises(DataError, match="unknown column.*drop_columns: 'agee'"):
        profile_table(frame, "churned", drop_columns=["agee"])
    with pytest.raises(DataError, match="unknown column.*keep_columns: 'x'"):
        profile_table(frame, "churned", keep_columns=["x"])


def test_no_features_left_lists_reasons():
    frame = make_frame()[["churned"]].assign(constant=1, empty=None)
    with pytest.raises(DataError, match=r"no usable feature columns: 'constant' \(constant: single value 1\), 'empty'"):
        profile_table(frame, "churned")


def test_profile_is_json_serialisable_with_hostile_names():
    frame = make_frame()
    hostile = ["a|b\nc", "<script>x</script>", "'; DROP TABLE jobs;--", "`tick`"]
    for name in hostile:
        frame[name] = np.random.default_rng(6).choice(["u", "v", "w"], len(frame))

    profile = profile_table(frame, "churned")

    decoded = json.loads(json.dumps(profile))
    assert decoded == profile
    assert set(hostile) <= set(profile["features"])


# --- prepare_split ------------------------------------------------------------


def test_stratified_split_keeps_every_class_and_fraction():
    frame = make_frame(400)
    frame["churned"] = ["a"] * 320 + ["b"] * 60 + ["c"] * 14 + ["d"] * 4 + [None] * 2
    frame.loc[1, :] = frame.loc[0, :]  # one exact duplicate row
    profile = profile_table(frame, "churned")

    train, holdout, summary = prepare_split(frame, profile, holdout_fraction=0.2, seed=1)

    assert set(train["churned"]) == set(holdout["churned"]) == {"a", "b", "c", "d"}
    assert summary["n_missing_target_dropped"] == 2 and summary["n_duplicate_rows"] == 1
    assert summary["n_rows_used"] == 398 == len(train) + len(holdout)  # duplicates are kept
    assert abs(len(holdout) / summary["n_rows_used"] - 0.2) < 0.01
    assert summary["holdout_class_counts"]["d"] >= 1 and summary["train_class_counts"]["d"] >= 3
    assert list(train.index) == list(range(len(train)))
    assert list(train.columns) == [*profile["features"], "churned"]
    json.dumps(summary)


def test_many_rare_classes_all_reach_the_holdout():
    # Plain stratified rounding leaves two of these 4-row classes out of a 20% holdout.
    frame = make_frame(200)
    frame["kind"] = ["big"] * 160 + [f"c{i}" for i in range(10) for _ in range(4)]
    profile = profile_table(frame, "kind", drop_columns=["churned"])

    train, holdout, summary = prepare_split(frame, profile, seed=0)

    assert set(holdout["kind"]) == set(train["kind"]) == set(frame["kind"])
    assert all(summary["train_class_counts"][f"c{i}"] >= 3 for i in range(10))
    assert len(train) + len(holdout) == 200


def test_split_casts_columns_and_labels():
    frame = make_frame()
    frame["active"] = np.resize(["yes", "no", None], len(frame))
    frame["signup"] = np.resize(["2023-01-05", "2023-02-11"], len(frame))
    frame["label"] = np.resize([1, 0, 0, 0], len(frame))
    profile = profile_table(frame, "label", drop_columns=["churned"])

    train, holdout, summary = prepare_split(frame, profile)

    assert set(train["label"]) == {"0", "1"}
    assert summary["train_class_counts"]["0"] > summary["train_class_counts"]["1"]
    assert train["city"].dtype == "category"
    assert list(train["active"].cat.categories) == ["false", "true"] and train["active"].isna().any()
    assert pd.api.types.is_datetime64_any_dtype(train["signup"])
    assert pd.api.types.is_float_dtype(train["income"])


def test_a_given_holdout_table_is_scored_instead_of_a_split(tmp_path):
    frame = make_frame()
    profile = profile_table(frame, "churned")
    scored = make_frame(60).assign(income=lambda f: f["income"].astype(str))  # typed like the training table
    folder = tmp_path / "holdout"

    # given in parts, as a big table's holdout is read: typed and written part by part
    train, summary = split_with_holdout(frame.iloc[:200], profile, [scored.iloc[:25], scored.iloc[25:]], folder)

    assert sorted(path.name for path in folder.iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    holdout = pd.concat(loading.parquet_chunks(loading.parquet_files(folder), [], 1_000), ignore_index=True)
    assert len(train) == 200 and len(holdout) == 60 and summary["holdout_source"] == "given"
    assert summary["holdout_rows"] == 60 and summary["holdout_class_counts"] == class_counts(holdout["churned"])
    assert list(holdout.columns) == [*profile["features"], "churned"]
    assert pd.api.types.is_float_dtype(holdout["income"])
    assert all(pd.read_parquet(part)["city"].dtype == "category" for part in folder.iterdir())
    assert summary["holdout_fraction"] == round(60 / 260, 4)
    with pytest.raises(DataError, match="not in the holdout table: 'city'"):
        split_with_holdout(frame, profile, [scored.drop(columns=["city"])], folder)
    with pytest.raises(DataError, match="classes the training table lacks: 'maybe'"):
        split_with_holdout(frame, profile, [scored.iloc[:30], scored.iloc[30:].assign(churned="maybe")], folder)
    with pytest.raises(DataError, match="no rows with a target"):
        split_with_holdout(frame, profile, [scored.assign(churned=None)], folder)


def test_regression_split_is_random_and_numeric():
    frame = make_frame()
    profile = profile_table(frame, "income")

    train, holdout, summary = prepare_split(frame, profile, holdout_fraction=0.25, seed=3)

    assert pd.api.types.is_float_dtype(train["income"])
    assert summary["holdout_rows"] == 75 and summary["train_class_counts"] is None


# --- write_data_card ----------------------------------------------------------


def test_data_card_escapes_hostile_column_names(tmp_path):
    frame = make_frame()
    hostile = {"a|b\nc": "u", "<script>x</script>": "v", "'; DROP TABLE jobs;--": "w"}
    for name in hostile:
        frame[name] = np.random.default_rng(7).choice(["u", "v", "w"], len(frame))
    frame["const`ant"] = "x|y"
    csv_path = tmp_path / "input.csv"
    frame.to_csv(csv_path, index=False)
    df, info = load_table(csv_path)
    profile = profile_table(df, "churned")
    _, _, summary = prepare_split(df, profile)

    json_path, md_path = write_data_card(profile, summary, info, tmp_path / "card")

    card = json.loads(json_path.read_text())
    assert card["profile"] == profile and card["split"] == summary and card["source"] == info
    markdown = md_path.read_text()
    assert "a\\|b c" in markdown and "a|b" not in markdown
    assert "&lt;script&gt;x&lt;/script&gt;" in markdown and "<script>" not in markdown
    assert "'; DROP TABLE jobs;--" in markdown
    assert "const\\`ant" in markdown and "x\\|y" in markdown
    assert info["content_hash"] in markdown
    assert "| no | 2" in markdown  # class table row
    table_rows = [line for line in markdown.splitlines() if line.startswith("| ") and "DROP TABLE" in line]
    assert len(table_rows) == 1 and table_rows[0].count(" | ") == 5
    assert sorted(p.name for p in (tmp_path / "card").iterdir()) == ["data_card.json", "data_card.md"]
