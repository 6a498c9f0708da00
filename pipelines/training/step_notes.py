"""What the job log says about each finished training step: a one-line message and a few headline numbers, read
from the step's state update. The graph pairs each node with its note (`pipelines.training.graph.STEPS`)."""

from __future__ import annotations

from typing import Any

from poise.pipelines.cluster import describe as where_fitted

Note = tuple[str | None, dict[str, Any] | None]


def load(result: dict[str, Any]) -> Note:
    info = result["load_info"]
    return f"read {info['format']} ({info.get('encoding') or 'binary'}), {info['bytes']:,} bytes", None


def profile(result: dict[str, Any]) -> Note:
    p = result["profile"]
    t = p["target"]
    dropped = ", ".join(d["column"] for d in p["dropped"]) or "none"
    return (f"{p['n_rows']:,} rows × {p['n_columns']} columns; {t['problem_type']} target, "
            f"minority '{t['minority_class']}', imbalance ratio {t['imbalance_ratio']:.1f}; dropped: {dropped}",
            {"n_rows": p["n_rows"], "imbalance_ratio": t["imbalance_ratio"], "n_dropped": len(p["dropped"])})


def review(result: dict[str, Any]) -> Note:
    review = result["review"]
    changes = review.get("changes")
    text = f"amended by the LLM: {changes['reason']}" if changes else "no change"
    return text + (f" (LLM failed: {review['fallback']})" if review.get("fallback") else ""), None


def approve(result: dict[str, Any]) -> Note:
    return f"approved ({result['approval']['by']})", None


def prepare(result: dict[str, Any]) -> Note:
    s = result["split"]["summary"]
    overlap = (result["split"]["diagnostics"]["class_overlap"] or {}).get("sentence")
    return (f"train {s['train_rows']:,} rows / holdout {s['holdout_rows']:,} rows (stratified)"
            + (f"; {overlap}" if overlap else ""),
            {"train_rows": s["train_rows"], "holdout_rows": s["holdout_rows"]})


def train(result: dict[str, Any]) -> Note:
    f = result["fit"]
    thr = "" if f["threshold"] is None else f", threshold {f['threshold']:.3f}"
    notes = "".join(f"; {note}" for note in (f.get("threshold_note"), f.get("fallback"), where_fitted(f.get("cluster")))
                    if note)
    audit = result["label_noise"]["summary"]
    noise = f"; {audit['sentence']}" if audit else ""
    return (f"{result['policy']['eval_metric']}: best {f['best_model']} of {f['n_models']} models{thr}{notes}{noise}",
            {"fit_seconds": f["fit_seconds"], "threshold": f["threshold"]})


def evaluate(result: dict[str, Any]) -> Note:
    m = result["metrics"]
    return (f"holdout macro-F1 {m['macro_f1']:.3f}, balanced acc {m['balanced_accuracy']:.3f}, "
            f"PR-AUC {m['pr_auc']:.3f}, minority recall {m['minority_recall']:.3f}",
            {k: m[k] for k in ("macro_f1", "balanced_accuracy", "pr_auc", "roc_auc", "minority_recall")})


def gate(result: dict[str, Any]) -> Note:
    return result["gate"]["reason"], {"passed": result["gate"]["passed"]}


def refit(result: dict[str, Any]) -> Note:
    r = result["refit"]
    if not r["done"]:
        return f"not refitted: {r['reason']}", None
    thr = "" if r["threshold"] is None else f", threshold {r['threshold']:.3f}"
    where = where_fitted(r.get("cluster"))
    noise = r["label_noise"]
    flagged = "" if not noise["rows"] else f", {noise['rows']:,} rows flagged as likely mislabelled " + (
        "left out" if noise["mode"] == "drop" else "down-weighted")
    return (f"refitted on all {r['rows']:,} labelled rows (+{r['holdout_rows_added']:,} holdout rows{flagged}): "
            f"best {r['best_model']}{thr}{'; ' + where if where else ''}",
            {"fit_seconds": r["fit_seconds"], "threshold": r["threshold"]})


def register(result: dict[str, Any]) -> Note:
    role = "champion" if result["is_champion"] else "not champion"
    return f"registered version {result['model_version']} ({role})", None


def explain(result: dict[str, Any]) -> Note:
    text = result["summary"]
    return f"{text['by']} summary" + (f" (LLM failed: {text['fallback']})" if text.get("fallback") else ""), None


def report(result: dict[str, Any]) -> Note:
    return str(result.get("report_path", "")), None
