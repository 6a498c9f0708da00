"""Column types: what each column holds (numeric, boolean, datetime, text, categorical) and how it is cast.

Profiling infers a type per column from its values; training, scoring and drift monitoring then cast every table
(training rows, holdout rows, live rows) the same way with `cast_columns`, so that values compare one for one.
Class labels are normalised here too (`label_strings`): 1, 1.0 and '1' are one class.
"""

import warnings

import numpy as np
import pandas as pd

TRUE_TOKENS = {"true", "yes", "y", "t", "1"}
FALSE_TOKENS = {"false", "no", "n", "f", "0"}
INFERENCE_SAMPLE_ROWS = 2000
TYPE_SHARE = 0.95
# A mostly-unique string column is free text (a title, a comment), featurised as words, when at least this share of its
# values hold whitespace; identifiers ('C-10293', UUIDs, hashes) hold none. Movie titles average two or three words,
# under AutoGluon's own three-word bar for text, so without this they were dropped as high-cardinality categories.
TEXT_SPACE_SHARE = 0.5


def infer_type(series: pd.Series, seed: int) -> str:
    """The type of a column's values: boolean, numeric, datetime, text or categorical."""
    values = series.dropna()
    if series.dtype == bool or _is_boolean_like(values):
        return "boolean"
    if pd.api.types.is_numeric_dtype(series):
        return "numeric"
    if pd.api.types.is_datetime64_any_dtype(series):
        return "datetime"
    if values.empty:
        return "categorical"
    if len(values) > INFERENCE_SAMPLE_ROWS:
        values = values.sample(INFERENCE_SAMPLE_ROWS, random_state=seed)
    texts = values.astype(str).str.strip()
    if pd.to_numeric(texts, errors="coerce").notna().mean() >= TYPE_SHARE:
        return "numeric"
    dates = to_utc_naive(texts.where(texts.str.contains(r"\d")))
    if dates.notna().mean() >= TYPE_SHARE:
        return "datetime"
    mostly_unique = series.nunique(dropna=True) > 0.5 * series.notna().sum()
    if mostly_unique and (texts.str.len().mean() > 30 or texts.str.split().str.len().mean() >= 4
                          or texts.str.contains(r"\s").mean() >= TEXT_SPACE_SHARE):
        return "text"
    return "categorical"


def _is_boolean_like(values: pd.Series) -> bool:
    distinct = pd.Series(values.unique())
    if len(distinct) > 10:  # two values, a few spellings at most (Yes/yes/YES); skip the string conversion
        return False
    tokens = set(value_tokens(distinct))
    return len(tokens) == 2 and tokens <= TRUE_TOKENS | FALSE_TOKENS


def value_tokens(values: pd.Series) -> pd.Series:
    """Non-null values as lower-case strings, whole-number floats without '.0'."""
    return _whole_floats_as_ints(values.dropna()).astype(str).str.strip().str.lower()


def boolean_tokens() -> dict[str, list[str]]:
    """The spellings training reads as true and as false, for the served model to read its rows the same way."""
    return {"true": sorted(TRUE_TOKENS), "false": sorted(FALSE_TOKENS)}


def cast_columns(frame: pd.DataFrame, types: dict[str, str]) -> pd.DataFrame:
    """Columns cast as training cast them (`types`: column → inferred type), so live rows compare with
    training rows value for value."""
    return pd.DataFrame({name: _cast_column(frame[name], kind) for name, kind in types.items()}, index=frame.index)


def _cast_column(series: pd.Series, inferred_type: str) -> pd.Series:
    if inferred_type == "numeric":
        numbers = pd.to_numeric(series, errors="coerce")
        # narrow types (float32, int8: what Polars, Spark and numpy write) widen, so the served signature accepts the
        # float64 and int64 that a CSV of the same table reads as
        if pd.api.types.is_float_dtype(numbers):
            return numbers.astype("float64")
        if pd.api.types.is_integer_dtype(numbers):
            return numbers.astype("int64")
        return numbers
    if inferred_type == "boolean":
        tokens = value_tokens(series)
        words = tokens.map(lambda token: "true" if token in TRUE_TOKENS else "false" if token in FALSE_TOKENS else None)
        return pd.Series(pd.Categorical(words.reindex(series.index), categories=["false", "true"]), index=series.index)
    if inferred_type == "datetime":
        return to_utc_naive(series)
    if isinstance(series.dtype, pd.CategoricalDtype):  # already cast: its gaps cannot take the text "nan"
        series = series.astype(object)
    as_strings = series.where(series.isna(), series.astype(str))
    return as_strings.astype("category") if inferred_type == "categorical" else as_strings.astype(object)


def to_utc_naive(values: pd.Series) -> pd.Series:
    """Timestamps as naive UTC: offsets (`+00:00`, `Z`, `-05:00`) applied, naive values taken as UTC, unreadable values
    missing. A time-zone-aware column breaks MLflow's signature, and two offsets in one column break pandas."""
    if pd.api.types.is_datetime64_any_dtype(values) and getattr(values.dtype, "tz", None) is None:
        return values.astype("datetime64[ns]")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        parsed = pd.to_datetime(values, format="mixed", errors="coerce", utc=True)
    return parsed.dt.tz_localize(None).astype("datetime64[ns]")


def class_counts(labels: pd.Series) -> dict[str, int]:
    """Rows per class label, most frequent first (ties by label)."""
    return ordered_counts(labels.value_counts().items())


def ordered_counts(counts) -> dict[str, int]:
    """(label, rows) pairs as `class_counts` gives them: most frequent first, ties by label."""
    ordered = sorted(counts, key=lambda item: (-item[1], item[0]))
    return {str(label): int(count) for label, count in ordered}


def label_strings(values: pd.Series) -> pd.Series:
    """Class labels (non-null) as strings: 1, 1.0 and '1' all become '1'."""
    return _whole_floats_as_ints(values).astype(str)


def _whole_floats_as_ints(values: pd.Series) -> pd.Series:
    """Integers that pandas read as floats (a column with NaN elsewhere) back to int64, for labels."""
    if pd.api.types.is_float_dtype(values) and values.notna().all() and is_integer_valued(values):
        return values.astype("int64")
    return values


def is_integer_valued(numbers: pd.Series) -> bool:
    """Whether every present number is finite and whole."""
    finite = numbers.dropna().to_numpy(dtype=float)
    return bool(np.all(np.isfinite(finite)) and np.all(np.mod(finite, 1) == 0))
