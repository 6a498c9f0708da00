"""The Poise home's files in the artifact store, so the API, workers and scheduler need no shared disk.

Uploads, a job's folder (its tables, AutoGluon predictors, plots, report) and a drift check's folder are written in
the process's own Poise home as before; this store mirrors them at `Settings.file_store` (the S3-compatible
bucket of `POISE_S3_URI`, else the MLflow server's artifact proxy, `<artifact root>/poise-home`), keyed by their
path below the home: everything of a job under `jobs/<id>/`, with its cluster fit's fold models. After every step
a job pushes what the step wrote, before LangGraph checkpoints the step; a worker resuming a job another one
started (on another machine, with an empty disk) pulls the folder first, and the API fetches an upload or a report
it did not write itself. Every process must use the same home path (the image's `/var/lib/poise`), since the
checkpointed state names files by their path.

MLflow's artifact repositories do the transfers (S3, `mlflow-artifacts:` and any other scheme MLflow reads), so one
code path serves every store. With the default local artifact root there is no store: one machine, one home.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

MANIFEST = ".pushed.json"  # in a mirrored folder: size and mtime of each file as last pushed or pulled
CLUSTER_SYNC = "autogluon-sync"  # in a job's mirror: the fold models of its distributed fit (pipelines/cluster.py)


@dataclass(frozen=True)
class FileStore:
    home: Path
    root: str | None  # artifact URI the home is mirrored at; None: nothing is mirrored
    tracking_uri: str | None = None  # for `mlflow-artifacts:` roots: the MLflow server that proxies them

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def uri(self, path: Path) -> str:
        """Where `path` (below the home) is mirrored."""
        return f"{self.root.rstrip('/')}/{path.resolve().relative_to(self.home).as_posix()}"

    def push(self, folder: Path) -> int:
        """Upload the files of `folder` (below the home) that changed since it was last pushed or pulled; how many."""
        if not self.enabled or not folder.is_dir():
            return 0
        known, current = _manifest(folder), _files(folder)
        changed = [name for name, stamp in current.items() if known.get(name) != stamp]
        repository = self._repository(folder)
        for name in changed:
            parent = str(Path(name).parent)
            repository.log_artifact(str(folder / name), None if parent == "." else parent)
        if changed:
            _write_manifest(folder, current)
        return len(changed)

    def pull(self, folder: Path) -> int:
        """Download the files of `folder`'s mirror that are missing here or differ in size; how many."""
        if not self.enabled:
            return 0
        repository = self._repository(folder)
        remote = self._listing(repository, "")
        folder.mkdir(parents=True, exist_ok=True)
        local = _files(folder)
        missing = [name for name, size in remote.items() if local.get(name, (None,))[0] != size]
        for name in missing:
            if not (folder / name).resolve().is_relative_to(folder.resolve()):  # a stored name with `..` in it
                raise ValueError(f"{self.uri(folder)}: stored file {name[:100]!r} leaves its folder")
        for name in missing:  # each lands at folder/name
            repository.download_artifacts(name, dst_path=str(folder))
        if missing:
            _write_manifest(folder, _files(folder))
        return len(missing)

    def fetch(self, path: Path) -> bool:
        """Make sure the file `path` (below the home) is here, downloading it from the store; whether it is."""
        if path.is_file():
            return True
        if not self.enabled or not path.resolve().is_relative_to(self.home):
            return False
        from mlflow.exceptions import MlflowException

        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            downloaded = self._repository(path.parent).download_artifacts(path.name, dst_path=str(path.parent))
        except (MlflowException, OSError):
            return False
        return Path(downloaded).resolve() == path.resolve() and path.is_file()

    def delete(self, folder: Path) -> None:
        """Remove `folder`'s mirror (a job that ends with nothing kept); a store that refuses is logged, not raised:
        the job's outcome is recorded either way."""
        if not self.enabled:
            return
        try:
            self._repository(folder).delete_artifacts()
        except Exception as error:  # noqa: BLE001 - any store's own error type (botocore's, MLflow's, OSError)
            logger.warning("could not remove %s from the file store: %s", self.uri(folder), error)

    def _repository(self, folder: Path):
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        return get_artifact_repository(self.uri(folder), tracking_uri=self.tracking_uri)

    def _listing(self, repository, path: str) -> dict[str, int]:
        """Every stored file below `path`: name -> size."""
        found: dict[str, int] = {}
        for item in repository.list_artifacts(path or None):
            if item.is_dir and item.path == CLUSTER_SYNC:  # AutoGluon's, on the nodes; no file of the local folder
                continue
            if item.is_dir:
                found |= self._listing(repository, item.path)
            elif Path(item.path).name != MANIFEST:
                found[item.path] = item.file_size
        return found


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    """Files below `folder` but the manifest: relative name -> (size, mtime in ns)."""
    found = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != MANIFEST:
            stat = path.stat()
            found[path.relative_to(folder).as_posix()] = (stat.st_size, stat.st_mtime_ns)
    return found


def _manifest(folder: Path) -> dict[str, tuple[int, int]]:
    try:
        return {name: tuple(stamp) for name, stamp in json.loads((folder / MANIFEST).read_text()).items()}
    except (OSError, ValueError):
        return {}


def _write_manifest(folder: Path, files: dict[str, tuple[int, int]]) -> None:
    (folder / MANIFEST).write_text(json.dumps(files), encoding="utf-8")
