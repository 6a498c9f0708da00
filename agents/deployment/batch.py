"""Batch prediction: a whole file scored by a registered version and written next to its predictions.

What `poise predict NAME DATA --out FILE` runs. Unlike the API it loads the version for one call, reads
the file with the missing-value tokens the model was trained with, and writes the result atomically
(a `.partial` file renamed into place), so a failed run never leaves half a file behind.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from mlflow.exceptions import MlflowException

from poise.agents.data_engineering.loading import load_table
from poise.agents.deployment.signature import predict_table
from poise.agents.errors import SpecError
from poise.registry import tracking


def batch_predict(settings, name: str, data, out, version: str | None = None) -> tuple[Path, int, str]:
    """Predict a whole table with the champion (or `version`) and write it next to the predictions."""
    client = tracking.configure(settings.tracking_uri, settings.registry_uri)
    used = version or tracking.champion_version(client, name)
    if used is None:
        from poise.agents.summary import no_champion_error

        raise no_champion_error(settings, client, name, predict_with=(str(data), str(out)))
    try:
        model = tracking.load_model(name, used)
    except MlflowException as error:
        raise SpecError(f"cannot load model '{name}' v{used}: {str(error)[:200]}") from None
    # the file is read with the missing-value tokens the model was trained with
    table, _ = load_table(data, max_bytes=settings.max_file_bytes, na_values=model.model_config.get("na_values") or [])
    output = predict_table(model, table)
    result = pd.concat([table.reset_index(drop=True), output.add_prefix("predicted_")], axis=1)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    if out.suffix.lower() in (".parquet", ".pq"):
        result.to_parquet(partial, index=False)
    else:
        result.to_csv(partial, index=False)
    partial.replace(out)
    return out, len(result), used
