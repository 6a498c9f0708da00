"""Result summaries a user can trust: a deterministic one, a check for the LLM's, and the
quality gate's verdict with what to do next.

An LLM may explain a result in friendlier words, but it must not invent numbers. Every
number in its text has to match a number in the job's metrics record (at the precision
written, percentages included); otherwise Poise shows the deterministic summary instead.
The chat applies the same check to every free-text reply (`ground_text`): a sentence
quoting a number that no record in scope holds is not shown, and a sentence that states a
result (`claims_results`) may quote only the numbers of a job's or the registry's record.

A version the gate refuses is registered without becoming champion; when no version is
champion at all, `poise predict NAME` and the API's predict have nothing to serve. So a
refusal always comes with its reason and exact next steps, computed from the job's record
(`gate_outcome`, `next_steps`): a longer budget, an objective that fits what went wrong,
predicting with the refused version anyway, or promoting it with a recorded reason (only the
last two when no fit on that table can pass: its schema or label set differs from the
champion's, or the champion cannot be compared with it). The CLI, the API, the chat and
the web UI all show these same steps.
"""

from __future__ import annotations

import math
import re
import shlex
from typing import Any

from poise.agents.job_spec import MAX_TIME_LIMIT, job_options, train_arguments

# A number standing on its own, not digits inside a name, a path or a date ("pytest-7", "/runs/3/", "-01-01"),
# so digits in a file path the LLM was shown neither ground nor count as its claims.
NUMBER = re.compile(r"(?<![\w.\-+/\\])[-+]?\d+(?:[.,]\d+)?(?:\s?%)?")


def facts(state: dict[str, Any]) -> dict[str, Any]:
    """The numbers and names a summary may use: the metrics record of the job."""
    metrics, gate = state["metrics"], state["gate"]
    record = {
        "model": state["spec"]["name"], "version": state.get("model_version"), "champion": state.get("is_champion"),
        "positive_class": metrics["positive_class"], "holdout_rows": metrics["n_holdout"],
        "threshold": metrics.get("decision_threshold"), "gate": gate["reason"],
        "imbalance_ratio": state["profile"]["target"]["imbalance_ratio"],
        "train_rows": state["split"]["summary"]["train_rows"],
    }
    for key in ("f1", "macro_f1", "balanced_accuracy", "pr_auc", "roc_auc", "minority_recall", "minority_precision",
                "expected_cost", "accuracy"):
        if key in metrics:
            record[key] = metrics[key]
    record["per_class"] = metrics["per_class"]
    record["confusion_matrix"] = metrics["confusion_matrix"]
    record["baselines"] = {name: {k: v for k, v in values.items() if isinstance(v, float)}
                           for name, values in state["baselines"].items()}
    record["dropped_columns"] = [d["column"] for d in state["profile"]["dropped"]]
    if sample := (state.get("load_info") or {}).get("sample"):  # a table larger than memory: the ratio is the table's
        counts = sample["class_rows"].values()
        record["table_rows"], record["imbalance_ratio"] = sample["rows"], max(counts) / min(counts)
    refit = state.get("refit") or {}
    if refit.get("done"):
        record["refit_rows"], record["served_threshold"] = refit["rows"], refit["threshold"]
    if overlap := (state["split"].get("diagnostics") or {}).get("class_overlap"):
        record["class_overlap"] = {key: overlap[key] for key in ("level", "minority_in_majority_regions", "sentence")}
    if audit := (state.get("label_noise") or {}).get("summary"):
        record["label_noise"] = {key: audit.get(key) for key in ("suspects", "rows", "sentence", "applied")}
        if audit.get("suspects") is not None:
            record["label_noise"]["share"] = audit["suspects"] / max(audit["rows"], 1)
    version = state.get("model_version")
    champion = version if state.get("is_champion") else gate_champion(gate)
    outcome = gate_outcome(state["spec"], gate, metrics, version, champion)
    record["gate_passed"] = outcome["passed"]
    record["gate_explanation"] = outcome["explanation"]
    record["next_steps"] = record_steps(outcome["next_steps"])
    return record


def deterministic_summary(record: dict[str, Any]) -> str:
    positive = record["positive_class"]
    primary = next(k for k in ("expected_cost", "f1", "macro_f1", "balanced_accuracy") if k in record)
    lines = [
        f"Model {record['model']} v{record['version']} was trained on "
        + (f"a sample of {record['train_rows']} of the table's {record['table_rows']} rows, weighted back to its "
           "class prior " if record.get("table_rows") else f"{record['train_rows']} rows ")
        + f"(imbalance ratio {record['imbalance_ratio']:.1f}) and scored on {record['holdout_rows']} untouched holdout "
        "rows.",
        f"It finds {record['minority_recall']:.0%} of the minority class with {record['minority_precision']:.0%} precision; "
        f"macro-F1 {record['macro_f1']:.3f}, balanced accuracy {record['balanced_accuracy']:.3f}, "
        f"PR-AUC {record['pr_auc']:.3f} (positive class '{positive}').",
    ]
    if record.get("threshold") is not None:
        lines.append(f"Decision threshold: {record['threshold']:.3f} (calibrated on validation data).")
    if record.get("refit_rows"):
        served = record["served_threshold"]
        lines.append(f"The version registered was then refitted on all {record['refit_rows']} labelled rows"
                     + (f" (its threshold {served:.3f}, from its own out-of-fold or validation predictions)."
                        if served is not None else "."))
    for diagnostic in ("class_overlap", "label_noise"):
        if found := record.get(diagnostic):
            applied = f" {_sentence(found['applied'])}" if found.get("applied") else ""
            lines.append(_sentence(found["sentence"]) + applied)
    lines.append(f"Quality gate on {primary}: {record['gate']}. "
                 + ("It is now the champion." if record["champion"]
                    else record.get("gate_explanation") or "The champion is unchanged."))
    return with_next_steps(" ".join(lines), record)


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith(".") else ".")


def with_next_steps(text: str, record: dict[str, Any]) -> str:
    """`text` followed by what the gate's refusal means and the record's next steps, word for word (an LLM's
    summary never restates commands); unchanged when there are no steps or they are already there."""
    steps = [{"text": step["do"], "command": step["command"]} for step in record.get("next_steps") or []]
    if not steps or all(step["command"] in text for step in steps):
        return text
    explanation = record.get("gate_explanation") or ""
    lead = "" if explanation in text else explanation + "\n"
    return text.rstrip() + "\n\n" + lead + steps_text(steps)


def _allowed_numbers(value: Any, out: list[float]) -> None:
    if isinstance(value, bool):
        return
    if isinstance(value, (int, float)):
        out.append(float(value))
    elif isinstance(value, dict):
        for item in value.values():
            _allowed_numbers(item, out)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _allowed_numbers(item, out)
    elif isinstance(value, str):
        out.extend(float(m.replace(",", ".").rstrip("% ")) for m in NUMBER.findall(value) if not m.endswith("%"))


def unsupported_numbers(text: str, record: dict[str, Any]) -> list[str]:
    """Numbers in `text` that match nothing in `record` at the precision they are written."""
    allowed: list[float] = []
    _allowed_numbers(record, allowed)
    wrong = []
    for token in NUMBER.findall(text):
        raw = token.replace(" ", "")
        percent = raw.endswith("%")
        number_text = raw.rstrip("%").replace(",", ".")
        value = float(number_text)
        decimals = len(number_text.split(".")[1]) if "." in number_text else 0
        candidates = [v * 100 for v in allowed] if percent else allowed
        if percent:
            candidates = candidates + allowed  # "20 %" may also quote a count or a ratio written as percent
        tolerance = 0.5 * 10 ** (-decimals) + 1e-9
        if not any(math.isclose(value, c, abs_tol=tolerance) for c in candidates):
            wrong.append(token.strip())
    return wrong


# --- free text in chat: results only with a record to stand on --------------------------

_METRIC = (r"(?:macro[\s-]?f1|f[\s-]?1(?:[\s-]?score)?|recall|precision|accuracy|pr[\s-]?auc|roc[\s-]?auc|auc"
           r"|average\s+precision|expected\s+cost|log[\s-]?loss|mcc|kappa|score)")
_SCORE = r"(?<![\w.])(?:0?[.,]\d+|1[.,]0+|\d{1,3}(?:[.,]\d+)?\s?%)"  # a ratio or a percentage
_RESULT_CLAIMS = [
    # a metric next to a score: "macro-F1 of 0.991", "recall 98.7 %", "0.95 precision"
    re.compile(rf"\b{_METRIC}\b.*{_SCORE}|{_SCORE}.*\b{_METRIC}\b", re.I),
    # a reached score or a finished model: "achieved", "was trained", "training finished", "is now champion"
    re.compile(r"\b(?:achiev|reach|scor|attain|obtain)(?:ed|es)\b.*(?:\d|\b" + _METRIC + r"\b)", re.I),
    re.compile(r"\b(?:(?:has|have|had)\s+been|was|were|(?:is|are)\s+now|(?:i|we)(?:\s+have|'ve)?)\s+"
               r"(?:successfully\s+)?(?:trained|fitted|fit|registered|deployed|promoted|evaluated|tested)\b", re.I),
    re.compile(r"\b(?:training|the\s+(?:job|fit|run))\s+(?:is\s+|has\s+)?(?:now\s+)?"
               r"(?:complete|completed|finished|done|succeeded)\b", re.I),
    re.compile(r"\b(?:became|becomes|is\s+now)\s+(?:the\s+)?champion\b|\b(?:model|job)\s+is\s+ready\b", re.I),
    re.compile(r"\b(?:finds|found|catches|caught|detects|detected|identifies|identified|flags|flagged)\b.*"
               r"\d+(?:[.,]\d+)?\s?%", re.I),
]
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def claims_results(sentence: str) -> bool:
    """Whether a sentence states a training result (a metric with a score, a reached score, a trained, registered
    or promoted model). Questions claim nothing. A heuristic on the wording; the numbers are checked separately."""
    sentence = sentence.strip()
    return bool(sentence) and not sentence.endswith("?") and any(p.search(sentence) for p in _RESULT_CLAIMS)


def ground_text(text: str, results: list[Any], context: list[Any]) -> tuple[str, list[str]]:
    """`text` without each sentence that quotes a number found in no record, and the numbers removed.

    A sentence that states a result (`claims_results`) may quote only numbers of `results` (metrics records of
    jobs, the registry); any other sentence also those of `context` (tool data, the user's own words). Numbers
    are matched at the precision written, as `unsupported_numbers` does for an LLM summary."""
    kept_lines, removed = [], []
    claimed, everything = {"results": results}, {"results": results, "context": context}
    for line in text.splitlines():
        kept = []
        for sentence in _SENTENCE_END.split(line.strip()):
            wrong = unsupported_numbers(sentence, claimed if claims_results(sentence) else everything)
            if wrong:
                removed += wrong
            elif sentence:
                kept.append(sentence)
        if kept or not line.strip():
            kept_lines.append(" ".join(kept))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(kept_lines)).strip(), removed


# --- the quality gate: why it refused, and what to do next ------------------------------

BUDGET_FACTOR = 3  # a retry gets this many times the budget that was not enough
NEW_DATA = "NEW_DATA.csv"  # stands for the user's table in a suggested `poise predict`


def gate_champion(gate: dict[str, Any]) -> str | None:
    """The version that was champion when the gate ran (None: there was none)."""
    if "champion" in gate:
        return gate["champion"]
    compared = str(gate.get("compared_with") or "")  # verdicts recorded before `champion` was
    return compared.removeprefix("champion v") if compared.startswith("champion v") else None


def gate_outcome(spec: dict[str, Any], gate: dict[str, Any], metrics: dict[str, Any], version: str | None,
                 champion: str | None, promotion: dict[str, Any] | None = None) -> dict[str, Any]:
    """A registered version's gate verdict, what it means now (`champion`: the model's champion now) and,
    when the gate refused it and nobody has promoted it since, the exact next steps.

    `promotion` is `registry.tracking.promotion_record` of the version: who promoted it by hand, when, why."""
    name = spec["name"]
    version = None if version is None else str(version)
    passed = bool(gate.get("passed"))
    is_champion = version is not None and champion == version
    steps: list[dict[str, Any]] = []
    if not spec.get("promote", True):
        explanation = (f"v{version} {'passed' if passed else 'did not pass'} the gate; whether it becomes champion "
                       "is decided by the drift check that trained it.")
    elif passed:
        explanation = (f"v{version} passed the gate and is the champion." if is_champion else
                       f"v{version} passed the gate; the champion is now v{champion}." if champion else
                       f"v{version} passed the gate, but no version of '{name}' is champion now.")
    elif is_champion:
        explanation = f"The gate refused v{version}, but it was promoted by hand" + _promotion_words(promotion) + "."
    else:
        steps = next_steps(spec, gate, metrics, version, champion)
        explanation = (f"v{champion} stays champion and keeps serving predictions." if champion else
                       f"No version of '{name}' is champion, so `poise predict {name}` and the API's predict "
                       "endpoint have nothing to serve until one is promoted.")
        if gate.get("changes"):
            explanation += (f" The data of v{version} differs from that of champion v{gate['champion']} "
                            f"({'; '.join(gate['changes'])}): such a change needs an admin's decision, so no model "
                            "trained on this table can pass the gate.")
        elif _champion_could_not_score(gate):
            explanation += (" The champion could not be compared with it (the gate's reason says why), so no model "
                            "trained on this table can pass the gate against it.")
    return {"passed": passed, "reason": gate.get("reason"), "metric": gate.get("metric"), "value": gate.get("value"),
            "compared_with": gate.get("compared_with"), "reference_value": gate.get("reference_value"),
            "version": version, "champion": champion, "is_champion": is_champion, "promotion": promotion,
            "explanation": explanation, "next_steps": steps}


def _promotion_words(promotion: dict[str, Any] | None) -> str:
    if not promotion:
        return ""
    words = f" by {promotion.get('by')}" + (f" at {promotion['at']}" if promotion.get("at") else "")
    return words + (f": {promotion['reason']}" if promotion.get("reason") else " (no reason given)")


def _champion_could_not_score(gate: dict[str, Any]) -> bool:
    """Whether the gate could not compare the version with the champion at all: a change of schema or label set,
    a champion that could not score the job's holdout, or one without a reference holdout. Another fit on the
    same table cannot pass such a gate."""
    return gate.get("reference_value") is None and str(gate.get("compared_with") or "").startswith("champion")


def next_steps(spec: dict[str, Any], gate: dict[str, Any], metrics: dict[str, Any], version: str | None,
               champion: str | None, predict_with: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    """What to do about a refused version, most promising first; each step has `action`, `text` (why),
    `command` (the CLI line) and `api` (the REST call, or None when the API has none). `predict_with` is the
    (table, output) of a `poise predict` that just failed, to repeat in its suggested command."""
    name = spec["name"]
    steps: list[dict[str, Any]] = []
    # another fit cannot help when the champion cannot even be compared; without the job's spec there is no command
    if not _champion_could_not_score(gate) and "data" in spec and "time_limit" in spec:
        positive = metrics.get("positive_class")
        positive_f1 = (metrics.get("per_class") or {}).get(str(positive), {}).get("f1")
        objective = spec.get("objective", "f1")
        if positive is not None and positive_f1 == 0 and objective != "balanced_accuracy":
            found_none = f"the model finds none of the '{positive}' rows of the holdout (F1 of '{positive}' is 0)"
            if objective == "cost":
                why = (f"Tuned for a miss costing {spec['cost_fn']:g} and a false alarm {spec['cost_fp']:g}, "
                       f"{found_none}. If these costs are not firm, optimise balanced accuracy, which weighs the "
                       "recall of every class equally")
            else:
                why = (f"{found_none[0].upper()}{found_none[1:]}. Balanced accuracy weighs the recall of every class "
                       f"equally, so a model that ignores '{positive}' cannot score well on it")
            steps.append(_train_step("change_objective", why, spec, objective="balanced_accuracy",
                                     cost_fn=None, cost_fp=None))
        limit = int(spec["time_limit"])
        if limit < MAX_TIME_LIMIT:
            longer = min(MAX_TIME_LIMIT, BUDGET_FACTOR * limit)
            steps.append(_train_step("longer_budget", f"Train again with a longer budget, {longer} s instead of "
                                     f"{limit} s, so AutoGluon can fit and compare more models", spec,
                                     time_limit=longer))
    if version is not None:
        table, output = predict_with or (NEW_DATA, "predictions.csv")
        keeps = f"v{champion} stays champion" if champion else "nothing becomes champion"
        steps.append({"action": "predict_with_version",
                      "text": f"Use v{version} anyway for batch predictions ({keeps}; the API serves only the "
                              "champion)",
                      "command": shlex.join(["poise", "predict", name, table, "--out", output, "--version", version]),
                      "api": None})
        reason = f"<why v{version} should serve although the gate refused it>"
        steps.append({"action": "promote",
                      "text": f"Or make v{version} the champion by hand, recording why (an admin action)",
                      "command": shlex.join(["poise", "promote", name, version, "--reason", reason]),
                      "api": {"method": "POST", "path": f"/api/v1/models/{name}/promote",
                              "body": {"version": version, "reason": reason}}})
    return steps


def _train_step(action: str, text: str, spec: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """A step that trains again: the job's own options with `changes`, as a `poise train` line and as the
    body of `POST /api/v1/jobs` (which also needs `data_path`, or the table sent to `/api/v1/jobs/upload`)."""
    options = {**spec, **changes}
    command = ["poise", "train", options["data"], *train_arguments(options)]
    body = job_options(options)
    return {"action": action, "text": text, "command": shlex.join(command),
            "api": {"method": "POST", "path": "/api/v1/jobs", "body": body}}


def facts_steps(text: str, spec: dict[str, Any], gate: dict[str, Any], metrics: dict[str, Any],
                version: str | None) -> str:
    """`with_next_steps` for a job's result (its spec, gate verdict, metrics and version) rather than its record."""
    outcome = gate_outcome(spec, gate, metrics, version, gate_champion(gate))
    record = {"gate_explanation": outcome["explanation"],
              "next_steps": record_steps(outcome["next_steps"])}
    return with_next_steps(text, record)


def record_steps(steps: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Next steps as a summary record and the LLM's tools carry them: what to do and the command, no API call."""
    return [{"do": step["text"], "command": step["command"]} for step in steps]


def steps_text(steps: list[dict[str, Any]]) -> str:
    """Numbered next steps, each with its command on its own line."""
    lines = ["Next steps:"]
    for number, step in enumerate(steps, 1):
        lines.append(f"  {number}. {step['text']}:")
        lines.append(f"     {step['command']}")
    return "\n".join(lines)


def job_gate(settings, spec: dict[str, Any], version_row, gate: dict[str, Any] | None = None) -> dict[str, Any]:
    """`gate_outcome` of a job's registered version (a `registry.models.ModelVersion` row) as things stand now:
    the model's current champion and any promotion by hand are read from the registry. `gate` is the job's
    full verdict when the caller has it (its checkpointed state); else the row's reason and promotion stand in
    (a version the job was allowed to promote was promoted exactly when it passed)."""
    from mlflow.exceptions import MlflowException

    from poise.registry import tracking

    name, version = version_row.registered_name, str(version_row.version)
    if not gate:
        gate = {"passed": bool(version_row.champion_at_registration), "reason": version_row.gate_reason}
    client = tracking.configure(settings.tracking_uri, settings.registry_uri)
    try:
        promotion = tracking.promotion_record(client.get_model_version(name, version).tags)
    except MlflowException:
        promotion = None
    return gate_outcome(spec, gate, version_row.metrics or {}, version, tracking.champion_version(client, name),
                        promotion)


def no_champion_advice(settings, client, name: str, predict_with: tuple[str, str] | None = None) -> dict[str, Any]:
    """Why `name` cannot serve from its champion, which versions exist, and what to do: `registered` (whether any
    version exists), `message` (one text naming the versions and the steps), `versions` and `next_steps`.
    `predict_with`: the (table, output) of the `poise predict` that found no champion."""
    from mlflow.exceptions import MlflowException

    from poise.registry import queries
    from poise.registry.db import session_scope

    try:
        versions = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: int(v.version))
    except MlflowException:
        versions = []
    if not versions:
        return {"registered": False, "message": f"no model named '{name}' is registered", "versions": [],
                "next_steps": []}
    listed = [{"version": str(v.version), "gate": v.tags.get("poise.gate"), "job_id": v.tags.get("poise.job_id")}
              for v in versions]
    latest = listed[-1]["version"]
    steps = None
    with session_scope(settings.db_url) as session:
        row = queries.model_version(session, name, latest)
        job = queries.get_job(session, row.job_id) if row is not None else None
        if job is not None and job.spec:
            gate = {"passed": False, "reason": row.gate_reason}
            steps = next_steps(job.spec, gate, row.metrics or {}, latest, None, predict_with)
    if steps is None:  # a version no training job of this database registered: only the registry's own steps
        steps = next_steps({"name": name}, {}, {}, latest, None, predict_with)
    described = "; ".join(f"v{v['version']}" + (f" (gate: {v['gate']})" if v["gate"] else "") for v in listed)
    message = (f"model '{name}' has no champion yet, so there is no default version to predict with. "
               f"Registered: {described}.\n" + steps_text(steps))
    return {"registered": True, "message": message, "versions": listed, "next_steps": steps}


def no_champion_error(settings, client, name: str, predict_with: tuple[str, str] | None = None):
    """The error for `name` having no champion to serve (`no_champion_advice` says why and what to do):
    `NoChampion` with its versions and next steps, or `NotFound` when no version of it is registered."""
    from poise.agents.errors import NoChampion, NotFound

    advice = no_champion_advice(settings, client, name, predict_with)
    if not advice["registered"]:
        return NotFound(advice["message"])
    return NoChampion(advice["message"], advice["versions"], advice["next_steps"])
