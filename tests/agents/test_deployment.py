"""Inputs conformed to a model's signature: numbers stay numbers, bad values are named, never silently NaN.
Served models: every serving path gives exactly the registered pyfunc's output, and which path serves a model,
and why when it is not the fast one, is reported."""

import json
from pathlib import Path

import pandas as pd
import pytest
from mlflow.types import ColSpec, Schema

from poise.agents.deployment.serving import ServedModel
from poise.agents.deployment.signature import (
    conform_records,
    conform_to_signature,
    example_rows,
    predict_table,
    serving_frame,
)
from poise.agents.errors import DataError
from poise.pipelines.settings import Settings
from poise.registry import tracking

SCHEMA = Schema([ColSpec("double", "tenure"), ColSpec("string", "plan"), ColSpec("long", "visits")])


def test_types_follow_the_signature_and_extra_columns_are_dropped():
    table = pd.DataFrame({"tenure": ["3", 4.5], "plan": ["monthly", None], "visits": [1, 2], "extra": ["x", "y"]})
    conformed = conform_to_signature(table, SCHEMA)
    assert list(conformed.columns) == ["tenure", "plan", "visits"]
    assert conformed["tenure"].tolist() == [3.0, 4.5] and conformed["visits"].dtype == "int64"
    assert conformed["plan"].tolist() == ["monthly", None]


@pytest.mark.parametrize("value", ["abc", [1, 2], {"a": 1}, float("inf")], ids=["text", "list", "object", "inf"])
def test_a_value_that_is_not_a_number_is_named(value):
    table = pd.DataFrame({"tenure": [value], "plan": ["monthly"], "visits": [1]})
    with pytest.raises(DataError, match="column 'tenure' needs numbers"):
        conform_to_signature(table, SCHEMA)


def test_missing_columns_and_gaps_in_integers_are_refused():
    with pytest.raises(DataError, match="lacks the model's columns: 'visits'"):
        conform_to_signature(pd.DataFrame({"tenure": [1.0], "plan": ["a"]}), SCHEMA)
    with pytest.raises(DataError, match="whole numbers without gaps"):
        conform_to_signature(pd.DataFrame({"tenure": [1.0], "plan": ["a"], "visits": [None]}), SCHEMA)


def test_values_already_typed_take_the_fast_path_with_the_same_result():
    schema = Schema([ColSpec("double", "tenure"), ColSpec("string", "plan"), ColSpec("double", "flag")])
    table = pd.DataFrame({"tenure": [1.5, float("nan"), 3.0], "plan": ["monthly", float("nan"), None],
                          "flag": [True, False, True]}, index=[7, 8, 9])
    conformed = conform_to_signature(table, schema)
    assert list(conformed.index) == [7, 8, 9]
    assert conformed["tenure"].tolist()[::2] == [1.5, 3.0] and pd.isna(conformed["tenure"].iloc[1])
    assert conformed["plan"].tolist() == ["monthly", None, None] and conformed["plan"].dtype == object
    assert conformed["flag"].tolist() == [1.0, 0.0, 1.0]
    mixed = conform_to_signature(pd.DataFrame({"tenure": ["2"], "plan": [3], "flag": [1]}), schema)
    assert mixed["tenure"].tolist() == [2.0] and mixed["plan"].tolist() == ["3"]


def test_plain_json_records_are_conformed_without_a_frame_and_anything_else_is_left_to_the_frame_path():
    schema = Schema([ColSpec("double", "tenure"), ColSpec("string", "plan")])
    pool = [None, 1, 2.5, -3, "monthly", "", True, [1], {"a": 1}, 2**60]
    cases = [[{"tenure": a, "plan": b}] for a in pool for b in pool]
    cases += [[{"tenure": 1}, {"tenure": 2.5, "plan": "x"}], [{"plan": "x"}, {"tenure": None, "plan": None}]]
    fast = 0
    for records in cases:
        direct = conform_records(records, schema)
        try:
            expected = conform_to_signature(pd.DataFrame(records), schema)
        except DataError:
            assert direct is None, records
            continue
        if direct is not None:
            fast += 1
            pd.testing.assert_frame_equal(direct, expected, check_exact=True)
    assert fast == 4 * 3 + 2  # (None, 1, 2.5, -3) x (None, "monthly", "") and the two multi-row cases
    assert conform_records([{"plan": "x"}], schema) is None  # a missing column: the frame path names it


# ---------------------------------------------------------------------------------- served models (real fits)

def _register(settings, name: str, table: pd.DataFrame, **fit) -> tuple[ServedModel, pd.DataFrame]:
    """Fit AutoGluon on most of `table`, register it as Poise does, and load it as the API serves it."""
    from autogluon.tabular import TabularPredictor

    train, holdout = table.iloc[:640], table.iloc[640:].drop(columns=["churned"]).reset_index(drop=True)
    predictor = TabularPredictor(label="churned", eval_metric="f1", path=str(settings.home / name), verbosity=0)
    # folds one after another, as Poise fits them without a cluster (with Ray installed AutoGluon would start a local
    # Ray instance in this process, which later tests would find still connected)
    predictor.fit(train, excluded_model_types=["NN_TORCH", "FASTAI"],
                  ag_args_ensemble={"fold_fitting_strategy": "sequential_local"}, **fit)
    deploy = Path(predictor.clone_for_deployment(str(settings.home / f"{name}-deploy")))
    client = tracking.configure(settings.tracking_uri, settings.registry_uri)
    run_id = tracking.get_or_create_run(client, tracking.ensure_experiment(client, name, settings.artifact_root),
                                        f"job-{name}", run_name=name)
    example = serving_frame(holdout.head(5))
    proba = predictor.predict_proba(example)
    output_example = pd.DataFrame({"label": predictor.predict_from_proba(proba).astype(str).to_numpy(),
                                   **{f"proba_{c}": proba[c].to_numpy(dtype="float64") for c in proba.columns}})
    version = tracking.log_and_register_model(
        client, run_id, name, f"job-{name}", deploy,
        model_config={"decision_threshold": 0.3, "positive_class": "yes", "target": "churned",
                      "classes": ["no", "yes"]},
        input_example=example, output_example=output_example, tags={})
    return ServedModel(version, tracking.load_model(name, version)), holdout


def _odd_rows(holdout: pd.DataFrame) -> pd.DataFrame:
    """Gaps, unseen categories and extreme numbers, as a client may send them."""
    first = holdout.iloc[0].to_dict()
    return pd.DataFrame([
        {k: None for k in first},
        {**first, "plan": "lifetime", "region": None},
        {**first, "tenure_months": 1e12, "monthly_charges": -1e12},
        {**first, "tenure_months": None, "region": "mars"},
    ])


@pytest.mark.slow
def test_a_bagged_lightgbm_champion_is_scored_directly_with_exactly_the_pyfunc_output(tmp_path, make_table):
    settings = Settings(home=tmp_path / "home")
    settings.ensure_home()
    table = make_table(n_rows=800, seed=3).drop(columns=["customer_id"])
    served, holdout = _register(settings, "bagged-gbm", table, num_bag_folds=3,
                                hyperparameters={"GBM": [{}, {"extra_trees": True, "ag_args": {"name_suffix": "XT"}}]})
    assert served.scoring.path == "fast_trees", served.scoring
    for frame in (serving_frame(holdout), _odd_rows(holdout), serving_frame(holdout.head(1))):
        expected = predict_table(served.pyfunc, frame)  # MLflow's pyfunc, schema enforcement and all
        pd.testing.assert_frame_equal(served.predict(frame), expected, check_exact=True)
        records = json.loads(frame.to_json(orient="records"))  # as a JSON request brings them
        pd.testing.assert_frame_equal(served.predict_records(records), expected, check_exact=True)
    output = served.predict(serving_frame(holdout))
    assert list(output.columns) == ["label", "proba_no", "proba_yes"]
    assert set(output["label"]) <= {"no", "yes"} and (output["label"] == "yes").any()


@pytest.mark.slow
def test_a_bagged_catboost_champion_on_numeric_columns_is_scored_directly_with_exactly_the_pyfunc_output(
        tmp_path, make_table):
    settings = Settings(home=tmp_path / "home")
    settings.ensure_home()
    table = make_table(n_rows=800, seed=5).drop(columns=["customer_id", "plan", "region", "country"])
    served, holdout = _register(settings, "bagged-cat", table, num_bag_folds=3, hyperparameters={"CAT": {}})
    assert served.scoring.path == "fast_trees", served.scoring
    gaps = pd.DataFrame([{column: None for column in holdout.columns}])
    for frame in (serving_frame(holdout), serving_frame(gaps), serving_frame(holdout.head(1))):
        expected = predict_table(served.pyfunc, frame)
        pd.testing.assert_frame_equal(served.predict(frame), expected, check_exact=True)
    # with a categorical column CatBoost encodes categories its own way: AutoGluon's path serves it
    with_region = make_table(n_rows=800, seed=5).drop(columns=["customer_id", "plan", "country"])
    served, _ = _register(settings, "bagged-cat-region", with_region, num_bag_folds=3, hyperparameters={"CAT": {}})
    assert served.scoring.path == "autogluon" and served.scoring.cause == "unsupported_model"
    assert "bagged CatBoost on numeric columns" in served.scoring.reason
    # a column constant in one fold's training rows is left out of that fold's model: each fold model is fed
    # exactly its own columns, still bit-identical to AutoGluon, whatever the left-out column holds
    from autogluon.tabular import TabularPredictor

    from poise.agents.deployment import autogluon_internals

    rare = table.assign(rare=[1.0] + [0.0] * (len(table) - 1))
    served, holdout = _register(settings, "bagged-cat-rare", rare, num_bag_folds=3, hyperparameters={"CAT": {}})
    predictor = TabularPredictor.load(str(settings.home / "bagged-cat-rare"), verbosity=0)
    trainer = autogluon_internals.trainer(predictor)
    bag = trainer.load_model("CatBoost_BAG_L1")
    seen = [autogluon_internals.fold_input_columns(bag.load_child(child)) for child in bag.models]
    assert any("rare" not in columns for columns in seen) and any("rare" in columns for columns in seen), seen
    assert served.scoring.path == "fast_trees" and served.scoring.reason is None, served.scoring
    variants = holdout.head(8).assign(rare=[0.0, 1.0, 0.5, -3.0, 1e9, None, 1.0, 0.0])
    for frame in (variants, variants.head(1), variants.iloc[[1]], serving_frame(holdout), gaps.assign(rare=None)):
        frame = serving_frame(frame)
        output = served.predict(frame)
        pd.testing.assert_frame_equal(output, predict_table(served.pyfunc, frame), check_exact=True)
        own = predictor.predict_proba(frame.astype({"rare": "float64"}))  # AutoGluon's own predict_proba
        for label in ("no", "yes"):
            assert output[f"proba_{label}"].tolist() == own[label].astype("float64").tolist(), label


@pytest.mark.slow
def test_other_champions_use_the_pyfunc_code_without_mlflow_and_give_the_same_output(tmp_path, make_table):
    settings = Settings(home=tmp_path / "home")
    settings.ensure_home()
    table = make_table(n_rows=800, seed=4).drop(columns=["customer_id"])
    served, holdout = _register(settings, "forest", table, hyperparameters={"RF": {"n_estimators": 50}})
    assert served.scoring.path == "autogluon" and "not a first-level bagged model" in served.scoring.reason
    for frame in (serving_frame(holdout), _odd_rows(holdout)):
        pd.testing.assert_frame_equal(served.predict(frame), predict_table(served.pyfunc, frame), check_exact=True)
    with pytest.raises(DataError, match="column 'tenure_months' needs numbers"):
        served.predict(serving_frame(holdout.head(1)).assign(tenure_months="soon"))


@pytest.mark.slow
def test_the_api_its_metrics_and_poise_show_say_which_path_serves_each_champion_and_why(
        tmp_path, make_table, serve_app, monkeypatch):
    import httpx
    import lightgbm.basic

    from poise.agents.deployment import autogluon_internals
    from poise.agents.deployment.serving import describe_serving_path
    from poise.pipelines.api.main import create_app
    from poise.registry.keys import create_key

    settings = Settings(home=tmp_path / "home")
    settings.ensure_home()
    table = make_table(n_rows=800, seed=3).drop(columns=["customer_id"])
    fast, holdout = _register(settings, "trees", table, num_bag_folds=2, hyperparameters={"GBM": {}})
    slow, _ = _register(settings, "forest", table, hyperparameters={"RF": {"n_estimators": 20}})
    assert fast.scoring.path == "fast_trees" and fast.scoring.reason is None, fast.scoring
    assert slow.scoring.path == "autogluon" and slow.scoring.cause == "unsupported_model"
    client = tracking.configure(settings.tracking_uri, settings.registry_uri)
    for name in ("trees", "forest"):
        tracking.promote(client, name, "1")
    key = create_key(settings.db_url, "test", ["read", "predict"])[1]
    records = json.loads(serving_frame(holdout.head(1)).to_json(orient="records"))
    with serve_app(create_app(settings)) as url, httpx.Client(base_url=url, timeout=120,
                                                              headers={"X-API-Key": key}) as api:
        models = {model["name"]: model for model in api.get("/api/v1/models").json()}
        assert models["trees"]["serving"] is None  # not loaded by this process yet
        for name in ("trees", "forest"):
            assert api.post(f"/api/v1/models/{name}/predict", json={"records": records}).status_code == 200
        models = {model["name"]: model for model in api.get("/api/v1/models").json()}
        metrics = api.get("/metrics").text
    assert models["trees"]["serving"] == {"version": "1", "path": "fast_trees", "fallback": None, "reason": None}
    assert models["forest"]["serving"]["path"] == "autogluon"
    assert models["forest"]["serving"]["fallback"] == "unsupported_model"
    assert "not a first-level bagged model" in models["forest"]["serving"]["reason"]
    assert 'poise_model_serving_path{fallback="",model="trees",path="fast_trees",version="1"} 1.0' in metrics
    assert ('poise_model_serving_path{fallback="unsupported_model",model="forest",path="autogluon",version="1"} 1.0'
            in metrics)
    assert describe_serving_path(settings, "trees", "1").startswith("serving path: fast_trees")
    assert "not a first-level bagged model" in describe_serving_path(settings, "forest", "1")  # `poise show`'s line

    # a library version other than the pinned one, or a private attribute gone: AutoGluon's path, saying so
    with monkeypatch.context() as patch:
        patch.setitem(autogluon_internals.PINNED, "lightgbm", "4.6.0")
        mismatch = ServedModel("1", fast.pyfunc).scoring
    assert mismatch.path == "autogluon" and mismatch.cause == "version_mismatch"
    assert mismatch.reason.startswith("lightgbm 4.7.0 is installed; the fast scorer is verified with lightgbm==4.6.0")
    with monkeypatch.context() as patch:
        patch.delattr(lightgbm.basic, "_data_from_pandas")
        missing = ServedModel("1", fast.pyfunc).scoring
    assert missing.path == "autogluon" and missing.cause == "private_attribute_missing"
    assert missing.reason == "private attribute `lightgbm.basic._data_from_pandas` is missing"
    pd.testing.assert_frame_equal(ServedModel("1", fast.pyfunc).predict(serving_frame(holdout)),
                                  fast.predict(serving_frame(holdout)), check_exact=True)


def test_the_fast_scorer_is_verified_with_exactly_the_versions_pyproject_pins():
    import importlib.metadata
    import re
    import tomllib

    from poise.agents.deployment.autogluon_internals import PINNED

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    pins = {}
    for requirement in pyproject["project"]["dependencies"]:
        name, version = re.fullmatch(r"([A-Za-z0-9_.-]+)(?:\[[^]]*\])?==([^;\s]+).*", requirement).groups()
        pins[name] = version
    for package, version in PINNED.items():
        pinned = pins["autogluon.tabular"] if package == "autogluon.core" else pins[package]
        assert version == pinned == importlib.metadata.version(package), package


def test_the_input_example_has_a_value_in_every_column_that_has_one():
    features = pd.DataFrame({"x": range(20), "rating": [None] * 17 + ["PG", None, "R"], "empty": [None] * 20})

    example = example_rows(features)

    assert list(example.index) == [0, 1, 2, 3, 4, 17]  # the first five, and the first row with a rating
    assert example["rating"].notna().any() and example["empty"].isna().all()
