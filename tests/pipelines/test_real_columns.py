"""Every column type a real table has, from the file a user trains on to a single served row.

One real fit on a generated table that carries what real exports carry: `float32` and `int8` columns (Polars,
Spark, numpy), timestamps with offsets, Yes/No booleans, a category whose values include the word `none`, free
text, an integer-coded category, a mixed-type column and rows without a target. The model is trained from the
Parquet file, then scored from that file, from a CSV of it, and row by row over real HTTP.
"""

import json

import httpx
import numpy as np
import pandas as pd
import pytest

from poise.agents.deployment import batch, signature
from poise.agents.errors import DataError
from poise.pipelines.api.main import create_app
from poise.pipelines.runner import train
from poise.registry import tracking
from poise.registry.keys import create_key

N_ROWS = 1200


def messy_table(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    bad = rng.random(N_ROWS) < 0.12
    stamps = pd.Timestamp("2012-01-01 06:16:41") + pd.to_timedelta(rng.integers(0, 365 * 24, N_ROWS), unit="h")
    words = np.array(["red", "moon", "lost", "city", "night", "blue", "river", "king"])
    frame = pd.DataFrame({
        "score": (rng.normal(size=N_ROWS) + bad * 1.6).astype("float32"),
        "grade": rng.integers(1, 6, N_ROWS).astype("int8"),  # an integer-coded category
        "member": np.where(rng.random(N_ROWS) < np.where(bad, 0.75, 0.25), "Yes", "No"),
        "airbag": np.where(rng.random(N_ROWS) < np.where(bad, 0.7, 0.3), "none", "airbag"),
        "seen_at": [f"{stamp.isoformat()}+00:00" for stamp in stamps],
        "title": [" ".join(rng.choice(words, 2)) + f" {i}" for i in range(N_ROWS)],
        "mixed": pd.Series(np.where(np.arange(N_ROWS) % 3 == 0, "n/k", np.arange(N_ROWS) % 7).astype(str)),
        "outcome": np.where(bad, "bad", "good").astype(object),
    })
    frame["rating"] = np.where(np.arange(N_ROWS) % 12 == 11, rng.choice(["PG", "R"], N_ROWS), None)  # 92 % missing
    frame.loc[frame.index % 40 == 7, "outcome"] = None  # 30 rows whose label never arrived
    return frame


@pytest.mark.slow
def test_a_messy_parquet_trains_and_serves_from_parquet_csv_and_single_json_rows(settings, tmp_path, serve_app,
                                                                                 monkeypatch):
    frame = messy_table()
    parquet, csv = tmp_path / "stops.parquet", tmp_path / "stops.csv"
    frame.to_parquet(parquet, index=False)
    frame.to_csv(csv, index=False)

    result = train(parquet, "outcome", name="stops", time_limit=20, settings=settings)

    assert result.status == "succeeded", result.error
    card = json.loads((settings.job_dir(result.job_id) / "data_card.json").read_text())
    columns = {entry["name"]: entry for entry in card["profile"]["columns"]}
    assert {name: columns[name]["inferred_type"] for name in ("score", "member", "seen_at", "title", "airbag")} == {
        "score": "numeric", "member": "boolean", "seen_at": "datetime", "title": "text", "airbag": "categorical"}
    assert set(card["profile"]["features"]) == set(frame.columns) - {"outcome"}  # nothing dropped
    assert card["split"]["n_missing_target_dropped"] == 30
    schema = tracking.load_model("stops", result.model_version).metadata.get_input_schema()
    assert {spec.name: spec.type.name for spec in schema.inputs}["rating"] == "string"  # not `Any`: an example has one

    from_parquet = batch.batch_predict(settings, "stops", parquet, tmp_path / "a.csv")
    from_csv = batch.batch_predict(settings, "stops", csv, tmp_path / "b.csv")
    assert from_parquet[1] == from_csv[1] == N_ROWS
    scored_parquet, scored_csv = pd.read_csv(from_parquet[0]), pd.read_csv(from_csv[0])
    assert (scored_parquet["predicted_label"] == scored_csv["predicted_label"]).all()
    assert np.allclose(scored_parquet["predicted_proba_bad"], scored_csv["predicted_proba_bad"], atol=1e-6)

    # a Parquet source is scored a chunk at a time: 100 rows a chunk, from the file or from a folder of parts, to CSV
    # or to Parquet, gives the same rows as one chunk (even where a chunk of `rating` is all missing)
    monkeypatch.setattr(batch, "CHUNK_ROWS", 100)
    parts = tmp_path / "parts"
    parts.mkdir()
    for number, start in enumerate(range(0, N_ROWS, 500)):
        frame.iloc[start:start + 500].to_parquet(parts / f"part-{number}.parquet", index=False)
    chunked_csv = batch.batch_predict(settings, "stops", parquet, tmp_path / "c.csv")
    chunked_parquet = batch.batch_predict(settings, "stops", parts, tmp_path / "c.parquet")
    assert chunked_csv[1] == chunked_parquet[1] == N_ROWS
    pd.testing.assert_frame_equal(pd.read_csv(chunked_csv[0]), scored_parquet)
    from_parts = pd.read_parquet(chunked_parquet[0])
    assert from_parts["rating"].notna().sum() == frame["rating"].notna().sum()
    assert (from_parts["predicted_label"] == scored_parquet["predicted_label"]).all()
    assert np.allclose(from_parts["predicted_proba_bad"], scored_parquet["predicted_proba_bad"], atol=1e-12)

    # the file as trained on gives what the refitted predictor itself gives on the typed rows
    from autogluon.tabular import TabularPredictor

    refitted = TabularPredictor.load(str(settings.job_dir(result.job_id) / "autogluon_full"), verbosity=0)
    typed = pd.concat([pd.read_parquet(result.train_path), pd.read_parquet(result.holdout_path)])
    by_title = scored_csv.set_index("title").loc[typed["title"]]
    expected = refitted.predict_proba(typed.drop(columns=["outcome"]))["bad"].to_numpy()
    assert np.allclose(by_title["predicted_proba_bad"].to_numpy(), expected, atol=1e-6)

    info, key = create_key(settings.db_url, "scoring", ["predict"])
    rows = frame.drop(columns=["outcome"]).head(25)
    with serve_app(create_app(settings)) as url, httpx.Client(base_url=url, timeout=60) as client:
        for position, row in enumerate(json.loads(rows.to_json(orient="records"))):
            if position % 2:  # the same instant with another offset, and the boolean as JSON
                stamp = pd.Timestamp(row["seen_at"]).tz_convert("America/Chicago")
                row |= {"seen_at": stamp.isoformat(), "member": row["member"] == "Yes"}
            answer = client.post("/api/v1/models/stops/predict", json={"records": [row]},
                                 headers={"Authorization": f"Bearer {key}"})
            assert answer.status_code == 200, answer.text
            served = answer.json()["predictions"][0]
            assert served["label"] == scored_csv["predicted_label"][position]
            assert served["probabilities"]["bad"] == pytest.approx(scored_csv["predicted_proba_bad"][position],
                                                                   abs=1e-6)


@pytest.mark.slow
def test_a_schema_error_names_columns_and_types_never_rows(settings, tmp_path):
    frame = messy_table(1).head(400).dropna(subset=["outcome"])
    frame.to_csv(tmp_path / "t.csv", index=False)
    result = train(tmp_path / "t.csv", "outcome", name="types", time_limit=10, settings=settings)
    assert result.status == "succeeded", result.error
    model = tracking.load_model("types", result.model_version)
    features = signature.conform_to_signature(frame.drop(columns=["outcome"]), model.metadata.get_input_schema())

    assert signature.schema_mismatch(features, model.metadata.get_input_schema()).startswith("the model rejected")
    wrong = features.assign(score=features["score"].astype("float32"), seen_at=features["seen_at"].astype(str))
    message = signature.schema_mismatch(wrong, model.metadata.get_input_schema())
    assert message == "'score': expected double, got float32; 'seen_at': expected datetime, got object"

    words = frame.assign(score="high")
    with pytest.raises(DataError, match=rf"^column 'score' needs numbers; got 'high' in {len(frame)} row\(s\)$"):
        signature.predict_table(model, words)
