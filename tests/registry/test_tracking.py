"""The MLflow layer against a real MLflow store (SQLite, artifacts in the Poise home)."""

from __future__ import annotations

import mlflow
import pandas as pd

from poise.registry import tracking


class Constant(mlflow.pyfunc.PythonModel):
    """A model that answers one value, to tell loaded models apart."""

    def __init__(self, value: str):
        self.value = value

    def predict(self, context, model_input, params=None):
        return [self.value] * len(model_input)


def _register(settings, name: str, value: str) -> str:
    client = tracking.configure(settings.tracking_uri, settings.registry_uri)
    mlflow.set_experiment(name)
    with mlflow.start_run():
        mlflow.pyfunc.log_model(name="model", python_model=Constant(value), registered_model_name=name,
                                input_example=pd.DataFrame({"x": [1.0]}))
    return str(max(int(v.version) for v in client.search_model_versions(f"name = '{name}'")))


def test_a_loaded_version_is_kept_and_a_recreated_model_is_loaded_afresh(settings):
    rows = pd.DataFrame({"x": [1.0, 2.0]})
    version = _register(settings, "kept", "first")
    loaded = tracking.load_model("kept", version)
    assert tracking.load_model("kept", version) is loaded  # the second check skips the load
    assert list(loaded.predict(rows)) == ["first", "first"]

    # delete the model and register another under the same name: MLflow hands out version 1 again
    tracking.configure(settings.tracking_uri, settings.registry_uri).delete_registered_model("kept")
    assert _register(settings, "kept", "second") == version
    reloaded = tracking.load_model("kept", version)
    assert reloaded is not loaded
    assert list(reloaded.predict(rows)) == ["second", "second"]
