"""How close is a drift check's quality estimate without labels to the macro-F1 the labels later show?

Per table (the drift benchmark's, `benchmarks/drift_recovery.py`): 30 % of the rows train v1 with `poise train`;
the other 70 % are live traffic, from which windows of `--window` rows are drawn and checked with the real monitor
graph (`check_now`, action "none") as labelled batch files. The estimate never reads the labels
(`agents/drift/estimation.py`); the check also records the realised figures on them, and the two are compared.

Windows, by kind (`--windows` of each):
- clean: rows drawn at random;
- selected: covariate shift that keeps P(label | inputs) — rows drawn with weight exp(s·z) on the most important
  feature's standardised value z, s = ±1 in turn (the mix of inputs changes, the rule linking them to the label
  does not). This is the shift the estimator is built for, and the one its target (MAE <= 0.03) is about;
- unit: the drift benchmark's "covariate" scenario, the most important feature × 3 with the labels of the rows.
  To the model that is a new P(label | inputs) as well as new inputs: the estimate is expected to miss it, the
  drift check to catch it;
- prior: the drift benchmark's prior shift (positives 3× as frequent, P(inputs | label) unchanged);
- concept: the drift benchmark's concept shift (a new positive pattern, inputs unchanged): expected to be missed.
Reported per kind: the mean absolute error of estimated against realised macro-F1, how often the realised value
lay in the estimate's 90 % interval, and the checks' decisions.

Run from the repository root:
    .venv/bin/python benchmarks/estimation.py [--tables page_blocks0,satimage,river_shuttle] [--budget 20]
        [--window 1500] [--windows 4] [--seed 0] [--out benchmarks/results/estimation.json]
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

from benchmarks.drift_recovery import drifted, importance_order  # noqa: E402
from poise.agents.drift.estimation import INTERVAL  # noqa: E402
from poise.pipelines import runner  # noqa: E402
from poise.pipelines.datasets import TARGET, load  # noqa: E402
from poise.pipelines.monitoring.runner import check_now, find_check  # noqa: E402
from poise.pipelines.settings import Settings  # noqa: E402

KINDS = ("clean", "selected", "unit", "prior", "concept")
TARGET_MAE = 0.03  # on "selected" windows (issue 20)


def selected(rows: pd.DataFrame, feature: str, strength: float, n: int, seed: int) -> pd.DataFrame:
    """`n` rows drawn with weight exp(strength · z) of `feature`'s standardised value: the inputs' mix moves,
    P(label | inputs) stays."""
    values = rows[feature].astype(float)
    z = ((values - values.mean()) / (values.std() or 1.0)).clip(-3, 3).fillna(0.0)
    weights = np.exp(strength * z)
    return rows.sample(min(n, len(rows)), weights=weights, random_state=seed)


def window_rows(kind: str, i: int, stream: pd.DataFrame, features: list[str], positive: str, negative: str,
                cut: float, n: int, seed: int) -> pd.DataFrame:
    if kind == "clean":
        return stream.sample(min(n, len(stream)), random_state=seed)
    if kind == "selected":
        return selected(stream, features[0], 1.0 if i % 2 == 0 else -1.0, n, seed)
    scenario = {"unit": "covariate", "prior": "prior", "concept": "concept"}[kind]
    return drifted(scenario, stream, features, positive, negative, cut, n, seed)


def run_table(table: str, args, work: Path) -> dict:
    frame, meta = load(table)
    frame = frame.sample(frac=1.0, random_state=args.seed).reset_index(drop=True)
    positive = meta["minority"]
    negative = next(c for c in frame[TARGET].unique() if c != positive)
    settings = Settings(home=work / table / "home", seed=args.seed)
    split = int(0.3 * len(frame))
    train_csv = work / table / "train.csv"
    train_csv.parent.mkdir(parents=True, exist_ok=True)
    frame.iloc[:split].to_csv(train_csv, index=False)
    traffic = frame.iloc[split:].reset_index(drop=True)
    name = f"estimate-{table}".replace("_", "-")
    result = runner.train(train_csv, TARGET, name=name, time_limit=args.budget, settings=settings)
    if result.status != "succeeded":
        raise RuntimeError(f"{table}: training {result.status}: {result.error}")
    features = importance_order(settings, name)
    cut = float(traffic[features[1]].quantile(0.9))
    windows = []
    for kind in KINDS:
        for i in range(args.windows):
            seed = 10_000 * args.seed + 100 * KINDS.index(kind) + i
            rows = window_rows(kind, i, traffic, features, positive, negative, cut, args.window, seed)
            path = work / table / f"{kind}{i}.parquet"
            rows.to_parquet(path, index=False)
            started = time.perf_counter()
            outcome = check_now(name, settings, current=str(path), action="none")
            seconds = time.perf_counter() - started
            if outcome.status != "succeeded":
                windows.append({"kind": kind, "window": i, "status": outcome.status, "error": outcome.error})
                print(f"  {table} {kind} {i}: {outcome.status} {outcome.error}", flush=True)
                continue
            estimate = find_check(settings, outcome.check_id).results["analysis"]["estimated_quality"]
            realised = estimate["realised"]["realised"]["macro_f1"]
            low, high = estimate["interval"]["macro_f1"]
            windows.append({
                "kind": kind, "window": i, "status": "succeeded", "rows": len(rows), "decision": outcome.decision,
                "estimated": estimate["estimated"]["macro_f1"], "interval": [low, high], "realised": realised,
                "baseline": estimate["baseline"]["macro_f1"],
                "error": abs(estimate["estimated"]["macro_f1"] - realised),
                "covered": bool(low <= realised <= high), "estimated_drop": estimate["dropped"],
                "seconds": round(seconds, 2)})
            print(f"  {table} {kind} {i}: estimated {estimate['estimated']['macro_f1']:.3f} "
                  f"({low:.3f}-{high:.3f}) realised {realised:.3f}; {outcome.decision} ({seconds:.1f}s)", flush=True)
    return {"table": table, "rows": len(frame), "train_rows": split, "imbalance_ratio": meta["imbalance_ratio"],
            "top_features": features[:2], "windows": windows}


def summarise(tables: list[dict]) -> dict:
    rows = [w | {"table": t["table"]} for t in tables for w in t["windows"] if w["status"] == "succeeded"]
    frame = pd.DataFrame(rows)
    per_kind = {}
    print(f"\nEstimated vs realised macro-F1 per window kind ({INTERVAL:.0%} intervals)")
    print(f"{'kind':10} {'windows':>7} {'MAE':>7} {'max err':>8} {'covered':>8} {'mean realised':>14} "
          f"{'mean estimated':>15}  decisions")
    for kind in KINDS:
        part = frame[frame["kind"] == kind]
        if part.empty:
            continue
        per_kind[kind] = {"windows": len(part), "mae": float(part["error"].mean()),
                          "max_error": float(part["error"].max()),
                          "coverage": float(part["covered"].mean()), "mean_realised": float(part["realised"].mean()),
                          "mean_estimated": float(part["estimated"].mean()),
                          "decisions": part["decision"].value_counts().to_dict()}
        k = per_kind[kind]
        print(f"{kind:10} {k['windows']:>7} {k['mae']:>7.3f} {k['max_error']:>8.3f} {k['coverage']:>8.0%} "
              f"{k['mean_realised']:>14.3f} {k['mean_estimated']:>15.3f}  {k['decisions']}")
    print("\nPer table and kind, MAE")
    print(frame.pivot_table(index="table", columns="kind", values="error", aggfunc="mean")
          .reindex(columns=[k for k in KINDS if k in set(frame["kind"])]).round(3).to_string())
    mae = per_kind.get("selected", {}).get("mae")
    verdict = None if mae is None else mae <= TARGET_MAE
    print(f"\nTarget: MAE <= {TARGET_MAE} on covariate-shift (selected) windows: "
          f"{'met' if verdict else 'NOT met' if verdict is not None else 'not measured'}"
          + (f" ({mae:.3f})" if mae is not None else ""))
    return {"per_kind": per_kind, "target_mae": TARGET_MAE, "target_met": verdict}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", default="page_blocks0,satimage,river_shuttle")
    parser.add_argument("--budget", type=int, default=20)
    parser.add_argument("--window", type=int, default=1500)
    parser.add_argument("--windows", type=int, default=4, help="windows of each kind per table")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "estimation.json")
    args = parser.parse_args()
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    started = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="poise-estimation-"))
    tables = []
    for table in args.tables.split(","):
        print(f"== {table}", flush=True)
        tables.append(run_table(table, args, work))
    report = {"created": datetime.now(UTC).isoformat(timespec="seconds"), "machine": platform.platform(),
              "config": vars(args) | {"out": str(args.out)}, "tables": tables, "summary": summarise(tables),
              "seconds": round(time.perf_counter() - started, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"\nJSON written to {args.out}")


if __name__ == "__main__":
    main()
