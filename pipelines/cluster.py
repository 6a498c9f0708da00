"""The Ray cluster jobs fit on and batch predictions score on, when `POISE_RAY_ADDRESS` names one.

Without an address nothing changes: AutoGluon fits bagged folds one after another in the job's process
(`sequential_local`, the way every default in agents/automl.py was measured) and `poise predict` reads a Parquet
source in bounded chunks. With one, the process joins the cluster as a Ray driver and

- AutoGluon runs in its own distributed mode (`AG_DISTRIBUTED_MODE`): each bagged fold is a Ray task placed on any
  node. A fold fitted on another node comes back through `AG_MODEL_SYNC_PATH`: `jobs/<id>/autogluon-sync/`, beside
  the job's mirrored folder, in the bucket `POISE_S3_URI` names (reached with the standard AWS variables, e.g.
  `AWS_ENDPOINT_URL` for an S3-compatible server), or, with no bucket, through a folder every node mounts at the
  same path (`AG_DISTRIBUTED_FILESYSTEM=NFS`).
- A fold whose node dies is rerun by Ray on a live node (Ray's task retries); `ClusterFit` records the fold tasks
  that failed and the nodes that left during the fit, and the train step's note says so.
- `poise predict` on Parquet runs as Ray Data `map_batches` over the same scorer, in the same row order
  (agents/deployment/batch.py), and so does a drift check's pass over every row of a window read out of core
  (pipelines/monitoring/windows.py).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from poise.registry.file_store import CLUSTER_SYNC

SEQUENTIAL = "sequential_local"
DISTRIBUTED = "parallel_distributed"
FOLD_TASK = "_ray_fit"  # AutoGluon's Ray task that fits one bagged fold
DISTRIBUTED_ENV = ("AG_DISTRIBUTED_MODE", "AG_MODEL_SYNC_PATH", "AG_DISTRIBUTED_FILESYSTEM")


def connect(settings) -> bool:
    """Join the configured cluster once per process; False when none is configured (everything stays local)."""
    if not settings.ray_address:
        return False
    import ray

    if ray.is_initialized() and not _connected_to(settings.ray_address):
        ray.shutdown()  # a Ray instance of this process's own (e.g. started by a library), not the cluster
    if not ray.is_initialized():
        _check_reachable(settings.ray_address)
        ray.init(address=settings.ray_address, logging_level=logging.ERROR, log_to_driver=False,
                 configure_logging=False)
    return True


def _host_port(address: str) -> tuple[str, int] | None:
    """`host:port` (or `ray://host:port`) as a pair; None for a form Ray resolves itself ("auto")."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


def _connected_to(address: str) -> bool:
    """Whether this process's Ray connection is the cluster at `address` (an address Ray resolves itself, or a
    `ray://` client address, counts)."""
    import ray

    target = _host_port(address)
    if address.startswith("ray://") or target is None:
        return True
    gcs_host, _, gcs_port = ray.get_runtime_context().gcs_address.rpartition(":")
    return gcs_port == str(target[1]) and socket.gethostbyname(gcs_host) == socket.gethostbyname(target[0])


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail at once at an address nobody answers at (Ray itself retries for minutes before it gives up). A
    ConnectionError, not a PoiseError: the job fails rather than being rejected, since its input is fine."""
    target = _host_port(address)
    if target is None:
        return
    try:
        socket.create_connection(target, timeout=timeout).close()
    except OSError as error:
        raise ConnectionError(f"cannot reach the Ray cluster at {address} (POISE_RAY_ADDRESS): "
                              f"{error.strerror or error}") from None


def alive_nodes() -> dict[str, str]:
    """The cluster's live nodes: id -> address."""
    import ray

    return {node["NodeID"]: node["NodeManagerAddress"] for node in ray.nodes() if node["Alive"]}


def failed_fold_tasks(since_ms: float) -> dict[str, int]:
    """Fold tasks that failed since `since_ms` (a fold dies this way with its node or its worker process; AutoGluon
    returns its own errors instead of failing the task), counted per node; {} when the cluster's state API (its
    dashboard) is not running. Ray reruns such a task on a live node."""
    from ray.util.state import list_tasks

    try:
        tasks = list_tasks(filters=[("func_or_class_name", "=", FOLD_TASK), ("state", "=", "FAILED")], detail=True,
                           limit=10_000, raise_on_missing_output=False)
    except Exception:  # the state API raises its own error types when the dashboard is unreachable
        return {}
    return dict(Counter(task.node_id for task in tasks if (task.creation_time_ms or 0) >= since_ms))


@dataclass
class ClusterFit:
    """Where a fit ran: its fold-fitting strategy, and the cluster's nodes before and after it."""

    fold_fitting: str = SEQUENTIAL
    nodes_at_start: dict[str, str] = field(default_factory=dict)
    nodes_at_end: dict[str, str] = field(default_factory=dict)
    failed_folds: dict[str, int] = field(default_factory=dict)
    model_sync: str | None = None

    @property
    def nodes_lost(self) -> list[str]:
        return sorted(node for node in self.nodes_at_start if node not in self.nodes_at_end)

    def summary(self, bagged: bool) -> dict:
        """JSON-able, for the fit summary and the train step's note. Only bagged folds are spread over the cluster:
        an unbagged fit on a cluster ran in the driver's process, and says so."""
        if self.fold_fitting == SEQUENTIAL:
            return {"cluster": None}
        return {"cluster": {"nodes": len(self.nodes_at_start), "nodes_lost": self.nodes_lost, "bagged": bagged,
                            "failed_folds": self.failed_folds,
                            "fold_fitting": self.fold_fitting, "model_sync": self.model_sync}}


@contextmanager
def cluster_fit(settings, job_id: str) -> Iterator[ClusterFit]:
    """The fit inside runs AutoGluon's bagged folds across the cluster (or locally, one after another, without one).

    AutoGluon reads its distributed mode from the environment while it fits; the variables are set for the fit
    only and restored after it."""
    if not connect(settings):
        yield ClusterFit()
        return
    _patch_autogluon_ray_resource_manager()
    sync = f"{settings.file_store.uri(settings.job_dir(job_id))}/{CLUSTER_SYNC}/" if settings.s3_uri else None
    shared = {"AG_MODEL_SYNC_PATH": sync} if sync else {"AG_DISTRIBUTED_FILESYSTEM": "NFS"}
    env = {"AG_DISTRIBUTED_MODE": "1"} | shared
    saved = {name: os.environ.get(name) for name in DISTRIBUTED_ENV}
    os.environ.update(env)
    fit = ClusterFit(fold_fitting=DISTRIBUTED, nodes_at_start=alive_nodes(), model_sync=sync or "shared filesystem")
    started_ms = time.time() * 1000
    try:
        yield fit
    finally:
        fit.nodes_at_end = alive_nodes()
        fit.failed_folds = failed_fold_tasks(since_ms=started_ms)
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _patch_autogluon_ray_resource_manager() -> None:
    """AutoGluon 1.6.3's `TabularPredictor.fit` asks the resource manager of distributed mode for
    `get_gpu_count_torch`, which only the local one has: every distributed fit fails at once with AttributeError.
    The cluster's GPU count is what that call means there (the same answer `RayResourceManager.get_gpu_count`
    gives)."""
    from autogluon.common.utils.resource_utils import RayResourceManager

    if not hasattr(RayResourceManager, "get_gpu_count_torch"):
        RayResourceManager.get_gpu_count_torch = staticmethod(
            lambda cuda_only=False: RayResourceManager.get_gpu_count())


def describe(cluster: dict | None) -> str | None:
    """One sentence on where a fit ran, for the train step's note; None for a local fit."""
    if not cluster:
        return None
    if not cluster["bagged"]:
        return (f"not bagged, so fitted in this worker's process although a Ray cluster of {cluster['nodes']} "
                "node(s) is configured (only bagged folds are spread over the cluster)")
    text = (f"fitted on a Ray cluster of {cluster['nodes']} node{'s' if cluster['nodes'] != 1 else ''} "
            f"(AutoGluon's distributed bagging, fold models synced through {cluster['model_sync']})")
    failed = cluster["failed_folds"]
    if hurt := sorted(set(failed) | set(cluster["nodes_lost"])):
        folds = sum(failed.values())
        text += (f"; during the fit {folds} fold task{'s' if folds != 1 else ''} failed on "
                 + ", ".join(f"node {node[:12]}" + (" (it left the cluster)" if node in cluster["nodes_lost"] else "")
                             for node in hurt)
                 + " and Ray reran them on the nodes still alive")
    return text
