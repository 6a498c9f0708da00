"""Inputs conformed to a model's signature: numbers stay numbers, bad values are named, never silently NaN."""

import pandas as pd
import pytest
from mlflow.types import ColSpec, Schema

from agents.deployment import conform_to_signature
from agents.errors import DataError

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
