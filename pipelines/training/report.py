"""The job report: one Markdown page that says what was done to the data, why, and how well it did."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _cell(value: Any) -> str:
    text = str(value).replace("|", "\\|").replace("\n", " ").replace("<", "&lt;").replace(">", "&gt;")
    return text[:80]


def _cell_block(text: str) -> str:
    return text.replace("<", "&lt;").replace(">", "&gt;")


def _num(value: Any) -> str:
    return "—" if value is None else f"{value:.4f}"


def _refit_line(state: dict[str, Any]) -> str:
    refit = state.get("refit") or {"done": False, "reason": "none recorded"}
    if not refit["done"]:
        return f"not refitted on the holdout rows: {_cell(refit['reason'])}"
    return (f"registered model refitted on all {refit['rows']} labelled rows after the holdout was scored "
            f"({refit['fit_seconds']:.1f} s of a {refit['time_limit']} s limit), decision threshold "
            f"{_num(refit['threshold'])}; the holdout figures below are those of the model fitted without them")


def _diagnostic_lines(state: dict[str, Any]) -> list[str]:
    """The class overlap and the label-noise audit in the data card's words (none for regression)."""
    overlap = (state["split"].get("diagnostics") or {}).get("class_overlap")
    audit = (state.get("label_noise") or {}).get("summary")
    lines = [f"- {_cell(found['sentence'])}" for found in (overlap, audit) if found]
    if audit and audit.get("applied"):
        lines.append(f"- {_cell(audit['applied'])}")
    return lines or ["- not measured (a regression target)"]


def write_report(state: dict[str, Any], path: Path) -> Path:
    spec, profile, metrics, gate = state["spec"], state["profile"], state["metrics"], state["gate"]
    target = profile["target"]
    lines = [
        f"# Poise job report — model `{_cell(spec['name'])}` v{state['model_version']}",
        "",
        f"- Data: `{_cell(state['load_info']['source'])}` (sha256 {state['load_info']['content_hash'][:12]}), "
        f"{profile['n_rows']} rows × {profile['n_columns']} columns",
        f"- Target: `{_cell(target['name'])}` ({target['problem_type']}), imbalance ratio {target['imbalance_ratio']:.1f}",
        f"- Holdout: {metrics['n_holdout']} rows, untouched until evaluation",
        f"- Champion: {'yes' if state['is_champion'] else 'no'} — {_cell(gate['reason'])}",
        "",
        "## Summary",
        "",
        _cell_block(state["summary"]["text"]),
        f"_({'LLM' if state['summary']['by'] == 'llm' else 'built-in'} summary; every number checked against the metrics)_",
        "",
        "## Choices",
        *[f"- {_cell(reason)}" for reason in state["policy"]["reasons"]],
        *[f"- {_cell(note)}" for note in (state["fit"].get("threshold_note"), state["fit"].get("fallback")) if note],
        *[f"- dropped `{_cell(d['column'])}`: {_cell(d['reason'])}" for d in profile["dropped"]],
        f"- {_refit_line(state)}",
        "",
        "## Classes and labels",
        *_diagnostic_lines(state),
        "",
        "## Holdout metrics",
        "",
        "| metric | model | majority baseline | stratified baseline |",
        "|---|---|---|---|",
    ]
    for key in ("f1", "macro_f1", "balanced_accuracy", "pr_auc", "roc_auc", "minority_recall", "expected_cost"):
        if key in metrics:
            lines.append(f"| {key} | {_num(metrics[key])} | {_num(state['baselines']['majority'].get(key))} "
                         f"| {_num(state['baselines']['stratified'].get(key))} |")
    lines += ["", f"Decision threshold: {_num(metrics.get('decision_threshold'))}", "",
              "## Per class", "", "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
    for label, values in metrics["per_class"].items():
        lines.append(f"| {_cell(label)} | {values['precision']:.4f} | {values['recall']:.4f} "
                     f"| {values['f1']:.4f} | {values['support']} |")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
