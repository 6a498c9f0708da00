"""The quality gate: may a newly registered version become champion, and why (or why not).

A version is always registered (so every run is reviewable), but `champion` moves
only through the gate: the first version must beat the dummy baselines on the
primary metric. A later one is judged on data its submitter chose and on data they
did not: it must beat the current champion on the job's own holdout (like for like)
and not be worse than the champion beyond chance on the champion's reference holdout
(stored when the champion was registered), by the champion's primary metric. Scored on its
own holdout alone, a model trained on a label-flipped copy of the data "beat" an
honest champion: whoever submits the data would decide the comparison. A change of
target, feature columns, feature types or label set against the champion is never
promoted by the gate: clients send the champion's columns and read its classes, so
an admin decides (`poise promote NAME VERSION --reason ...`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
from mlflow.exceptions import MlflowException

from poise.agents.deployment.signature import serving_frame
from poise.agents.drift.adaptation import compare
from poise.agents.drift.reference import LABEL, Reference
from poise.agents.evaluation import best_baseline, classification_metrics
from poise.agents.metrics import is_better, lower_is_better, primary_metric_name
from poise.registry import tracking


def score_champion(name: str, version: str, holdout: Iterable[pd.DataFrame], label: str,
                   policy: dict[str, Any]) -> dict:
    """The champion's metrics on this job's holdout (given in chunks, scored one at a time: a sampled big table's
    holdout has millions of rows), or `{"error": ...}` when it cannot score it."""
    labels, outputs = [], []
    try:
        model = tracking.load_model(name, version)
        for chunk in holdout:
            outputs.append(model.predict(serving_frame(chunk.drop(columns=[label]))))
            labels.append(chunk[label])
    except (MlflowException, KeyError, ValueError, TypeError) as error:
        return {"error": f"champion v{version} cannot score this holdout: {str(error)[:300]}"}
    output = pd.concat(outputs, ignore_index=True)
    proba = output[[c for c in output.columns if c.startswith("proba_")]]
    proba = proba.set_axis([c.removeprefix("proba_") for c in proba.columns], axis=1)
    return classification_metrics(pd.concat(labels, ignore_index=True), output["label"], proba, policy)


def _listed(names: list[str]) -> str:
    return ", ".join(map(repr, names[:10])) + (f" and {len(names) - 10} more" if len(names) > 10 else "")


def _label_set(labels: list[str]) -> str:
    return "{" + ", ".join(map(repr, sorted(labels))) + "}"


def schema_changes(meta: dict[str, Any], target: str, types: dict[str, str], classes: list[str]) -> list[str]:
    """How a challenger's table differs from the champion's (`meta`: the champion's reference meta, see
    `agents.drift.reference.reference_meta`): its target, feature columns (a renamed column is one missing and one new),
    feature types (`types`: the challenger's, as profiling inferred them) and label set. Empty when none."""
    changes = []
    if target != meta["target"]:
        changes.append(f"target changed: {target!r} vs the champion's {meta['target']!r}")
    before = meta["types"]
    missing = [column for column in before if column not in types]
    added = [column for column in types if column not in before]
    retyped = [f"{column!r} {kind} (was {before[column]})" for column, kind in types.items()
               if column in before and kind != before[column]]
    if missing:
        changes.append(f"feature column(s) missing: {_listed(missing)}")
    if added:
        changes.append(f"new feature column(s): {_listed(added)}")
    if retyped:
        changes.append(f"feature type(s) changed: {', '.join(retyped[:10])}")
    if set(classes) != set(meta["classes"]):
        changes.append(f"label set changed: {_label_set(classes)} vs the champion's {_label_set(meta['classes'])}")
    return changes


def reference_scores(data: str, reference: Reference, challenger: pd.Series, seed: int) -> dict[str, Any]:
    """Challenger and champion on the champion's reference holdout (`reference`: the champion's drift reference,
    stored with it), by the champion's primary metric and positive class, so neither the data nor the measure is
    the submitter's; `challenger`: the challenger's labels of those rows. `worse`: the challenger is worse beyond
    chance, the whole paired-bootstrap 95 % interval of the difference on the worse side.

    The champion's labels are those stored when it was judged (for a trained version its first fit's: the version
    registered was then refitted on these very rows, and scoring it now would score it on rows it learned)."""
    compared = compare(reference, reference.holdout[reference.target], reference.predictions[LABEL],
                       challenger, None, seed)
    low, high = compared["interval"]
    return {"data": data, "rows": compared["n_rows"], "metric": compared["metric"],
            "challenger": compared["challenger"], "champion": compared["champion"], "difference_interval": [low, high],
            "worse": bool(low > 0 if lower_is_better(compared["metric"]) else high < 0)}


@dataclass
class ChampionEvidence:
    """What the gate knows of the current champion against a challenger. With any `changes` nothing is scored;
    `on_holdout` (the champion's metrics on the challenger's holdout) and `reference` (`reference_scores`) are
    otherwise set, either of them `{"error": ...}` when the comparison cannot be made."""

    name: str
    version: str
    changes: list[str] = field(default_factory=list)
    on_holdout: dict[str, Any] | None = None
    reference: dict[str, Any] | None = None


def quality_gate(metrics: dict[str, Any], baselines: dict[str, dict], policy: dict[str, Any], holdout: str,
                 champion: ChampionEvidence | None = None) -> dict[str, Any]:
    """Decide whether the candidate may become champion, and say why, naming the data of every score (`holdout`:
    what the job's own holdout is called); `scores` lists them.

    With a champion the challenger passes only when its data has the champion's schema and label set, it beats
    the champion on its own holdout (strictly, as against the baselines) and it is not worse than the champion
    beyond chance on the champion's reference holdout (`reference_scores`). Chance, because that holdout is often
    small and the champion was promoted partly for scoring well on it: on 48 reference rows an honest challenger
    with F1 0.896 against 0.713 on its own 400 rows scored 0.800 against the champion's 0.842 there. A refusal
    keeps the current champion; the version is still registered, for an admin to promote if they see fit."""
    metric = primary_metric_name(policy)
    value = metrics[metric]
    own = {"data": holdout, "rows": metrics["n_holdout"], "metric": metric, "challenger": value}
    if champion is None:
        baseline_name, baseline_value = best_baseline(baselines, metric)
        passed = is_better(value, baseline_value, metric)
        return {"passed": passed, "metric": metric, "value": value, "compared_with": f"{baseline_name} baseline",
                "reference_value": baseline_value, "champion": None, "changes": [],
                "scores": [{**own, "baseline": baseline_value}],
                "reason": f"{metric} {value:.4f} {_beats(passed)} the {baseline_name} baseline ({baseline_value:.4f}) "
                          f"on the {holdout}"}
    named = f"champion v{champion.version}"
    refused = {"passed": False, "metric": metric, "value": value, "compared_with": named, "reference_value": None,
               "champion": champion.version, "changes": champion.changes, "scores": [{**own, "champion": None}]}
    if champion.changes:
        return refused | {"reason": f"{'; '.join(champion.changes)}: a change of schema or label set against "
                          f"{named} needs an admin, who can promote this version explicitly with `poise promote "
                          f"{champion.name} VERSION --reason ...`; keeping the current champion"}
    errors = [evidence["error"] for evidence in (champion.reference, champion.on_holdout)
              if evidence is not None and "error" in evidence]
    if errors:
        return refused | {"reason": "; ".join(errors) + "; keeping the current champion"}
    reference, champion_value = champion.reference, champion.on_holdout[metric]
    beats = is_better(value, champion_value, metric)
    passed = beats and not reference["worse"]
    low, high = reference["difference_interval"]
    reason = (f"{metric} {value:.4f} {_beats(beats)} {named} ({champion_value:.4f}) on the {holdout}; on the "
              f"{reference['data']} ({reference['rows']} rows) {reference['metric']} {reference['challenger']:.4f} "
              f"vs the champion's {reference['champion']:.4f} is {'worse' if reference['worse'] else 'not worse'} "
              f"beyond chance (difference 95% CI {low:+.4f} to {high:+.4f})")
    return {"passed": passed, "metric": metric, "value": value, "compared_with": named,
            "reference_value": champion_value, "champion": champion.version, "changes": [],
            "scores": [{**own, "champion": champion_value}, reference],
            "reason": reason + ("" if passed else "; keeping the current champion")}


def _beats(passed: bool) -> str:
    return "beats" if passed else "does not beat"
