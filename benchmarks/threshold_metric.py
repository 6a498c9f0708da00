"""Would a decision threshold calibrated for macro-F1 serve Poise better than today's (F1 of the positive class)?

A paired experiment, on both suites: the real mixed-type tables of `benchmarks/real_tables.py`
(`--suites real`) and the KEEL/UCI tables of `benchmarks/imbalance.py` (`keel`). Per (table,
seed): the labelled rows are split 75/25 as in `real_tables.py` (stratified, `random_state=seed`);
Poise trains on a CSV of the 75 % (`pipelines.runner.train`, `--budget` seconds, default presets)
and scores the 25 % by batch prediction. The predictor Poise serves (the refit, `autogluon_full`
in the job folder) is then loaded and its threshold recalibrated for macro-F1 on its own
validation rows, or its out-of-fold predictions, by the rule `agents.decision_threshold` applies
to the policy's metric. Both thresholds, today's and macro-F1's, are applied to the same test
probabilities: one fit, two thresholds, so the difference is the threshold's alone.

Run from the repository root (resumable: finished (suite, table, seed) runs are kept in --out):
    .venv/bin/python benchmarks/threshold_metric.py [--suites real,keel] [--tables a,b] [--seeds 0,1] [--budget 60]
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before any OpenMP library loads (see imbalance.py)
ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import json  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import f1_score, recall_score  # noqa: E402

from benchmarks import real_tables  # noqa: E402
from benchmarks.imbalance import machine_info  # noqa: E402
from poise.pipelines import datasets  # noqa: E402

SUITES = {"real": real_tables.TABLES, "keel": datasets.TABLES}


def load(suite: str, table: str) -> tuple[pd.DataFrame, dict]:
    if suite == "real":
        return real_tables.load_table(table)
    frame, meta = datasets.load(table)
    return frame, {"target": datasets.TARGET, "leak_columns": [], "minority": meta["minority"]}


def macro_f1_threshold(predictor) -> float:
    """The served predictor's threshold, recalibrated for macro-F1 by Poise's own rule (`agents.decision_threshold`)."""
    from poise.agents.decision_threshold import calibrate

    policy = {"eval_metric": "f1_macro", "positive_class": predictor.positive_class, "weight_evaluation": False,
              "sample_weight": predictor.sample_weight, "class_balanced": predictor.sample_weight == "balance_weight",
              "num_bag_folds": 5 if predictor._trainer.bagged_mode else 0}
    return calibrate(predictor, policy)[0]


def run(poise: real_tables.Poise, suite: str, table: str, seed: int, budget: int, workdir: Path) -> dict:
    from autogluon.tabular import TabularPredictor

    frame, meta = load(suite, table)
    rundir = workdir / f"{suite}-{table}-s{seed}"
    rundir.mkdir(parents=True)
    files = real_tables.write_run_files(frame, meta, seed, rundir)
    settings, name = poise.settings(seed), f"thr-{table}-s{seed}"
    start = time.perf_counter()
    result = poise.train(data=files["paths"]["train_csv"], target=meta["target"], name=name, time_limit=budget,
                         settings=settings)
    row = {"suite": suite, "table": table, "seed": seed, "seconds": round(time.perf_counter() - start, 1),
           "status": result.status}
    if result.status != "succeeded":
        return row | {"error": str(result.error)[:500]}
    out, _, _ = poise.batch_predict(settings, name, files["paths"]["test_csv"], rundir / "pred.csv",
                                    result.model_version)
    proba = real_tables.read_predictions(out)[f"predicted_proba_{meta['minority']}"].to_numpy(float)
    positive = np.asarray(files["y_test"], dtype=str) == meta["minority"]
    job_dir = settings.job_dir(result.job_id)
    served = job_dir / "autogluon_full" if (job_dir / "autogluon_full").exists() else job_dir / "autogluon"
    thresholds = {"f1": float(result.threshold), "macro_f1": macro_f1_threshold(TabularPredictor.load(str(served)))}
    for kind, threshold in thresholds.items():
        predicted = proba >= threshold
        row[kind] = {"threshold": threshold, "macro_f1": float(f1_score(positive, predicted, average="macro")),
                     "minority_recall": float(recall_score(positive, predicted))}
    return row


def report(rows: list[dict]) -> dict:
    summary = {}
    print(f"\n{'suite':6} {'runs':>4} {'F1 threshold':>13} {'macro-F1 threshold':>19} {'diff':>7} {'wins':>4} "
          f"{'losses':>6}")
    for suite in SUITES:
        done = [r for r in rows if r["suite"] == suite and r["status"] == "succeeded"]
        if not done:
            continue
        today = np.array([r["f1"]["macro_f1"] for r in done])
        macro = np.array([r["macro_f1"]["macro_f1"] for r in done])
        diff = macro - today
        summary[suite] = {"runs": len(done), "f1_threshold": today.mean(), "macro_f1_threshold": macro.mean(),
                          "mean_diff": diff.mean(), "wins": int((diff > 0.001).sum()),
                          "losses": int((diff < -0.001).sum()), "failures": sum(r["suite"] == suite for r in rows)
                          - len(done)}
        print(f"{suite:6} {len(done):4d} {today.mean():13.4f} {macro.mean():19.4f} {diff.mean():+7.4f} "
              f"{summary[suite]['wins']:4d} {summary[suite]['losses']:6d}")
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--suites", default="real,keel")
    parser.add_argument("--tables", help="comma list (default: every table of the suites)")
    parser.add_argument("--seeds", default="0,1", help="comma list")
    parser.add_argument("--budget", type=int, default=60)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "threshold_metric.json")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    saved = json.loads(args.out.read_text()) if args.out.exists() else {"runs": []}
    rows = [r for r in saved["runs"] if r["status"] == "succeeded"]
    done = {(r["suite"], r["table"], r["seed"]) for r in rows}
    workdir = Path(tempfile.mkdtemp(prefix="poise-threshold-metric-"))
    poise = real_tables.Poise(workdir / "home")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for suite in args.suites.split(","):
        for table in SUITES[suite]:
            if args.tables and table not in args.tables.split(","):
                continue
            for seed in seeds:
                if (suite, table, seed) in done:
                    continue
                rows.append(run(poise, suite, table, seed, args.budget, workdir))
                print(json.dumps(rows[-1]), flush=True)
                summary = {"budget": args.budget, "machine": machine_info(), "runs": rows}
                args.out.write_text(json.dumps(summary, indent=1))
    summary = {"budget": args.budget, "machine": machine_info(), "runs": rows, "summary": report(rows)}
    args.out.write_text(json.dumps(summary, indent=1, default=float))
    print(f"\nJSON written to {args.out}")


if __name__ == "__main__":
    main()
