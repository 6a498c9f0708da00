"""Poise pipelines: the LangGraph graphs, the job runner and the CLI."""

import logging
import os

# Before AutoGluon/LightGBM/MLflow are imported anywhere: OpenMP threads that spin
# while idle made one LightGBM fit 25x slower on two busy cores; MLflow's per-file
# progress bars and INFO lines drown the CLI's own progress.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
for noisy in ("mlflow", "alembic", "autogluon"):
    logging.getLogger(noisy).setLevel(logging.WARNING)
# AutoGluon logs an ERROR per fit when the optional torch is absent; Poise excludes those models.
logging.getLogger("autogluon.common.utils.resource_utils").setLevel(logging.CRITICAL)
