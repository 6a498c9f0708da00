"""Population stability of each column over every row of a window bigger than its sample.

A window bigger than its sample has Evidently's tests run on the sample (`detection`: 5,000 rows a side). What the
sample cannot give is each column's distribution over *every* row; this gives it, as the population stability
index (PSI) of each column against the reference, from bin counts over every row: made in the streaming pass that
draws the sample (`large_tables.window_sample`) for a window read out of core, from the table itself otherwise.
Numbers fall in the reference's deciles, categories in its most frequent levels plus "other", and missing values in
a bin of their own. PSI ≥ 0.2 is the usual line for a shifted column (0.1–0.2: moderate), a size of change rather
than a test, which is what a count over millions of rows needs (every test rejects there). Such a window's columns
are judged by it (`detection.judged_on_every_row`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

DECILES = np.linspace(0.1, 0.9, 9)
MAX_LEVELS = 20  # a categorical column's most frequent reference levels; the rest count as "other"
PSI_SHIFTED = 0.2
PSI_MODERATE = 0.1
SHARE_FLOOR = 1e-4  # an empty bin's share, so that PSI stays finite


def bins(reference: pd.DataFrame, features: list[str]) -> dict[str, dict[str, Any]]:
    """Per feature the bins its values fall in: `{"edges": [...]}` for numbers and booleans (bins: missing,
    (-inf, e0], (e0, e1], ..., (e_last, inf)), `{"levels": [...]}` for text and categories (bins: missing, each
    level, other). Other types (dates) are left out."""
    found = {}
    for column in features:
        values = reference[column]
        if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            numbers = pd.to_numeric(values, errors="coerce").astype("float64").dropna()
            edges = np.unique(np.quantile(numbers, DECILES)) if len(numbers) else np.array([])
            found[column] = {"edges": [float(edge) for edge in edges]}
        elif pd.api.types.is_string_dtype(values) or isinstance(values.dtype, pd.CategoricalDtype) \
                or values.dtype == object:
            levels = values.dropna().astype(str).value_counts().index[:MAX_LEVELS]
            found[column] = {"levels": [str(level) for level in levels]}
    return found


def counts(frame: pd.DataFrame, spec: dict[str, dict[str, Any]]) -> dict[str, list[int]]:
    """Rows per bin of each column of an in-memory frame (the reference), as `large_tables` counts a window."""
    found = {}
    for column, how in spec.items():
        if "edges" in how:
            values = pd.to_numeric(frame[column], errors="coerce").astype("float64")
            missing = values.isna()
            positions = np.searchsorted(how["edges"], values[~missing].to_numpy(), side="left")
            found[column] = [int(missing.sum()), *np.bincount(positions, minlength=len(how["edges"]) + 1).tolist()]
        else:
            values = frame[column]
            missing = values.isna()
            text = values[~missing].astype(str)
            level_counts = [int((text == level).sum()) for level in how["levels"]]
            found[column] = [int(missing.sum()), *level_counts, int(len(text) - sum(level_counts))]
    return found


def psi(expected: list[int], actual: list[int]) -> float:
    """Population stability index of `actual` bin counts against `expected` ones."""
    e, a = np.asarray(expected, dtype=float), np.asarray(actual, dtype=float)
    e = np.maximum(e / max(e.sum(), 1.0), SHARE_FLOOR)
    a = np.maximum(a / max(a.sum(), 1.0), SHARE_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


def stability(reference: pd.DataFrame, spec: dict[str, dict[str, Any]],
              window_counts: dict[str, list[int]]) -> dict[str, Any]:
    """Each column's PSI over every window row against the reference, and which columns shifted."""
    expected = counts(reference, spec)
    columns = {column: round(psi(expected[column], window_counts[column]), 6) for column in spec}
    shifted = sorted((column for column, value in columns.items() if value >= PSI_SHIFTED),
                     key=lambda column: -columns[column])
    return {"method": "population stability index over every row, against the reference",
            "rule": f"a column shifted when PSI >= {PSI_SHIFTED} (moderate from {PSI_MODERATE})",
            "psi": columns, "shifted": shifted}
