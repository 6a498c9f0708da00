"""All Poise configuration in one place, read from `POISE_*` environment variables.

Defaults are embedded: everything lives under one home folder (`./.poise`), with a
SQLite job database and a SQLite MLflow store, so `poise train` needs no server.
"""

from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from poise.agents.llm import LLMConfig
    from poise.registry.file_store import FileStore


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POISE_", extra="ignore")

    home: Path = Field(Path(".poise"), description="Folder for the database, MLflow store and job files.")
    database_url: str | None = Field(None, description="SQLAlchemy URL of the job database; default SQLite in home.")
    mlflow_tracking_uri: str | None = Field(None, description="MLflow tracking URI; default SQLite store in home.")
    mlflow_registry_uri: str | None = Field(None, description="MLflow registry URI; default the tracking URI.")
    mlflow_artifact_root: str | None = Field(None, description="Artifact location for new experiments; default home/mlartifacts.")
    mlflow_ui_read_only_uri: str | None = Field(None, description=(
        "Store URI the MLflow UI (`poise mlflow`, `serve --mlflow-ui`) reads through: a read-only connection, e.g. "
        "a PostgreSQL role with SELECT only. Default: Poise's SQLite store opened read-only; required otherwise."))
    time_limit: int = Field(120, ge=5, le=86_400, description="Default AutoGluon time budget in seconds.")
    presets: str = Field("medium_quality", description="Default AutoGluon presets.")
    num_cpus: int | None = Field(None, ge=1, description="CPUs AutoGluon may use; default all.")
    max_file_bytes: int = Field(2_000_000_000, ge=1, description="Largest input file accepted.")
    memory_budget_bytes: int = Field(2_000_000_000, ge=1, description=(
        "Memory a job's table may take in pandas; a bigger Parquet table is read out of core and trained on an "
        "imbalance-aware sample (agents/data_engineering/large_tables.py)."))
    ray_address: str | None = Field(None, description=(
        "Ray cluster (e.g. ray://head:10001 or head:6379) jobs fit bagged folds on and `poise predict` scores Parquet "
        "on (pipelines/cluster.py); default none: everything runs in the worker's process."))
    s3_uri: str | None = Field(None, description=(
        "s3://bucket/prefix where the home's folders are mirrored (uploads/, checks/<id>/, and jobs/<id>/ with the "
        "fold models of a cluster fit; registry/file_store.py), reached with the standard AWS variables "
        "(AWS_ENDPOINT_URL for an S3-compatible server); default none: the Ray nodes share the Poise home as one "
        "filesystem, and folders are mirrored through a remote MLflow artifact root, if any."))
    holdout_fraction: float = Field(0.2, gt=0.05, lt=0.5, description="Share of rows kept as untouched holdout.")
    seed: int = 0
    data_dir: Path | None = Field(None, description="Folder the API may read job data from by path; default home/data.")
    sql_sources: dict[str, str] = Field(default_factory=dict, description=(
        "Named SQLAlchemy URLs jobs may query (JSON): PostgreSQL or SQLite, queried read-only."))
    sql_timeout: float = Field(300.0, gt=0, le=86_400, description=(
        "Seconds one query of a SQL source may run before it is cancelled (statement timeout)."))
    upload_max_bytes: int = Field(200_000_000, ge=1, description="Largest upload the API accepts.")
    request_max_bytes: int = Field(20_000_000, ge=1, description=(
        "Largest request body of every other API route (JSON, a CSV to /predict); a bigger one is answered "
        "413 before it is read."))
    table_max_rows: int = Field(5_000_000, ge=1, description="Most rows in an uploaded or queried table.")
    table_max_columns: int = Field(2_000, ge=1, description="Most columns in an uploaded or queried table.")
    cors_origins: list[str] = Field(default_factory=list, description=(
        "Origins (scheme://host:port) whose pages may call the API and the UI from a browser; default none (JSON)."))
    ui_open: bool = Field(False, description="Serve the web UI without signing in (loopback only; see ui/signin.py).")
    predict_max_rows: int = Field(100_000, ge=1, description="Most rows in one /predict request.")
    llm_base_url: str | None = Field(None, description="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8080/v1.")
    llm_model: str | None = Field(None, description="Model name; the LLM planner is used only when this is set.")
    llm_api_key: str | None = Field(None, description="API key; falls back to OPENAI_API_KEY.")
    llm_timeout: float = Field(60.0, gt=0, description="Seconds per LLM request.")
    llm_max_retries: int = Field(1, ge=0, le=5, description="Retries of a failed LLM request.")

    @field_validator("llm_base_url", "llm_model", "llm_api_key", "database_url", "mlflow_tracking_uri",
                     "mlflow_registry_uri", "mlflow_artifact_root", "mlflow_ui_read_only_uri", "ray_address", "s3_uri",
                     mode="before")
    @classmethod
    def _empty_is_unset(cls, value: str | None) -> str | None:
        """`POISE_LLM_MODEL=` (e.g. an unset compose variable) means "not configured", not ""."""
        return value or None

    @field_validator("s3_uri")
    @classmethod
    def _s3_uri(cls, value: str | None) -> str | None:
        if value and not value.startswith("s3://"):
            raise ValueError(f"must start with s3:// (got {value[:40]!r})")
        return value

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @property
    def llm_configured(self) -> bool:
        return bool(self.llm_model)

    @property
    def llm_config(self) -> "LLMConfig | None":
        """The LLM endpoint as `agents.llm` takes it, or None when no model is set."""
        if not self.llm_configured:
            return None
        from poise.agents.llm import LLMConfig  # the OpenAI client's import is paid only when an LLM is used

        return LLMConfig(model=self.llm_model, base_url=self.llm_base_url, api_key=self.llm_api_key,
                         timeout=self.llm_timeout, max_retries=self.llm_max_retries)

    @cached_property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'poise.db'}"

    @cached_property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.home / 'mlflow.db'}"

    @cached_property
    def registry_uri(self) -> str:
        return self.mlflow_registry_uri or self.tracking_uri

    @property
    def mlflow_ui_store_uri(self) -> str:
        """A read-only view of the tracking and registry store for the MLflow UI (see `mlflow_ui_read_only_uri`)."""
        if self.mlflow_ui_read_only_uri:
            return self.mlflow_ui_read_only_uri
        if self.registry_uri != self.tracking_uri or not self.tracking_uri.startswith("sqlite:///"):
            raise ValueError("the MLflow UI reads the store read-only: set POISE_MLFLOW_UI_READ_ONLY_URI to a "
                             "read-only connection of the tracking store (e.g. a PostgreSQL role with SELECT only)")
        path = self.tracking_uri.removeprefix("sqlite:///")
        return f"sqlite:///file:{path}?mode=ro&uri=true"

    @cached_property
    def artifact_root(self) -> str:
        return self.mlflow_artifact_root or (self.home / "mlartifacts").as_uri()

    @cached_property
    def data_folder(self) -> Path:
        return (self.data_dir or self.home / "data").expanduser().resolve()

    @cached_property
    def uploads_folder(self) -> Path:
        return self.home / "uploads"

    @cached_property
    def checkpoint_path(self) -> Path:
        """The LangGraph checkpoints of a SQLite job database (on PostgreSQL they are in it: pipelines/checkpoints)."""
        return self.home / "checkpoints.sqlite"

    @cached_property
    def file_store(self) -> "FileStore":
        """Where uploads, job and check folders are mirrored so processes on other machines find them
        (registry/file_store.py): `POISE_S3_URI`, else `<artifact root>/poise-home` when MLflow's artifacts are
        remote (e.g. the server's `mlflow-artifacts:` proxy); with a local artifact root, nowhere."""
        from poise.registry.file_store import FileStore

        if self.s3_uri:
            root = self.s3_uri.rstrip("/")
        elif urlparse(self.artifact_root).scheme not in ("", "file"):
            root = f"{self.artifact_root.rstrip('/')}/poise-home"
        else:
            root = None
        return FileStore(self.home, root, self.tracking_uri)

    def upload_of(self, path: str | Path) -> Path | None:
        """The upload folder (`uploads/<id>/`, one per upload or query) that holds `path`, else None."""
        path = Path(path)
        if not path.is_relative_to(self.uploads_folder) or path == self.uploads_folder:
            return None
        return self.uploads_folder / path.relative_to(self.uploads_folder).parts[0]

    def job_dir(self, job_id: str) -> Path:
        return self.home / "jobs" / job_id

    def check_dir(self, check_id: str) -> Path:
        return self.home / "checks" / check_id

    def ensure_home(self) -> None:
        (self.home / "jobs").mkdir(parents=True, exist_ok=True)
