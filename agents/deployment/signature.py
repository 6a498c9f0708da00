"""The model's input signature: how a registered version's example is built, and how input is made to match it.

MLflow types a model's signature from its input example, and a client sends JSON or CSV whose values
rarely have the exact types the model was trained with. So at registration the training features are
put in the form a client sends (`serving_frame`, `example_rows`); at prediction time any table or set
of JSON records is selected and cast to the signature (`conform_to_signature`, `conform_records`),
naming a missing column or a bad value instead of letting it become NaN or an MLflow error that quotes
the rows. Every prediction path (the API, batch files, the drift monitor, the gate) goes through here.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException

from poise.agents.data_engineering.column_types import to_utc_naive
from poise.agents.errors import DataError


def serving_frame(features: pd.DataFrame) -> pd.DataFrame:
    """Features as a client sends them: numbers of every width as float64 (so the signature accepts
    integers, float32 and float64 alike), categories as plain strings (MLflow's schema has no category type)."""
    frame = features.copy()
    for column in frame.select_dtypes(["integer", "floating"]).columns:
        frame[column] = frame[column].astype("float64")
    for column in frame.select_dtypes("category").columns:
        frame[column] = frame[column].astype(object).where(frame[column].notna(), None)
    return frame


def example_rows(features: pd.DataFrame, rows: int = 5) -> pd.DataFrame:
    """The first `rows` rows, plus for each column empty in all of them the first row where it has a value: MLflow types
    a signature from its input example, and a column with no value there (a mostly-missing category) becomes `Any`."""
    chosen = list(features.index[:rows])
    for column in features.columns:
        present = features[column].notna()
        if not present.loc[chosen].any() and present.any():
            chosen.append(present.idxmax())
    return features.loc[chosen]

NUMERIC_TYPES = ("double", "float", "long", "integer")


def _type_name(spec) -> str:
    """A signature column's type name; "any" for MLflow's `Any` (no name), which a model logged with an empty
    example column has."""
    return getattr(spec.type, "name", "any")


def conform_to_signature(table: pd.DataFrame, input_schema) -> pd.DataFrame:
    """Select and cast the model's input columns from a raw table, naming what is missing.

    Columns that already have the right kind of values (numbers in numeric columns, plain strings
    or gaps in string columns) take a vectorised path; anything else is parsed value by value, so
    bad values are named, never silently turned into NaN."""
    if input_schema is None:  # a model logged without signature takes the table as it is
        return table
    names = input_schema.input_names()
    missing = [name for name in names if name not in table.columns]
    if missing:
        raise DataError(f"input lacks the model's columns: {', '.join(map(repr, missing[:10]))}")
    columns = {}
    for spec in input_schema.inputs:
        values = table[spec.name]
        kind = _type_name(spec)
        if kind == "any":
            columns[spec.name] = values
        elif kind in NUMERIC_TYPES:
            numbers = _numbers(spec.name, values)
            if kind in ("double", "float"):
                columns[spec.name] = numbers
            elif np.isnan(numbers).any():
                raise DataError(f"column '{spec.name}' must be whole numbers without gaps for this model")
            else:
                columns[spec.name] = numbers.astype("int64" if kind == "long" else "int32")
        elif kind == "datetime":
            columns[spec.name] = to_utc_naive(values)
        elif kind == "boolean":
            columns[spec.name] = values.astype("boolean")
        else:
            columns[spec.name] = _strings(values)
    return pd.DataFrame(columns, index=table.index)


def conform_records(records: list[dict[str, Any]], input_schema) -> pd.DataFrame | None:
    """`conform_to_signature(pd.DataFrame(records), input_schema)`, built straight from JSON records when
    every value is plain (numbers or null in numeric columns, text or null in string columns); None
    otherwise, and for models without a signature or with integer, date or boolean inputs."""
    if input_schema is None:
        return None
    present = set().union(*records)
    columns = {}
    for spec in input_schema.inputs:
        if spec.name not in present:
            return None  # the frame path names what is missing
        values = [record.get(spec.name) for record in records]
        kind = spec.type.name
        if kind in ("double", "float"):
            if not all(value is None or type(value) is float or (type(value) is int and -2**53 < value < 2**53)
                       for value in values):
                return None
            columns[spec.name] = np.array([np.nan if value is None else value for value in values], dtype="float64")
            if np.isinf(columns[spec.name]).any():
                return None
        elif kind == "string":
            if not all(value is None or type(value) is str for value in values):
                return None
            columns[spec.name] = np.empty(len(values), dtype=object)
            columns[spec.name][:] = values
        else:
            return None
    return pd.DataFrame(columns, index=pd.RangeIndex(len(records)))


def predict_table(model, table: pd.DataFrame) -> pd.DataFrame:
    """A loaded pyfunc model's predictions for a raw table, conformed to its signature first."""
    schema = model.metadata.get_input_schema()
    features = conform_to_signature(table, schema)
    try:
        return model.predict(features)
    except MlflowException:  # MLflow's message quotes the data rows themselves: name the columns and types instead
        raise DataError(f"input does not match the model's schema: {schema_mismatch(features, schema)}") from None


def schema_mismatch(features: pd.DataFrame, input_schema) -> str:
    """Which input columns have a type the signature does not take, as `column: expected T, got dtype`."""
    problems = []
    for spec in input_schema.inputs if input_schema is not None else []:
        if spec.name in features:
            expected, dtype = _type_name(spec), features[spec.name].dtype
            fits = {"double": dtype == "float64", "float": dtype == "float32", "long": dtype == "int64",
                    "integer": dtype == "int32", "datetime": str(dtype) == "datetime64[ns]",
                    "boolean": pd.api.types.is_bool_dtype(dtype), "string": dtype == object}.get(expected, True)
            if not fits:
                problems.append(f"{spec.name!r}: expected {expected}, got {dtype}")
    return "; ".join(problems[:10]) or "the model rejected the conformed columns (no column type differs)"


def _numbers(name: str, values: pd.Series) -> np.ndarray:
    """A numeric column as float64, refusing values that are present but not finite numbers (no silent NaN)."""
    if isinstance(values.dtype, np.dtype) and values.dtype.kind in "biuf":  # numbers already (booleans as 0/1)
        numbers = values.to_numpy(dtype="float64")
        if not np.isinf(numbers).any():
            return numbers
    parsed = pd.to_numeric(values.where(~values.map(lambda v: isinstance(v, (list, dict))), "x"),
                           errors="coerce").astype("float64")
    bad = values.notna() & ~np.isfinite(parsed.fillna(0.0).to_numpy()) | (values.notna() & parsed.isna())
    if bad.any():
        example = values[bad].iloc[0]
        raise DataError(f"column '{name}' needs numbers; got {str(example)[:40]!r} in {int(bad.sum())} row(s)")
    return parsed.to_numpy()


def _strings(values: pd.Series) -> np.ndarray:
    """A string column as objects: text stays text, gaps become None, anything else its string form."""
    if values.dtype == object:
        items = values.tolist()
        for i, item in enumerate(items):
            if type(item) is not str:
                if item is None or (type(item) is float and math.isnan(item)):
                    items[i] = None
                else:
                    break
        else:
            out = np.empty(len(items), dtype=object)
            out[:] = items
            return out
    return values.astype("string").astype(object).where(values.notna(), None).to_numpy()
