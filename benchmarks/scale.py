"""Scale: Poise on generated imbalanced Parquet tables of 1M and 10M rows x 50 mixed columns (2 % positives).

Each run is one `poise train` job in a fresh process (`--child`), so its peak RSS is its own: the seconds of each
step and the process's peak RSS when the step ended (load + profile, prepare, train, evaluate), the whole job's
seconds, then the macro-F1 of the registered version on a fixed test part of 1M rows from the same generator,
scored by batch prediction (`agents.deployment.batch.batch_predict`) in the same process, with its rows/s.
AutoGluon's own worker processes, if any, are not in the peak (CatBoost and LightGBM fit in-process here).

Runs:
- `full-1M`: the 1M-row table trained in memory (it fits the default memory budget);
- `sampled-1M`: the same table through the out-of-core path (`agents/data_engineering/large_tables.py`), forced by
  a memory budget of `--sampled-budget` bytes: the quality of the imbalance-aware sample against the full table;
- `sampled-10M`: the 10M-row table, over the default 2 GB budget, so sampled;
- `score-10M`: the 10M-row table scored by `poise predict`'s batch path with `sampled-10M`'s version, in a fresh
  process: seconds, rows/s and peak RSS of scoring alone (run it after `sampled-10M`).
- `score-1M`, `score-1M-ray1`, `score-1M-ray2`: the 1M-row test part scored with `sampled-1M`'s version (run it
  first): in process, and as Ray Data tasks on a local Ray cluster (`ray.cluster_utils.Cluster`) of one node with
  both CPUs and of two nodes with one CPU each. Seconds, rows/s, the driver's peak RSS, and whether the output
  equals the in-process file row for row. On one 2-core machine the two-node cluster shares the same two cores, so
  it shows the per-node overhead, not a speed-up across machines.
- `check-1M`, `check-1M-sampled`, `check-1M-sampled-ray1`, `check-1M-sampled-ray2`: a drift check (`poise check`, no
  action) of `sampled-1M`'s version on the 1M-row test part, in a fresh process: read whole into pandas (default
  budget), out of core (`--sampled-budget`), and out of core with the pass over every row (the champion's labels,
  the domain classifier's scores: `agents/drift/whole_window.py`) as Ray Data tasks on a local cluster of 1 and 2
  nodes. Seconds, the every-row pass's seconds, peak RSS, the decision, the all-rows domain AUC and PSI, and whether
  a cluster's tallies equal the in-process ones.
- `check-10M`: a drift check of `sampled-10M`'s version on its own 10M-row table (over the default budget: out of
  core), in process (run it after `sampled-10M`).

- `bagged-100k`, `bagged-100k-ray1`, `bagged-100k-ray2`: a 100k-row table of the same generator, small enough for
  Poise to bag (only bagged fits spread over a cluster's nodes: up to 100,000 rows, or fewer than 200 minority rows),
  trained in process and with `POISE_RAY_ADDRESS` on a local Ray cluster of 1 and 2 nodes (AutoGluon's distributed
  mode, folds synced through the shared home: `AG_DISTRIBUTED_FILESYSTEM=NFS`), with the fold tasks per node.

    .venv/bin/python benchmarks/scale.py [--runs full-1M,sampled-1M,sampled-10M] [--budget 300] [--workdir DIR]
"""

import os
import sys
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before any OpenMP library loads (see imbalance.py)
ROOT = Path(__file__).resolve().parents[1]
sys.path[0] = str(ROOT)

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

PART_ROWS = 500_000
TARGET = "y"
# run: (rows, memory budget, Ray nodes)
RUNS = {"full-1M": (1_000_000, None, 0), "sampled-1M": (1_000_000, "sampled", 0),
        "sampled-10M": (10_000_000, "default", 0), "bagged-100k": (100_000, None, 0),
        "bagged-100k-ray1": (100_000, None, 1), "bagged-100k-ray2": (100_000, None, 2)}
SCORE_RUNS = {"score-10M": ("sampled-10M", "table-10000000", 0), "score-1M": ("sampled-1M", "test", 0),
              "score-1M-ray1": ("sampled-1M", "test", 1), "score-1M-ray2": ("sampled-1M", "test", 2)}
# run: (trained run whose version is checked, window folder, memory budget, Ray nodes)
CHECK_RUNS = {"check-1M": ("sampled-1M", "test", None, 0), "check-1M-sampled": ("sampled-1M", "test", "sampled", 0),
              "check-1M-sampled-ray1": ("sampled-1M", "test", "sampled", 1),
              "check-1M-sampled-ray2": ("sampled-1M", "test", "sampled", 2),
              "check-10M": ("sampled-10M", "table-10000000", "default", 0)}
TEST_ROWS = 1_000_000
TEST_SEED = 10_000


def generate_part(rows: int, seed: int) -> pd.DataFrame:
    """50 mixed columns: 30 float64, 5 float32, 5 small integers, 8 categories (3 to 300 levels), a boolean and a
    timestamp; ~2 % positives, driven by a few numbers, two categories and the boolean, the rest noise."""
    rng = np.random.default_rng(seed)
    frame = {f"num_{i}": rng.normal(size=rows) for i in range(30)}
    frame |= {f"f32_{i}": rng.normal(size=rows).astype("float32") for i in range(5)}
    frame |= {f"int_{i}": rng.integers(0, 10 ** (i + 1), size=rows) for i in range(5)}
    levels = [3, 5, 10, 20, 50, 100, 200, 300]
    codes = {i: rng.integers(0, n, size=rows) for i, n in enumerate(levels)}
    frame |= {f"cat_{i}": np.char.add(f"c{i}_", codes[i].astype(str)) for i in range(len(levels))}
    frame["flag"] = rng.random(rows) < 0.3
    frame["seen_at"] = pd.Timestamp("2025-01-01") + pd.to_timedelta(rng.integers(0, 365 * 86_400, rows), unit="s")
    logit = (-5.75 + 1.1 * frame["num_0"] + 0.8 * frame["num_1"] - 0.6 * frame["f32_0"] + 0.9 * frame["flag"]
             + np.where(codes[0] == 0, 0.8, 0.0) + 0.004 * codes[4] + rng.logistic(size=rows) * 0.3)
    frame[TARGET] = np.where(rng.random(rows) < 1 / (1 + np.exp(-logit)), "yes", "no")
    return pd.DataFrame(frame)


def generate(folder: Path, rows: int, seed: int) -> Path:
    """The table as Parquet parts of `PART_ROWS` rows (bounded memory), unless already there."""
    done = folder / "_complete"
    if done.exists():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    for part in range(0, rows, PART_ROWS):
        generate_part(min(PART_ROWS, rows - part), seed * 1_000 + part // PART_ROWS).to_parquet(
            folder / f"part-{part // PART_ROWS:05d}.parquet", index=False)
    done.touch()
    return folder


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux


def local_cluster(nodes: int):
    """A local Ray cluster of `nodes` nodes sharing this machine's two CPUs, joined by this process; None for 0."""
    if not nodes:
        return None
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2 // nodes})
    for _ in range(nodes - 1):
        cluster.add_node(num_cpus=2 // nodes)
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    return cluster


def stop(cluster) -> None:
    import ray

    ray.shutdown()
    cluster.shutdown()


def score_child(args) -> None:
    """A `score-*` run: a table scored by batch prediction with a trained run's version, in this fresh process (so
    the peak RSS is the scoring's own), in process or on a local Ray cluster of 1 or 2 nodes; prints one JSON line."""
    from poise.agents.deployment.batch import batch_predict
    from poise.pipelines.settings import Settings

    trained, table, nodes = SCORE_RUNS[args.child]
    settings = Settings(home=Path(args.workdir) / "homes" / trained)
    cluster = local_cluster(nodes)
    out = Path(args.workdir) / f"pred-{args.child}.parquet"
    start = time.perf_counter()
    _, rows, version = batch_predict(settings, f"scale-{trained}", Path(args.workdir) / table, out,
                                     on_cluster=bool(nodes))
    seconds = time.perf_counter() - start
    record = {"run": args.child, "status": "succeeded", "rows": rows, "version": version, "nodes": nodes,
              "seconds": round(seconds, 1), "rows_per_s": round(rows / seconds), "peak_rss_mb": round(peak_rss_mb())}
    if nodes:
        stop(cluster)
        local = Path(args.workdir) / "pred-score-1M.parquet"
        if local.exists():
            record["equals_in_process"] = bool(pd.read_parquet(out).equals(pd.read_parquet(local)))
    print(json.dumps(record))


def check_child(args) -> None:
    """A `check-*` run: one drift check of a trained run's version on a window, in this fresh process."""
    from poise.pipelines.monitoring.runner import check_now, find_check
    from poise.pipelines.settings import Settings

    trained, window_folder, budget, nodes = CHECK_RUNS[args.child]
    values = {"home": Path(args.workdir) / "homes" / trained}
    if budget == "sampled":
        values["memory_budget_bytes"] = args.sampled_budget
    cluster = local_cluster(nodes)
    if cluster is not None:
        values["ray_address"] = cluster.address
    start = time.perf_counter()
    result = check_now(f"scale-{trained}", Settings(**values), current=str(Path(args.workdir) / window_folder),
                       action="none")
    seconds = round(time.perf_counter() - start, 1)
    if cluster is not None:
        stop(cluster)
    window = find_check(Settings(**values), result.check_id).results.get("window", {}) if result.check_id else {}
    whole = window.get("whole") or {}
    psi = whole.get("stability", {}).get("psi", {})
    tallies = {"predicted": whole.get("predicted"), "domain": whole.get("domain")}
    record = {"run": args.child, "status": result.status, "error": result.error, "seconds": seconds, "nodes": nodes,
              "peak_rss_mb": round(peak_rss_mb()), "decision": result.decision, "every_row_s": whole.get("seconds"),
              "scored_on": whole.get("scored_on"), "rows_scored": whole.get("rows"),
              "domain_auc": (whole.get("domain") or {}).get("auc"), "tallies": tallies,
              "psi_max": max(psi.values()) if psi else None,
              "psi_shifted": sum(value >= 0.2 for value in psi.values()) if psi else None}
    in_process = Path(args.workdir) / "tallies-check-1M-sampled.json"
    if nodes and in_process.exists():
        record["equals_in_process"] = json.loads(in_process.read_text()) == tallies
    elif args.child == "check-1M-sampled":
        in_process.write_text(json.dumps(tallies))
    print(json.dumps(record))


def child(args) -> None:
    """One job in this process; prints its record as one JSON line."""
    from sklearn.metrics import f1_score

    from poise.agents.data_engineering.loading import parquet_files
    from poise.agents.deployment.batch import batch_predict
    from poise.pipelines import runner
    from poise.pipelines.settings import Settings

    rows, budget, nodes = RUNS[args.child]
    data = Path(args.workdir) / f"table-{rows}"
    values = {"home": Path(args.workdir) / "homes" / args.child}
    if budget == "sampled":
        values["memory_budget_bytes"] = args.sampled_budget
    cluster = local_cluster(nodes)
    if cluster is not None:
        values["ray_address"] = cluster.address
    settings = Settings(**values)
    steps: dict[str, dict] = {}

    def on_event(event) -> None:
        if event.status in ("succeeded", "failed"):
            steps[event.node] = {"seconds": round(event.seconds or 0.0, 2), "peak_rss_mb": round(peak_rss_mb())}

    started = time.perf_counter()
    result = runner.train(data, TARGET, name=f"scale-{args.child}", time_limit=args.budget, settings=settings,
                          on_event=on_event)
    record = {"run": args.child, "rows": rows, "budget": args.budget, "status": result.status, "error": result.error,
              "job_seconds": round(time.perf_counter() - started, 1), "steps": steps, "nodes": nodes,
              "job_peak_rss_mb": round(peak_rss_mb()), "holdout_macro_f1": result.metrics.get("macro_f1")}
    if cluster is not None:
        from ray.util.state import list_tasks

        from poise.pipelines.cluster import FOLD_TASK

        folds = list_tasks(filters=[("func_or_class_name", "=", FOLD_TASK)], limit=10_000,
                           raise_on_missing_output=False)
        record["fold_tasks_per_node"] = dict(Counter(task.node_id[:8] for task in folds if task.node_id))
        stop(cluster)
    if result.status == "succeeded":
        card = json.loads((settings.home / "jobs" / result.job_id / "data_card.json").read_text())
        record["sampled_rows"] = (card["source"].get("sample") or {}).get("sampled_rows")
        record["train_rows"] = card["split"]["train_rows"]
        test = Path(args.workdir) / "test"
        start = time.perf_counter()
        predictions = Path(args.workdir) / f"pred-{args.child}.parquet"
        out, scored, _ = batch_predict(settings, f"scale-{args.child}", test, predictions, result.model_version)
        record["score_rows_per_s"] = round(scored / (time.perf_counter() - start))
        truth = pd.concat([pd.read_parquet(path, columns=[TARGET])[TARGET] for path in parquet_files(test)],
                          ignore_index=True)  # in the order batch prediction reads the parts
        predicted = pd.read_parquet(out, columns=["predicted_label"])["predicted_label"]
        record["test_macro_f1"] = round(float(f1_score(truth, predicted, average="macro")), 4)
        record["peak_rss_mb"] = round(peak_rss_mb())
    print(json.dumps(record))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", default=",".join([*RUNS, *SCORE_RUNS, *CHECK_RUNS]))
    parser.add_argument("--budget", type=int, default=300, help="job time limit, seconds")
    parser.add_argument("--sampled-budget", type=int, default=250_000_000,
                        help="memory budget (bytes) that forces the 1M-row table through the sampled path")
    parser.add_argument("--workdir", default="/tmp/poise-scale")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "scale.json"))
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child in SCORE_RUNS:
        return score_child(args)
    if args.child in CHECK_RUNS:
        return check_child(args)
    if args.child:
        return child(args)

    workdir = Path(args.workdir)
    runs = [name for name in args.runs.split(",") if name]
    if unknown := sorted(set(runs) - {*RUNS, *SCORE_RUNS, *CHECK_RUNS}):
        parser.error(f"unknown runs: {', '.join(unknown)}; choose from {', '.join([*RUNS, *SCORE_RUNS, *CHECK_RUNS])}")
    for rows in sorted({RUNS[name][0] for name in runs if name in RUNS}):
        generate(workdir / f"table-{rows}", rows, seed=rows // PART_ROWS)
    generate(workdir / "test", TEST_ROWS, seed=TEST_SEED)

    out = Path(args.out)
    results = json.loads(out.read_text()) if out.exists() else {"runs": {}}
    for name in runs:
        done = subprocess.run([sys.executable, __file__, "--child", name, "--budget", str(args.budget),
                               "--sampled-budget", str(args.sampled_budget), "--workdir", str(workdir)],
                              capture_output=True, text=True)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        record = json.loads(lines[-1]) if lines else {"run": name, "status": "crashed",
                                                      "error": done.stderr[-2000:]}
        results["runs"][name] = record
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))

    print(f"\n{'run':12} {'rows':>10} {'trained on':>10} {'profile s':>9} {'profile MB':>10} {'train s':>7} "
          f"{'train MB':>8} {'job s':>6} {'peak MB':>7} {'score rows/s':>12} {'test macro-F1':>13}")
    for name, r in results["runs"].items():
        if name in {**SCORE_RUNS, **CHECK_RUNS} and r.get("status") == "succeeded":
            continue
        if r.get("status") != "succeeded":
            print(f"{name:12} {r.get('status')}: {(r.get('error') or '')[:200]}")
            continue
        steps = r["steps"]
        profile_s = steps["load"]["seconds"] + steps["profile"]["seconds"]
        print(f"{name:12} {r['rows']:>10,} {r['train_rows']:>10,} {profile_s:>9.1f} "
              f"{steps['profile']['peak_rss_mb']:>10,} {steps['train']['seconds']:>7.1f} "
              f"{steps['train']['peak_rss_mb']:>8,} {r['job_seconds']:>6.0f} "
              f"{r['peak_rss_mb']:>7,} {r['score_rows_per_s']:>12,} {r['test_macro_f1']:>13.4f}")
    for name, r in results["runs"].items():
        if r.get("fold_tasks_per_node") is not None:
            print(f"{name}: fold tasks per Ray node {r['fold_tasks_per_node']}")
    scored = {name: r for name, r in results["runs"].items() if name in SCORE_RUNS and r.get("status") == "succeeded"}
    if scored:
        print(f"\n{'batch prediction':16} {'rows':>10} {'Ray nodes':>9} {'seconds':>7} {'rows/s':>9} {'driver MB':>9} "
              f"{'= in-process':>12}")
        for name, r in scored.items():
            same = {True: "yes", False: "NO"}.get(r.get("equals_in_process"), "")
            print(f"{name:16} {r['rows']:>10,} {r.get('nodes', 0) or 'none':>9} {r['seconds']:>7.1f} "
                  f"{r['rows_per_s']:>9,} {r['peak_rss_mb']:>9,} {same:>12}")
    checks = {name: r for name, r in results["runs"].items() if name in CHECK_RUNS and r.get("status") == "succeeded"}
    if checks:
        print(f"\n{'drift check':22} {'Ray nodes':>9} {'seconds':>7} {'every row s':>11} {'peak MB':>7} "
              f"{'domain AUC':>10} {'max PSI':>7} {'decision':>9} {'= in-process':>12}")
        for name, r in checks.items():
            same = {True: "yes", False: "NO"}.get(r.get("equals_in_process"), "")
            auc = f"{r['domain_auc']:.4f}" if r.get("domain_auc") is not None else ""
            psi = f"{r['psi_max']:.4f}" if r.get("psi_max") is not None else ""
            every = f"{r['every_row_s']:.1f}" if r.get("every_row_s") is not None else ""
            print(f"{name:22} {r.get('nodes') or 'none':>9} {r['seconds']:>7.1f} {every:>11} {r['peak_rss_mb']:>7,} "
                  f"{auc:>10} {psi:>7} {r['decision']:>9} {same:>12}")
    print(f"\nJSON written to {out}")


if __name__ == "__main__":
    main()
