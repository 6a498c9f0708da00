"""The data card: every decision about the data (how it was read, profiled and split) in one document.

`data_card.json` is for programs, `data_card.md` for people; both are logged to the job's MLflow run so the
decisions stay visible and reproducible.
"""

import html
import json
import os
import re
import tempfile
from pathlib import Path


def write_data_card(profile: dict, split_summary: dict, load_info: dict, out_dir: Path,
                    diagnostics: dict | None = None) -> tuple[Path, Path]:
    """Write data_card.json and data_card.md into out_dir (atomically); return both paths. `diagnostics`: what was
    measured of the classes — `class_overlap` (`overlap.class_overlap`, at the split) and `label_noise`
    (`label_noise.audit`'s summary, once a bagged fit gave out-of-fold predictions) — the card is written again
    as each arrives."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    diagnostics = diagnostics or {}
    card = {"source": load_info, "profile": profile, "split": split_summary, "diagnostics": diagnostics}
    json_path = _write_atomically(out_dir / "data_card.json", json.dumps(card, indent=2) + "\n")
    md_path = _write_atomically(out_dir / "data_card.md",
                                _render_markdown(profile, split_summary, load_info) + _diagnostic_lines(diagnostics))
    return json_path, md_path


def _write_atomically(path: Path, text: str) -> Path:
    handle = tempfile.NamedTemporaryFile("w", encoding="utf-8", dir=path.parent, prefix=f".{path.name}.",
                                         suffix=".tmp", delete=False)
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(handle.name, path)
    except BaseException:
        Path(handle.name).unlink(missing_ok=True)
        raise
    return path


def _md(value) -> str:
    """Text safe inside a Markdown table cell: no pipes, newlines, HTML or inline markup."""
    text = html.escape(str(value), quote=False)
    text = re.sub(r"([\\`*_\[\]|])", r"\\\1", text)
    return re.sub(r"\r\n|\r|\n", " ", text)


def _render_markdown(profile: dict, split: dict, load_info: dict) -> str:
    target = profile["target"]
    source = load_info["source"]
    lines = [f"# Data card: {_md(Path(source).name)}", "",
             f"- **Source:** {_md(source)}"
             + (f" (copied from {_md(load_info['copied_from'])})" if load_info.get("copied_from") else ""),
             f"- **SHA-256:** {_md(load_info['content_hash'])}",
             f"- **Format:** {_md(load_info['format'])}"
             + (f" (delimiter {_md(repr(load_info['delimiter']))}, encoding {_md(load_info['encoding'])})"
                if load_info["format"] == "csv" else ""),
             f"- **Shape:** {profile['n_rows']} rows × {profile['n_columns']} columns, "
             f"{profile['n_duplicate_rows']} duplicate rows",
             "- **Missing values:** pandas' default tokens (empty, NA, N/A, NULL, NaN, None, n/a, null, ...)"
             + (f" and {', '.join(_md(repr(token)) for token in load_info['na_values'])}"
                if load_info.get("na_values") else ""), "",
             "## Target", "",
             f"- **Column:** {_md(target['name'])}",
             f"- **Problem type:** {target['problem_type']}",
             f"- **Rows with missing target:** {target['n_missing']}"]
    if target["class_counts"]:
        total = sum(target["class_counts"].values())
        lines += [f"- **Imbalance ratio:** {target['imbalance_ratio']:.2f} (majority {_md(target['majority_class'])}"
                  f" / minority {_md(target['minority_class'])})", "", "| Class | Rows | Share |", "|---|---:|---:|"]
        lines += [f"| {_md(label)} | {count} | {count / total:.1%} |"
                  for label, count in target["class_counts"].items()]
    if load_info.get("sample"):
        lines += _sample_lines(load_info["sample"])
    lines += ["", "## Columns", "",
              "| Column | Type | Missing | Unique | Flags | Action |", "|---|---|---:|---:|---|---|"]
    for column in profile["columns"]:
        action = "target" if column.get("role") == "target" else column["action"]
        if action == "keep" and column.get("reason"):
            action = f"keep ({_md(column['reason'].split(':')[0])})"
        lines.append(f"| {_md(column['name'])} | {column['inferred_type']} | {column['missing_share']:.1%} | "
                     f"{column['n_unique']} | {_md(', '.join(column['flags']))} | {action} |")
    lines += ["", "## Dropped columns", ""]
    lines += [f"- {_md(item['column'])}: {_md(item['reason'])}" for item in profile["dropped"]] or ["None."]
    lines += ["", "## Split", "",
              f"- **Rows used:** {split['n_rows_used']} ({split['n_missing_target_dropped']} rows without target "
              f"dropped; {split['n_duplicate_rows']} exact duplicate rows kept)",
              f"- **Train:** {split['train_rows']} rows; **holdout:** {split['holdout_rows']} rows "
              + ("(a separate table)" if split.get("holdout_source") == "given" else
                 f"(fraction {split['holdout_fraction']}, seed {split['seed']})")]
    if split["train_class_counts"]:
        lines += ["", "| Class | Train | Holdout |", "|---|---:|---:|"]
        lines += [f"| {_md(label)} | {count} | {split['holdout_class_counts'].get(label, 0)} |"
                  for label, count in split["train_class_counts"].items()]
    return "\n".join(lines) + "\n"


def _diagnostic_lines(diagnostics: dict) -> str:
    lines = []
    if overlap := diagnostics.get("class_overlap"):
        lines += ["", "## Class overlap", "", _md(overlap["sentence"]), "", f"- **Measure:** {_md(overlap['measure'])}"]
    if audit := diagnostics.get("label_noise"):
        lines += ["", "## Label noise", "", _md(audit["sentence"])]
        if audit.get("applied"):
            lines += ["", f"- **In the registered model:** {_md(audit['applied'])}"]
        if audit.get("top"):
            lines += ["", "| Training row | Given label | Likely label | Label quality |", "|---:|---|---|---:|"]
            lines += [f"| {_md(item['row_id'])} | {_md(item['given'])} | {_md(item['likely'])} | "
                      f"{item['label_quality']:.3f} |" for item in audit["top"]]
    return "\n".join(lines) + ("\n" if lines else "")


def _sample_lines(sample: dict) -> list[str]:
    """How a table larger than the memory budget was read: the figures of every row, then the sample trained on."""
    total = sum(sample["class_rows"].values())
    lines = ["", "## Sampled for training (the table is larger than the memory budget)", "",
             f"- **Every row:** {sample['rows']} rows in {sample['files']} file(s), {sample['unlabelled_rows']} "
             f"without target; each labelled row went to the holdout with probability "
             f"{sample['holdout_fraction']:.0%} (about that share of every class), scored in full",
             f"- **Trained on:** {sample['sampled_rows']} rows: every row of the minority classes, a uniform sample of "
             f"the majority, weighted (column {_md(sample['weight_column'])}) back to the table's class prior", "",
             "| Class | Rows | Share | Sampling rate | Sampled rows |", "|---|---:|---:|---:|---:|"]
    lines += [f"| {_md(label)} | {count} | {count / total:.2%} | {sample['class_sampling_rate'][label]:.4f} | "
              f"{sample['sampled_class_rows'][label]} |" for label, count in sample["class_rows"].items()]
    lines += ["", "Types and leak checks are judged on the sample; whether a column is all-null, constant or an "
              "identifier follows every row (a column the sample happened to see once per value is not an identifier).",
              "", "| Column | Missing (every row) | Distinct (approx., every row) |", "|---|---:|---:|"]
    lines += [f"| {_md(name)} | {column['missing_share']:.2%} | {column['approx_distinct']} |"
              for name, column in sample["columns"].items()]
    return lines
