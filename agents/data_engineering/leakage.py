"""Target-leak detection: a column that alone predicts the target almost perfectly is a leak suspect.

A re-encoded target (a `churn_flag` beside `churned`, a status set after the outcome) gives a model a perfect
holdout score and no use in production. Each candidate column is scored on its own, out of fold, on a stratified
sample; profiling drops the ones at or above `LEAK_AUC` unless the user keeps them.
"""

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold
from sklearn.tree import DecisionTreeClassifier

from poise.agents.data_engineering.column_types import TRUE_TOKENS, label_strings, value_tokens

LEAK_SAMPLE_ROWS = 20_000
LEAK_FOLDS = 3
# A column whose out-of-fold single-column ROC-AUC reaches this is a leak suspect. A re-encoded target
# scores 1.0; genuine strong features of the shipped tables score up to 0.9985 (shuttle_2_vs_5 `A1`:
# 0.9887, 0.9887, 0.9985 by fold seed; segment0 `Hue_mean` 0.986-0.990), so a 0.99 bar dropped a real
# feature on one seed out of three and cost that model 0.024 macro-F1.
LEAK_AUC = 0.999
MISSING_CATEGORY = "\x00missing"


def leak_sample(df: pd.DataFrame, target: str, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A stratified sample (about LEAK_SAMPLE_ROWS rows) and integer class codes for it."""
    labeled = df[df[target].notna()].reset_index(drop=True)
    labels = label_strings(labeled[target])
    if len(labeled) > LEAK_SAMPLE_ROWS:
        labels = labels.groupby(labels).sample(frac=LEAK_SAMPLE_ROWS / len(labeled), random_state=seed)
    counts = labels.value_counts()
    labels = labels[labels.isin(counts.index[counts >= LEAK_FOLDS])]  # stratified folds need 3 per class
    sample = labeled.loc[labels.index].reset_index(drop=True)
    _, class_codes = np.unique(labels.to_numpy(), return_inverse=True)
    return sample, class_codes


def single_column_auc(series: pd.Series, inferred_type: str, class_codes: np.ndarray, seed: int) -> float | None:
    """Out-of-fold ROC-AUC of predicting the target from this one column (None for text/dates)."""
    n_classes = int(class_codes.max()) + 1 if len(class_codes) else 0
    if n_classes < 2 or inferred_type not in ("numeric", "boolean", "categorical"):
        return None
    splitter = StratifiedKFold(LEAK_FOLDS, shuffle=True, random_state=seed)
    folds = list(splitter.split(np.zeros(len(class_codes)), class_codes))
    if inferred_type == "categorical":
        categories = series.where(series.notna(), MISSING_CATEGORY).astype(str).to_numpy()
        proba = _out_of_fold_class_rates(categories, class_codes, n_classes, folds)
    else:
        if inferred_type == "boolean":
            numbers = value_tokens(series).isin(TRUE_TOKENS).astype(float).reindex(series.index)
        else:
            numbers = pd.to_numeric(series, errors="coerce").astype(float).replace([np.inf, -np.inf], np.nan)
        present = numbers.dropna()
        sentinel = present.min() - (present.max() - present.min()) - 1 if len(present) else 0.0
        feature = numbers.fillna(sentinel).to_numpy().reshape(-1, 1)
        proba = _out_of_fold_tree_proba(feature, class_codes, n_classes, folds, seed)
    if n_classes == 2:
        auc = roc_auc_score(class_codes, proba[:, 1])
    else:
        auc = roc_auc_score(class_codes, proba, multi_class="ovr", average="macro", labels=list(range(n_classes)))
    return round(float(auc), 4)


def _out_of_fold_tree_proba(
    feature: np.ndarray, class_codes: np.ndarray, n_classes: int, folds: list, seed: int
) -> np.ndarray:
    """Class probabilities of a depth-3 tree on one column, each row predicted by the folds it is not in.

    What `cross_val_predict` computes, without its per-call setup (a third of a wide table's profiling time)."""
    proba = np.zeros((len(class_codes), n_classes))
    for train_rows, test_rows in folds:
        tree = DecisionTreeClassifier(max_depth=3, random_state=seed).fit(feature[train_rows], class_codes[train_rows])
        proba[np.ix_(test_rows, tree.classes_)] = tree.predict_proba(feature[test_rows])
    return proba


def _out_of_fold_class_rates(
    categories: np.ndarray, class_codes: np.ndarray, n_classes: int, folds: list
) -> np.ndarray:
    """Target-mean encoding per class, each row encoded by the folds it is not in."""
    one_hot = np.eye(n_classes)[class_codes]
    proba = np.zeros((len(class_codes), n_classes))
    for train_rows, test_rows in folds:
        prior = one_hot[train_rows].mean(axis=0)
        rates = pd.DataFrame(one_hot[train_rows]).groupby(categories[train_rows]).mean()
        encoded = rates.reindex(categories[test_rows]).to_numpy()
        unseen = np.isnan(encoded).any(axis=1)
        encoded[unseen] = prior
        proba[test_rows] = encoded
    return proba
