"""Container pool: Docker lifecycle behind a :class:`Backend` seam, shared state in Redis."""

from ..storage.records import ContainerRecord
from .backend import LABEL, Backend, ContainerInfo, DockerBackend
from .manager import ContainerPool, Lease, PoolStats
from .spec import ContainerSpec, runner_env, runner_redis_url, spec_for

__all__ = [
    "LABEL",
    "Backend",
    "ContainerInfo",
    "DockerBackend",
    "ContainerPool",
    "Lease",
    "PoolStats",
    "ContainerRecord",
    "ContainerSpec",
    "runner_env",
    "runner_redis_url",
    "spec_for",
]
