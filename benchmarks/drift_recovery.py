"""Does Poise notice drift in time, stay quiet on clean data, and recover what drift cost?

Streams are built from real imbalanced tables shipped by installed packages
(`pipelines/datasets.py`). Per table, 30 % of the rows train v1 with `poise train`; the other
70 % are live traffic, cut into windows of `--window` rows, checked with the real monitor
graph (`pipelines.monitoring.runner.check_now`) as batch files:

- clean stretch: `--clean` windows drawn from the first half of the untouched traffic, labelled,
  checked with action "none" (a false alarm is any decision other than no_drift). Drifted windows
  come from that half too; the second half only provides the evaluation rows, because the
  labelled rows of clean windows join the monitor's baseline, on which a recalibration tunes
  its threshold;
- three drift scenarios, each starting again from v1 as champion, each a run of drifted
  windows checked with action "auto" until a check acts (at most `--max-windows`):
  * covariate: the most important feature's unit changes (× 3), labels follow the rows;
  * prior: positives become 3× as frequent (rows drawn without replacement: p(x|y) unchanged),
    windows unlabelled, so the prior must be estimated from predictions;
  * concept: a new positive pattern — negatives in the top decile of the second most important
    feature become positive — labelled; the features do not move.

Reported per scenario: detection delay (0 = caught in the first drifted window), the action and
whether its challenger was promoted, and macro-F1 on a fresh drifted evaluation window of
v1 before drift (on a clean window), v1 during drift, the champion after the check, and an
oracle: AutoGluon trained by `poise train` on the training rows transformed by the same drift,
at the same budget. Target: recovered ≥ 0.97 × oracle.

Check cost: seconds of `check_now` (action "none") on a synthetic 50-column table
(scikit-learn `make_classification`, 10 % positives) at 10k, 100k and 1M rows, each size
twice (the first check of a reference also calibrates the domain classifier's threshold).

Run from the repository root:
    .venv/bin/python benchmarks/drift_recovery.py [--tables page_blocks0,satimage,river_shuttle]
        [--budget 20] [--clean 20] [--window 500] [--seed 0] [--sizes 10000,100000,1000000]
        [--out benchmarks/results/drift_recovery.json]
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from datetime import UTC, datetime  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import f1_score  # noqa: E402

from poise.agents.deployment.signature import predict_table  # noqa: E402
from poise.pipelines import runner  # noqa: E402
from poise.pipelines.datasets import TARGET, load  # noqa: E402
from poise.pipelines.monitoring.runner import check_now  # noqa: E402
from poise.pipelines.settings import Settings  # noqa: E402
from poise.registry import tracking  # noqa: E402

SCENARIOS = ("covariate", "prior", "concept")


def macro_f1(settings: Settings, name: str, version: str, rows: pd.DataFrame) -> float:
    output = predict_table(tracking.load_model(name, version), rows.drop(columns=[TARGET]))
    return float(f1_score(rows[TARGET].astype(str), output["label"].astype(str), average="macro"))


def importance_order(settings: Settings, name: str) -> list[str]:
    client = tracking.configure(settings.tracking_uri, settings.registry_uri)
    meta = tracking.load_reference(client, name, "1")[2]
    return sorted(meta["feature_importance"], key=meta["feature_importance"].get, reverse=True)


def drifted(scenario: str, rows: pd.DataFrame, features: list[str], positive: str, negative: str,
            cut: float, n: int, seed: int) -> pd.DataFrame:
    """`n` rows of `rows` under the scenario's drift (fewer when a prior shift runs out of positives)."""
    rows = rows.copy()
    if scenario == "covariate":
        rows[features[0]] = rows[features[0]] * 3.0
        return rows.sample(min(n, len(rows)), random_state=seed)
    if scenario == "concept":
        flip = (rows[TARGET] == negative) & (rows[features[1]] >= cut)
        rows.loc[flip, TARGET] = positive
        return rows.sample(min(n, len(rows)), random_state=seed)
    positives, negatives = rows[rows[TARGET] == positive], rows[rows[TARGET] == negative]
    share = min(0.5, 3 * len(positives) / len(rows))
    k = min(len(positives), int(share * n))
    k_neg = min(len(negatives), int(k * (1 - share) / share))
    return pd.concat([positives.sample(k, random_state=seed), negatives.sample(k_neg, random_state=seed)]) \
        .sample(frac=1.0, random_state=seed)


def reset_champion(settings: Settings, name: str) -> None:
    client = tracking.configure(settings.tracking_uri, settings.registry_uri)
    client.set_registered_model_alias(name, tracking.CHAMPION, "1")


def run_table(table: str, args, work: Path) -> dict:
    frame, meta = load(table)
    seed, offset = args.seed, 10_000 * args.seed  # seed 0: the published figures
    frame = frame.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    positive = meta["minority"]
    negative = next(c for c in frame[TARGET].unique() if c != positive)
    settings = Settings(home=work / table / "home", seed=seed)
    split = int(0.3 * len(frame))
    train_rows, traffic = frame.iloc[:split], frame.iloc[split:].reset_index(drop=True)
    train_csv = work / table / "train.csv"
    train_csv.parent.mkdir(parents=True, exist_ok=True)
    train_rows.to_csv(train_csv, index=False)
    name = f"drift-{table}".replace("_", "-")
    result = runner.train(train_csv, TARGET, name=name, time_limit=args.budget, settings=settings)
    if result.status != "succeeded":
        raise RuntimeError(f"{table}: v1 training {result.status}: {result.error}")
    features = importance_order(settings, name)
    cut = float(traffic[features[1]].quantile(0.9))
    out = {"table": table, "rows": len(frame), "imbalance_ratio": meta["imbalance_ratio"], "train_rows": split,
           "top_features": features[:2], "clean": [], "scenarios": {}}

    def check(rows: pd.DataFrame, labelled: bool, action: str, tag: str):
        path = work / table / f"{tag}.parquet"
        (rows if labelled else rows.drop(columns=[TARGET])).to_parquet(path, index=False)
        started = time.perf_counter()
        outcome = check_now(name, settings, current=str(path), action=action)
        return outcome, time.perf_counter() - started

    # the first half streams windows; the second is only ever scored on, since the labelled rows of clean windows
    # become the monitor's baseline, on which a recalibrated threshold is tuned
    half = len(traffic) // 2
    stream, evaluation_pool = traffic.iloc[:half], traffic.iloc[half:]
    for i in range(args.clean):
        rows = stream.sample(min(args.window, len(stream)), random_state=offset + 1000 + i)
        outcome, seconds = check(rows, True, "none", f"clean{i}")
        out["clean"].append({"decision": outcome.decision, "status": outcome.status, "seconds": round(seconds, 2),
                             "reason": outcome.reason})
        print(f"  {table} clean {i}: {outcome.decision} ({seconds:.1f}s)", flush=True)

    clean_eval = evaluation_pool.sample(min(len(evaluation_pool), 2 * args.window), random_state=offset + 7)
    before = macro_f1(settings, name, "1", clean_eval)
    for scenario in args.scenarios:
        reset_champion(settings, name)
        evaluation = drifted(scenario, evaluation_pool, features, positive, negative, cut, 2 * args.window,
                             offset + 11)
        during = macro_f1(settings, name, "1", evaluation)
        delay, acted, record = None, None, []
        for w in range(args.max_windows):
            rows = drifted(scenario, stream, features, positive, negative, cut, args.window, offset + 100 + w)
            outcome, seconds = check(rows, scenario != "prior", "auto", f"{scenario}{w}")
            record.append({"window": w, "decision": outcome.decision, "status": outcome.status,
                           "challenger": outcome.challenger_version, "promoted": outcome.promoted,
                           "comparison": outcome.comparison and outcome.comparison["reason"],
                           "reason": outcome.reason, "seconds": round(seconds, 2), "error": outcome.error})
            print(f"  {table} {scenario} window {w}: {outcome.decision} → "
                  f"{outcome.challenger_version and ('v' + outcome.challenger_version)} promoted={outcome.promoted} "
                  f"({seconds:.1f}s)", flush=True)
            if outcome.decision not in (None, "no_drift", "no_data"):
                delay = w if delay is None else delay
            if outcome.promoted or outcome.challenger_version:
                acted = outcome
                break
        client = tracking.configure(settings.tracking_uri, settings.registry_uri)
        after = macro_f1(settings, name, tracking.champion_version(client, name), evaluation)
        oracle_rows = drifted(scenario, train_rows, features, positive, negative, cut, len(train_rows), offset + 5)
        oracle_csv = work / table / f"oracle-{scenario}.csv"
        oracle_rows.to_csv(oracle_csv, index=False)
        oracle = runner.train(oracle_csv, TARGET, name=f"{name}-oracle-{scenario}", time_limit=args.budget,
                              settings=settings)
        oracle_f1 = macro_f1(settings, f"{name}-oracle-{scenario}", oracle.model_version, evaluation)
        out["scenarios"][scenario] = {
            "detection_delay_windows": delay, "windows": record,
            "action": acted.decision if acted else None, "promoted": bool(acted and acted.promoted),
            "macro_f1_before": before, "macro_f1_during": during, "macro_f1_after": after,
            "macro_f1_oracle": oracle_f1, "recovered_vs_oracle": after / oracle_f1 if oracle_f1 else None,
        }
        print(f"  {table} {scenario}: before {before:.3f} during {during:.3f} after {after:.3f} "
              f"oracle {oracle_f1:.3f}", flush=True)
    return out


def check_cost(args, work: Path) -> list[dict]:
    from sklearn.datasets import make_classification

    largest = max(args.sizes)
    x, y = make_classification(n_samples=largest + 5000, n_features=50, n_informative=12, weights=[0.9],
                               flip_y=0.01, random_state=0)
    frame = pd.DataFrame(x.astype("float32"), columns=[f"x{i}" for i in range(50)])
    frame[TARGET] = np.where(y == 1, "positive", "negative")
    settings = Settings(home=work / "scale" / "home", seed=0)
    train_csv = work / "scale" / "train.csv"
    train_csv.parent.mkdir(parents=True, exist_ok=True)
    frame.iloc[:5000].to_csv(train_csv, index=False)
    result = runner.train(train_csv, TARGET, name="scale", time_limit=args.budget, settings=settings)
    if result.status != "succeeded":
        raise RuntimeError(f"scale model: {result.status}: {result.error}")
    rows = []
    for size in args.sizes:
        path = work / "scale" / f"batch{size}.parquet"
        frame.iloc[5000:5000 + size].to_parquet(path, index=False)
        for attempt in (1, 2):
            started = time.perf_counter()
            outcome = check_now("scale", settings, current=str(path), action="none")
            seconds = time.perf_counter() - started
            rows.append({"rows": size, "columns": 50, "attempt": attempt, "seconds": round(seconds, 2),
                         "decision": outcome.decision, "status": outcome.status})
            print(f"  check of {size:,} × 50, attempt {attempt}: {seconds:.1f}s ({outcome.decision})", flush=True)
    return rows


def summary(report: dict) -> None:
    print("\nClean windows (action none): false alarms")
    for t in report["tables"]:
        alarms = sum(c["decision"] != "no_drift" for c in t["clean"])
        print(f"  {t['table']:<16} {alarms} of {len(t['clean'])}  (median {np.median([c['seconds'] for c in t['clean']]):.1f} s/check)")
    print("\n| table | scenario | delay (windows) | action | promoted | macro-F1 before | during | after | oracle | after/oracle |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for t in report["tables"]:
        for scenario, s in t["scenarios"].items():
            ratio = "—" if s["recovered_vs_oracle"] is None else f"{s['recovered_vs_oracle']:.3f}"
            print(f"| {t['table']} | {scenario} | {s['detection_delay_windows']} | {s['action']} | {s['promoted']} | "
                  f"{s['macro_f1_before']:.3f} | {s['macro_f1_during']:.3f} | {s['macro_f1_after']:.3f} | "
                  f"{s['macro_f1_oracle']:.3f} | {ratio} |")
    if report.get("check_cost"):
        print("\n| rows × columns | attempt | seconds |")
        print("|---|---|---|")
        for row in report["check_cost"]:
            print(f"| {row['rows']:,} × {row['columns']} | {row['attempt']} | {row['seconds']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", default="page_blocks0,satimage,river_shuttle")
    parser.add_argument("--budget", type=int, default=20, help="training budget per fit, seconds")
    parser.add_argument("--clean", type=int, default=20, help="clean windows per table")
    parser.add_argument("--window", type=int, default=500, help="rows per window")
    parser.add_argument("--max-windows", type=int, default=3, help="drifted windows per scenario at most")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS), help="comma list")
    parser.add_argument("--seed", type=int, default=0, help="shuffle, split, windows and training seed")
    parser.add_argument("--sizes", default="10000,100000,1000000", help="rows of the check-cost batches ('' skips)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "drift_recovery.json")
    parser.add_argument("--work", type=Path, help="keep homes, models and windows in this folder (default: a temporary one)")
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = {"started": datetime.now(UTC).isoformat(), "machine": platform.platform(), "cpus": os.cpu_count(),
              "args": {k: v for k, v in vars(args).items() if k != "out"}, "tables": []}
    with tempfile.TemporaryDirectory(prefix="poise-drift-") as folder:
        work = args.work or Path(folder)
        for table in args.tables.split(","):
            print(f"{table}:", flush=True)
            report["tables"].append(run_table(table, args, work))
            args.out.write_text(json.dumps(report, indent=2, default=str))
        if args.sizes:
            report["check_cost"] = check_cost(args, work)
    report["finished"] = datetime.now(UTC).isoformat()
    args.out.write_text(json.dumps(report, indent=2, default=str))
    summary(report)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
