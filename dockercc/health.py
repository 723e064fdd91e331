"""Health of a dockercc deployment: what ``dockercc status`` prints and what the gateway's
``GET /api/docker-cc/health`` returns.

:func:`collect_health` reads the shared state only (it never starts a pool, claims or
removes anything): it pings Redis and Docker, reads the pool registry under the key prefix
and matches each registered container with Docker's view of it and with its runner's
heartbeat. The verdict:

* ``down``: Redis or Docker cannot be reached;
* ``degraded``: both answer, but something needs attention (a container that stopped, a
  stale heartbeat, a container stuck in start-up, one whose owner process is gone, an
  orphan container with no registry entry);
* ``ok``: otherwise.

Nothing secret appears in a report: the Redis URL is shown with its password masked and no
environment or credential is read.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter
from typing import Any, Literal

from pydantic import BaseModel, Field

from . import __version__
from .budget import report as budget_report
from .config import DockerCCConfig
from .pool.backend import LABEL, ContainerInfo, DockerBackend
from .pool.manager import PoolStats
from .redaction import redact
from .storage.connection import RedisTransport
from .storage.values import now_ms

__all__ = ["Check", "ContainerHealth", "PoolCounts", "EgressStatus", "Isolation", "HealthReport",
           "collect_health"]

HealthStatus = Literal["ok", "degraded", "down"]


class Check(BaseModel):
    """One dependency: reachable or not, how fast, and what went wrong."""

    ok: bool
    detail: str = ""
    latency_ms: float | None = None


class RedisCheck(Check):
    url: str = Field(description="the Redis URL, password masked")
    key_prefix: str


class DockerCheck(Check):
    engine: str = Field(description="the Docker engine URL (default: DOCKER_HOST / local)")
    server_version: str | None = None


class ContainerHealth(BaseModel):
    """One container of the pool registry, as Redis, Docker and its runner see it."""

    id: str
    name: str
    status: str = Field(description="registry status: creating, warm, busy or stopping")
    agent: str = ""
    session: str = ""
    owner: str = ""
    owner_alive: bool = True
    docker_state: str | None = Field(
        None, description="running, exited, ... or missing; None when Docker is unreachable")
    heartbeat_age_ms: int | None = None
    age_ms: int = 0
    healthy: bool = True
    problem: str | None = None


class PoolCounts(BaseModel):
    total: int = 0
    warm: int = 0
    busy: int = 0
    creating: int = 0
    stopping: int = 0
    sessions: int = 0
    waiting: int = 0
    owners: int = 0
    quarantined: int = Field(0, description="registry records that failed validation (moved "
                             "to pool:quarantine, or awaiting it): never acted on")
    per_agent: dict[str, int] = Field(default_factory=dict)
    limits: dict[str, int] = Field(default_factory=dict)


class EgressStatus(BaseModel):
    """How the pool's containers reach the outside (from the configuration)."""

    isolated: bool = Field(description="no network of their own: only the egress proxy (the "
                                       "API and the allow-list) and Redis, over unix sockets")
    network: str = Field(description="docker.network")
    credentials_in_container: bool = Field(
        description="whether the API credentials are in the containers' environment")
    allow: list[str] = Field(default_factory=list, description="egress.allow (agents may "
                                                               "replace it)")


def egress_status(config: DockerCCConfig) -> EgressStatus:
    isolated = config.docker.network == "none"
    return EgressStatus(isolated=isolated, network=config.docker.network,
                        credentials_in_container=not isolated,
                        allow=list(config.egress.allow) if isolated else [])


class Isolation(BaseModel):
    """Are the pool's containers kept apart in Redis (a Redis ACL user each)?"""

    isolated: bool | None = Field(
        description="true: every warm or busy container has a Redis user of its own; false: "
                    "not (see reason); null: could not be checked")
    reason: str = ""
    users: int | None = Field(None, description="container Redis users of this pool")


class HealthReport(BaseModel):
    """The health of the pool under one key prefix."""

    status: HealthStatus
    healthy: bool
    version: str = __version__
    checked_at: int = Field(description="ms since the epoch")
    redis: RedisCheck
    docker: DockerCheck
    egress: EgressStatus | None = None
    pool: PoolCounts | None = None
    isolation: Isolation | None = None
    backend: str = Field("docker", description="docker.backend: `docker`, or `local` (not "
                         "isolated: the runners are local subprocesses of the pool's process)")
    containers: list[ContainerHealth] = Field(default_factory=list)
    orphans: list[str] = Field(default_factory=list,
                               description="containers with this prefix's label but no registry "
                                           "entry")
    problems: list[str] = Field(default_factory=list)
    stats: PoolStats | None = Field(None, description="the serving process's own pool figures")
    uptime_s: float | None = None
    budgets: list[dict[str, Any]] = Field(
        default_factory=list, description="spend against each configured budget (pool, agents)")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return redact(text.splitlines()[0] if text else type(exc).__name__)


async def _check_redis(config: DockerCCConfig, timeout: float
                       ) -> tuple[RedisCheck, RedisTransport | None]:
    check = RedisCheck(ok=False, url=config.redis.redacted(), key_prefix=config.redis.key_prefix)
    # a short-lived connection that answers at once (no retries): this is a status page
    t = RedisTransport(config.redis.url_secret(), config.redis.key_prefix,
                       socket_timeout=timeout, connect_timeout=timeout, retries=0)
    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(t.pong(), timeout)
    except Exception as exc:
        await t.close()
        check.detail = f"not reachable: {_first_line(exc)}"
        return check, None
    check.ok = True
    check.latency_ms = round((time.perf_counter() - t0) * 1000, 2)
    check.detail = "PONG"
    return check, t


async def _check_docker(config: DockerCCConfig, backend: DockerBackend | None,
                        timeout: float) -> tuple[DockerCheck, DockerBackend | None]:
    engine = config.docker.base_url or "DOCKER_HOST / local engine"
    check = DockerCheck(ok=False, engine=redact(engine))
    own = backend is None
    b = backend or DockerBackend(config.docker.base_url)
    t0 = time.perf_counter()
    try:
        await asyncio.wait_for(b.ping(), timeout)
        version = await asyncio.wait_for(asyncio.to_thread(b.client.version), timeout)
    except Exception as exc:
        if own:
            with contextlib.suppress(Exception):
                await b.close()
        check.detail = f"not reachable: {_first_line(exc)}"
        return check, None
    check.ok = True
    check.latency_ms = round((time.perf_counter() - t0) * 1000, 2)
    check.server_version = str(version.get("Version") or "") or None
    check.detail = f"Docker Engine {check.server_version or '?'}"
    return check, b


async def collect_health(config: DockerCCConfig, *, backend: DockerBackend | None = None,
                         stats: PoolStats | None = None, started_at: float | None = None,
                         timeout: float = 5.0) -> HealthReport:
    """Check Redis, Docker and every container of the pool under ``config``'s key prefix.

    ``backend`` reuses a Docker client (the gateway's); ``stats`` / ``started_at`` (a
    ``time.monotonic()`` value) add the serving process's own figures."""
    (redis_check, store), (docker_check, docker) = await asyncio.gather(
        _check_redis(config, timeout), _check_docker(config, backend, timeout))
    problems: list[str] = []
    if not redis_check.ok:
        problems.append(f"Redis at {redis_check.url}: {redis_check.detail}")
    if not docker_check.ok:
        problems.append(f"Docker ({docker_check.engine}): {docker_check.detail}")
    containers: list[ContainerHealth] = []
    orphans: list[str] = []
    budgets: list[dict[str, Any]] = []
    counts: PoolCounts | None = None
    isolation: Isolation | None = None
    try:
        infos: list[ContainerInfo] | None = None
        if docker is not None:
            try:
                infos = await docker.list({LABEL: "1", f"{LABEL}.prefix": config.redis.key_prefix})
            except Exception as exc:
                problems.append(f"Docker: listing containers failed: {_first_line(exc)}")
        if store is not None:
            counts, containers, orphans = await _pool_view(config, store, infos, problems)
            isolation = await _isolation(config, store, containers, problems)
            try:
                budgets = await budget_report(store, config)
            except Exception as exc:  # noqa: BLE001 - the rest of the report still stands
                problems.append(f"budgets: {_first_line(exc)}")
    finally:
        if store is not None:
            await store.close()
        if docker is not None and backend is None:
            with contextlib.suppress(Exception):
                await docker.close()
    status: HealthStatus = "ok"
    if not redis_check.ok or not docker_check.ok:
        status = "down"
    elif problems:
        status = "degraded"
    return HealthReport(
        status=status, healthy=status == "ok", checked_at=now_ms(), redis=redis_check,
        docker=docker_check, egress=egress_status(config), pool=counts, isolation=isolation,
        backend=config.docker.backend,
        containers=containers, orphans=orphans, budgets=budgets,
        problems=problems, stats=stats,
        uptime_s=None if started_at is None else round(time.monotonic() - started_at, 3))


async def _pool_view(config: DockerCCConfig, store: RedisTransport, infos: list[ContainerInfo] | None,
                     problems: list[str]) -> tuple[PoolCounts, list[ContainerHealth], list[str]]:
    keys = store.pool_keys
    t = config.timeouts
    stale_ms = t.health_interval_ms * t.stale_after_misses
    view = await store.registry.view()
    records, quarantined = view.records, view.quarantined
    if quarantined:
        problems.append(f"{quarantined} pool registry record(s) failed validation and are "
                        f"ignored (see `redis-cli hgetall {keys.quarantine}`)")
    now = now_ms()
    alive = {o for o, hb in view.owners.items() if now - hb <= max(stale_ms, 1000)}
    by_id: dict[str, ContainerInfo] = {}
    for listed in infos or []:
        cid = listed.labels.get(f"{LABEL}.container", "")
        if cid:
            by_id[cid] = listed
    out: list[ContainerHealth] = []
    for rec in records:
        beat = view.heartbeats.get(rec.id, 0)
        info = by_id.get(rec.id)
        docker_state: str | None = None
        if infos is not None:
            docker_state = (info.status or ("running" if info.running else "stopped")) \
                if info is not None else "missing"
        hb_age = now - beat if beat else None
        item = ContainerHealth(
            id=rec.id, name=info.name if info is not None else rec.name, status=rec.status,
            agent=rec.agent, session=rec.session, owner=rec.owner,
            owner_alive=rec.owner in alive, docker_state=docker_state,
            heartbeat_age_ms=hb_age, age_ms=max(0, now - rec.created))
        problem = None
        if rec.status in ("warm", "busy"):
            if docker_state is not None and docker_state != "running":
                problem = f"container is {docker_state}"
            elif hb_age is not None and hb_age > stale_ms:
                problem = f"heartbeat stale ({hb_age / 1000:.1f}s old; limit {stale_ms / 1000:.0f}s)"
        elif rec.status == "creating" and now - rec.created > t.startup_ms * 2:
            problem = f"stuck in start-up for {(now - rec.created) / 1000:.0f}s"
        if problem is None and not item.owner_alive:
            problem = "its owner process is gone (`dockercc gc` removes it)"
        if problem is not None:
            item.healthy, item.problem = False, problem
            problems.append(f"container {item.name}: {problem}")
        out.append(item)
    known = {rec.id for rec in records}
    orphans = sorted(i.name for i in infos or []
                     if i.labels.get(f"{LABEL}.container", "") not in known)
    for name in orphans:
        problems.append(f"container {name} is not in the pool registry (`dockercc gc` removes "
                        "it)")
    status = Counter(r.status for r in records)
    counts = PoolCounts(
        total=len(records), warm=status["warm"], busy=status["busy"],
        creating=status["creating"], stopping=status["stopping"], sessions=view.sessions,
        waiting=view.waiting, owners=len(alive), quarantined=int(quarantined),
        per_agent=dict(Counter(r.agent for r in records if r.agent)),
        limits={"maxTotal": config.pool.max_total, "maxPerAgent": config.pool.max_per_agent,
                "minWarm": config.pool.min_warm})
    return counts, out, orphans


async def _isolation(config: DockerCCConfig, store: RedisTransport, containers: list[ContainerHealth],
                     problems: list[str]) -> Isolation:
    """``redis.containerAcl`` and, when on, whether each live container has its Redis user."""
    if not config.redis.container_acl:
        return Isolation(isolated=False, reason="redis.containerAcl is false: every runner has "
                         "the pool's own Redis rights and can reach every session's keys")
    try:
        users = await store.container_acl().users()
    except Exception as exc:
        return Isolation(isolated=None, reason=f"cannot list the Redis ACL users: "
                                                f"{_first_line(exc)}")
    missing = [c.name for c in containers if c.status in ("warm", "busy") and c.id not in users]
    for name in missing:
        problems.append(f"container {name} has no Redis user of its own (not isolated; was its "
                        "pool started with redis.containerAcl: false?)")
    if missing:
        return Isolation(isolated=False, users=len(users),
                         reason=f"{len(missing)} container(s) without a Redis user of their own")
    return Isolation(isolated=True, users=len(users),
                     reason="each container's runner has a Redis ACL user of its own")
