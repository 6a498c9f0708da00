"""Class overlap: how much of each class, above all the minority, lies where another class dominates.

Imbalance-aware fitting (class weights, resampling) helps when the minority is rare but sits apart from the
majority: a plain model under-weights it, and reweighting moves the boundary towards it. When the minority lies among
majority rows, no boundary separates them: reweighting only trades one kind of error for the other, which the
decision threshold does directly, and the stated error costs are what should set it. This module measures which case
a table is in, so the data card can say so before any model is fitted.

The measure is an instance-hardness one, k-Disagreeing Neighbours (kDN; Smith, Martinez and Giraud-Carrier, 2014):
for each row, the share of its k nearest neighbours that belong to another class, on the profile's features encoded
for distances (`encode_for_distances`). A big table is sampled (`sample_rows`) with its rare classes kept whole;
each neighbour's vote then counts the table rows it stands for, so a minority kept whole among a thinned majority
still sees the majority's true weight. That leaves a small bias: on a generated 60,000-row table (1 % minority) the
sample's minority share in majority regions was 0.72-0.75 over four seeds against 0.76 on every row (0.63 with
unweighted votes).
"""

import numpy as np
import pandas as pd
from sklearn.neighbors import NearestNeighbors

from poise.agents.data_engineering.column_types import cast_columns, label_strings
from poise.agents.data_engineering.profiling import feature_types

# k = 5: the usual kDN neighbourhood (Smith et al. 2014), odd so that two classes cannot tie, and small enough to be
# measured on a class of 6 rows; a class too small for it is measured with k = its rows - 1 (`class_figures`).
DEFAULT_K = 5
# A row "lies in another class's region" when more than half of its neighbour votes disagree with its label
# (3 of 5 neighbours at k = 5).
MOSTLY = 0.5
# A sampled table keeps at least this many rows of every class (all of a smaller class), the rest in proportion: a
# class's share of rows in other-class regions is then known to about +-1 point (binomial s.e. <= 1.1 %).
MIN_SAMPLED_ROWS_PER_CLASS = 2_000
# Categorical columns: one-hot of the levels held by at least this share of the rows, at most this many levels;
# rarer levels and gaps become all zeros.
MIN_LEVEL_SHARE = 0.01
MAX_LEVELS = 20
# Level cut-offs on the worst class's share of rows in other-class regions. Chosen on a first protocol of
# `benchmarks/overlap.py` (19 tables, seed 0, one 25 % test split): up to .375 (KEEL) class weights never lost, from
# .55 on they gained -0.016 in the median; no table fell between, so the band between is a guard band. Checked
# unchanged on the benchmark's cross-fitted protocol (24 tables, 5 folds, seed 0; README): at "high" the weights
# added at most 0.01 macro-F1 beyond a calibrated threshold on 13 of 14 tables (NCbirths +0.013, interval -0.008 to
# +0.034), at "low" imbalance-aware fitting never lost more than 0.01 (9 of 9); Spearman's rho of the overlap with
# the threshold's gain +0.77 and with the weights' gain beyond it -0.62.
LOW_BELOW = 0.40
HIGH_FROM = 0.50

MEASURE = ("k-Disagreeing Neighbours (kDN): for each row, the share of its k nearest neighbours that belong to "
           "another class, on the features encoded for distances (numbers and dates robustly scaled, frequent "
           "categories one-hot, booleans as 0/1; text and dropped columns left out)")


def class_overlap(frame: pd.DataFrame, target: str, profile: dict, *, k: int = DEFAULT_K, max_rows: int = 20_000,
                  seed: int = 0) -> dict:
    """How much each class lies in regions dominated by other classes (JSON-able), with a sentence for the data card.

    `frame` holds the target and the profile's features, as read or as `splitting` types them; rows without a target
    are left out. Tables over `max_rows` rows are sampled with `seed`."""
    labelled = frame[frame[target].notna()].reset_index(drop=True)
    labels = label_strings(labelled[target])
    positions, class_weights = sample_rows(labels, max_rows, seed)
    features = encode_for_distances(labelled.iloc[positions], profile)
    labels = labels.iloc[positions].to_numpy()
    minority, majority = profile["target"]["minority_class"], profile["target"]["majority_class"]
    base = {"measure": MEASURE, "k": k, "rows_used": len(positions), "sampled": len(positions) < len(labelled),
            "features_used": distance_features(profile), "minority_class": minority, "majority_class": majority}
    if features.shape[1] == 0:
        return base | {"classes": {}, "minority_in_majority_regions": None, "worst_class": None, "level": None,
                       "sentence": "Class overlap could not be measured: no feature can be compared by distance "
                                   "(the table has only text or dropped columns)."}
    votes = neighbour_votes(features, labels, class_weights, k)
    classes = {label: class_figures(votes, labels, label) for label in pd.unique(labels)}
    measured = {label: figures for label, figures in classes.items() if figures["mean_kdn"] is not None}
    worst = max(measured, key=lambda label: measured[label]["share_in_other_class_regions"], default=None)
    share = measured[worst]["share_in_other_class_regions"] if worst is not None else None
    level = overlap_level(share)
    minority_share = share_in_majority_regions(votes, labels, minority, majority) if minority in classes else None
    return base | {"classes": classes, "minority_in_majority_regions": minority_share, "worst_class": worst,
                   "level": level, "sentence": overlap_sentence(level, worst, share)}


def distance_features(profile: dict) -> list[str]:
    """The profile's features that distances use: all but free text."""
    return [name for name, kind in feature_types(profile).items() if kind != "text"]


def sample_rows(labels: pd.Series, max_rows: int, seed: int) -> tuple[np.ndarray, dict[str, float]]:
    """Positions of the rows to measure (all of them up to `max_rows`) and, per class, the table rows each kept row
    stands for. Classes smaller than `MIN_SAMPLED_ROWS_PER_CLASS` are kept whole, the others sampled in proportion."""
    counts = labels.value_counts()
    if len(labels) <= max_rows:
        return np.arange(len(labels)), {label: 1.0 for label in counts.index}
    quotas = class_quotas(counts, max_rows)
    rng = np.random.default_rng(seed)
    values = labels.to_numpy()
    kept = [rng.choice(np.flatnonzero(values == label), quota, replace=False) for label, quota in quotas.items()]
    return np.sort(np.concatenate(kept)), {label: counts[label] / quota for label, quota in quotas.items()}


def class_quotas(counts: pd.Series, max_rows: int) -> dict[str, int]:
    """Rows to keep per class, `max_rows` in all: small classes whole (up to a floor), the rest in proportion."""
    floor = min(MIN_SAMPLED_ROWS_PER_CLASS, max_rows // (2 * len(counts)))
    small = counts[counts * max_rows / counts.sum() < floor]
    quotas = {label: int(min(count, floor)) for label, count in small.items()}
    large = counts.drop(small.index)
    budget = max_rows - sum(quotas.values())
    quotas |= {label: max(1, int(budget * count / large.sum())) for label, count in large.items()}
    return quotas


def encode_for_distances(frame: pd.DataFrame, profile: dict) -> np.ndarray:
    """The profile's features as numbers on comparable scales: numbers and dates robustly scaled (`_scaled`; two
    typical rows differ by about 1), booleans 0/1 (gaps 0.5), frequent categories one-hot scaled by 1/sqrt(2) so that
    two levels differ by 1; text and columns the profile dropped are left out."""
    types = {name: feature_types(profile)[name] for name in distance_features(profile)}
    typed = cast_columns(frame, types)
    blocks = [_encode_column(typed[name], kind) for name, kind in types.items()]
    return np.hstack(blocks) if blocks else np.empty((len(frame), 0))


def _encode_column(series: pd.Series, kind: str) -> np.ndarray:
    if kind == "numeric":
        return _scaled(series.astype("float64"))
    if kind == "datetime":
        return _scaled((series - pd.Timestamp(0)).dt.total_seconds())
    if kind == "boolean":
        return series.map({"true": 1.0, "false": 0.0}).astype("float64").fillna(0.5).to_numpy()[:, None]
    values = series.astype(object)
    shares = values.value_counts(normalize=True)
    levels = shares[shares >= MIN_LEVEL_SHARE].index[:MAX_LEVELS]
    return np.column_stack([(values == level).to_numpy(dtype=float) for level in levels] or
                           [np.zeros(len(values))]) / np.sqrt(2)


def _scaled(numbers: pd.Series) -> np.ndarray:
    """Median-imputed, robustly scaled ((x - median) / IQR; the standard deviation when the IQR is 0, as in a column
    of mostly zeros), then tails compressed by a signed log1p: a far outlier stays far but cannot dominate every
    distance, while gaps between clusters stay gaps (percentile ranks would close them)."""
    filled = numbers.fillna(numbers.median()).fillna(0.0)
    spread = filled.quantile(0.75) - filled.quantile(0.25) or filled.std() or 1.0
    centred = ((filled - filled.median()) / spread).to_numpy()
    return (np.sign(centred) * np.log1p(np.abs(centred)))[:, None]


def neighbour_votes(features: np.ndarray, labels: np.ndarray, class_weights: dict[str, float], k: int) -> dict:
    """Each row's k nearest other rows (itself excluded, duplicates included), their labels and vote weights."""
    k_max = min(k, len(labels) - 1)
    index = NearestNeighbors(n_neighbors=k_max).fit(features)
    neighbours = index.kneighbors(return_distance=False)
    weights = np.array([class_weights[label] for label in labels])
    return {"labels": labels[neighbours], "weights": weights[neighbours], "k": k_max}


def class_figures(votes: dict, labels: np.ndarray, label: str) -> dict:
    """One class's rows, the k used for it, its mean kDN and the share of its rows with kDN > `MOSTLY` (None when
    the class has a single row)."""
    rows, k, neighbour_labels, weights = _class_votes(votes, labels, label)
    if k < 1:
        return {"rows": rows, "k": k, "mean_kdn": None, "share_in_other_class_regions": None}
    kdn = (weights * (neighbour_labels != label)).sum(axis=1) / weights.sum(axis=1)
    return {"rows": rows, "k": k, "mean_kdn": round(float(kdn.mean()), 4),
            "share_in_other_class_regions": round(float((kdn > MOSTLY).mean()), 4)}


def share_in_majority_regions(votes: dict, labels: np.ndarray, label: str, majority: str) -> float | None:
    """The share of a class's rows whose neighbour votes are mostly the majority class's."""
    _, k, neighbour_labels, weights = _class_votes(votes, labels, label)
    if k < 1:
        return None
    majority_share = (weights * (neighbour_labels == majority)).sum(axis=1) / weights.sum(axis=1)
    return round(float((majority_share > MOSTLY).mean()), 4)


def _class_votes(votes: dict, labels: np.ndarray, label: str) -> tuple[int, int, np.ndarray, np.ndarray]:
    """A class's rows, its k (its rows - 1 when it has fewer than k + 1: a row cannot have more neighbours of its
    own class than that), and its rows' neighbour labels and vote weights."""
    rows = labels == label
    k = min(votes["k"], int(rows.sum()) - 1)
    return int(rows.sum()), k, votes["labels"][rows, :k], votes["weights"][rows, :k]


def overlap_level(share: float | None) -> str | None:
    """"low", "moderate" or "high" from the worst class's share of rows in other-class regions."""
    if share is None:
        return None
    return "low" if share < LOW_BELOW else "high" if share >= HIGH_FROM else "moderate"


def overlap_sentence(level: str | None, worst: str | None, share: float | None) -> str:
    """One plain sentence for the data card."""
    if level is None:
        return "Class overlap could not be measured: no class has enough rows to have neighbours of its own."
    where = f"{share:.0%} of class {worst!r} lies among rows mostly of other classes"
    if level == "high":
        return (f"{where}: the classes overlap heavily, so reweighting is unlikely to help beyond what moving the "
                f"decision threshold does; the decision threshold and the stated error costs are the real levers.")
    if level == "low":
        return f"{where}: the classes are largely apart, so imbalance-aware fitting can help the minority class."
    return (f"{where}: the classes overlap in part, so imbalance-aware fitting may help somewhat, but the decision "
            f"threshold and the stated error costs matter as much.")
