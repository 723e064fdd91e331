"""The gateway: a long-running process that owns a pool and serves its health over HTTP.

``dockercc serve`` runs one :class:`Gateway`: it starts an :class:`~dockercc.client.AsyncPool`
(which keeps ``minWarm`` containers ready, heartbeats, replaces lost containers and runs
whatever the pool owns, e.g. scheduled jobs) and serves::

    GET /api/docker-cc/health    the HealthReport as JSON (200 when ok, 503 otherwise)
    GET /metrics                 Prometheus metrics (:mod:`dockercc.metrics`)

on ``127.0.0.1:18789`` by default (the seed's port; ``--host`` / ``--port``). On SIGTERM or
SIGINT it stops serving, then closes the pool, which removes the containers it owns.

Who may read what: a request whose ``Host`` header is not an allowed name is refused (421),
so a web page cannot reach the endpoint through DNS rebinding. With ``gateway.token`` set (it
must be, to bind a non-loopback address), only ``Authorization: Bearer <token>`` gets the
report; anyone else gets ``{"status": "ok"|"unhealthy"}``. Without a token (loopback only)
the report leaves out session ids, container names and ids, and pool owners. ``/metrics``
follows the same rule, stricter: with a token configured it needs the token (401 otherwise;
there is no "minimal" form of metrics), without one (loopback only) it is open; its labels
never carry session ids or container names either.

Why Starlette + uvicorn: both are already installed as dependencies of the ``mcp`` SDK the
host bridge uses, so the gateway adds no weight; they give a correct HTTP/1.1 server (HEAD,
keep-alive, 404/405) that runs inside our own event loop next to the pool. uvicorn's own
signal capture is switched off so the gateway can close the pool before the process exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import signal
import time
from collections.abc import Iterator
from typing import Any

from . import metrics
from .client import AsyncPool
from .config import DockerCCConfig, load_config
from .errors import ConfigError
from .health import HealthReport, collect_health

__all__ = ["Gateway", "HEALTH_PATH", "METRICS_PATH", "DEFAULT_PORT", "DEFAULT_HOST"]

log = logging.getLogger("dockercc.gateway")

HEALTH_PATH = "/api/docker-cc/health"
METRICS_PATH = "/metrics"
DEFAULT_PORT = 18789
DEFAULT_HOST = "127.0.0.1"


def _server_class() -> Any:
    import uvicorn

    class _Server(uvicorn.Server):
        """uvicorn without its signal handling: the gateway handles signals itself."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            yield

        def install_signal_handlers(self) -> None:  # uvicorn < 0.29
            return None

    return _Server


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _host_name(header: str) -> str:
    """The name in a ``Host`` header, without its port (``[::1]:80`` -> ``::1``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else header
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


_PRIVATE_FIELDS = ("id", "name", "session", "owner")


def public_view(report: HealthReport) -> dict[str, Any]:
    """The report for callers without the token: counts and states, but no session ids,
    container names or ids, or owners (they would tell a local web page or user what runs)."""
    data = report.model_dump(mode="json")
    for item in data.get("containers") or []:
        for key in _PRIVATE_FIELDS:
            item.pop(key, None)
    hidden = sum(1 for p in data.get("problems") or [] if p.startswith("container "))
    data["problems"] = [p for p in data.get("problems") or [] if not p.startswith("container ")]
    if hidden:
        data["problems"].append(f"{hidden} container problem(s): details with the gateway "
                                f"token or `dockercc status`")
    data["orphans"] = len(data.get("orphans") or [])
    if isinstance(data.get("stats"), dict):
        data["stats"].pop("owner", None)
    if isinstance(data.get("egress"), dict):  # internal hosts and networks: only how many
        data["egress"]["allow"] = len(data["egress"].get("allow") or [])
    return data


class Gateway:
    """A pool plus the health endpoint. ``await gateway.start()`` / ``await gateway.stop()``,
    or ``await gateway.run()`` until SIGTERM / SIGINT / :meth:`request_stop`."""

    def __init__(self, config: DockerCCConfig | str | dict[str, Any] | None = None, *,
                 host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 pool: AsyncPool | None = None, token: str | None = None) -> None:
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be 0-65535, got {port}")
        self.config = pool.config if pool is not None else load_config(config)
        gw = self.config.gateway
        self._token = token or (gw.token.get_secret_value() if gw.token is not None else "")
        if not _is_loopback(host) and not self._token:
            raise ConfigError(f"the gateway on {host} (not a loopback address) would serve "
                              "anyone who can reach it: set gateway.token (or --token / "
                              "DOCKERCC_GATEWAY_TOKEN), or bind 127.0.0.1")
        self.allowed_hosts = {h.lower().strip("[]") for h in gw.allowed_hosts}
        if host not in ("0.0.0.0", "::", ""):
            self.allowed_hosts.add(host.lower().strip("[]"))
        self.host = host
        self.port = port
        self.pool = pool or AsyncPool(self.config)
        self.started_at: float | None = None
        self._server: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{HEALTH_PATH}"

    def app(self) -> Any:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse, Response
        from starlette.routing import Route

        async def health(request: Request) -> JSONResponse:
            if _host_name(request.headers.get("host", "")) not in self.allowed_hosts:
                # a browser sends the name it resolved: a rebinding page's own name
                return JSONResponse({"error": "host not allowed"}, status_code=421)
            report = await self.health()
            code = 200 if report.healthy else 503
            given = request.headers.get("authorization", "")
            if self._token and hmac.compare_digest(given.encode(),
                                                   f"Bearer {self._token}".encode()):
                return JSONResponse(report.model_dump(mode="json"), status_code=code)
            if self._token:
                return JSONResponse({"status": "ok" if report.healthy else "unhealthy"},
                                    status_code=code)
            return JSONResponse(public_view(report), status_code=code)

        async def metrics_endpoint(request: Request) -> Response:
            if _host_name(request.headers.get("host", "")) not in self.allowed_hosts:
                return JSONResponse({"error": "host not allowed"}, status_code=421)
            given = request.headers.get("authorization", "")
            if self._token and not hmac.compare_digest(given.encode(),
                                                       f"Bearer {self._token}".encode()):
                return JSONResponse({"error": "the gateway token is required"},
                                    status_code=401,
                                    headers={"WWW-Authenticate": "Bearer"})
            with contextlib.suppress(Exception):  # pool sizes as of now (Redis down: last)
                await asyncio.wait_for(self.pool.stats(), 2)
            return Response(metrics.render(), media_type=metrics.CONTENT_TYPE)

        return Starlette(routes=[Route(HEALTH_PATH, health, methods=["GET"]),
                                 Route(METRICS_PATH, metrics_endpoint, methods=["GET"])])

    async def health(self) -> HealthReport:
        stats = None
        with contextlib.suppress(Exception):  # Redis down: the report says so
            stats = await asyncio.wait_for(self.pool.stats(), 2)
        backend = getattr(self.pool.containers, "backend", None)
        from .pool.backend import DockerBackend

        return await collect_health(
            self.config, backend=backend if isinstance(backend, DockerBackend) else None,
            stats=stats, started_at=self.started_at)

    async def start(self) -> None:
        """Start the pool (warming ``minWarm`` containers), then serve."""
        import uvicorn

        await self.pool.start()
        config = uvicorn.Config(self.app(), host=self.host, port=self.port, log_level="warning",
                                lifespan="off", access_log=False)
        self._server = _server_class()(config)
        self._task = asyncio.create_task(self._server.serve(), name="dockercc-gateway-http")
        while not self._server.started:
            if self._task.done():
                await self._task  # raises what stopped it (e.g. port in use)
                raise OSError(f"the health server on {self.host}:{self.port} did not start")
            await asyncio.sleep(0.01)
        if self.port == 0:  # an ephemeral port: report the real one
            for server in getattr(self._server, "servers", []):
                for sock in server.sockets:
                    self.port = int(sock.getsockname()[1])
                    break
        self.started_at = time.monotonic()
        log.info("health endpoint on %s", self.url)

    async def stop(self) -> None:
        """Stop serving, then close the pool (its containers are removed)."""
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(self._task, 10)
            self._task = None
        try:
            await self.pool.close()
        except Exception as exc:  # e.g. Redis went away: the containers' owner is gone too
            log.warning("closing the pool failed: %s (`dockercc gc` cleans up)", exc)

    def request_stop(self) -> None:
        self._stop.set()

    async def run(self, on_started: Any = None) -> None:
        """Serve until SIGTERM / SIGINT (or :meth:`request_stop`), then clean up.
        ``on_started(gateway)`` is called once the endpoint answers."""
        loop = asyncio.get_running_loop()
        handled = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, self._stop.set)
                handled.append(sig)
        try:
            await self.start()
            if on_started is not None:
                on_started(self)
            waiter = asyncio.ensure_future(self._stop.wait())
            assert self._task is not None
            await asyncio.wait({waiter, self._task}, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
        finally:
            await self.stop()
            for sig in handled:
                loop.remove_signal_handler(sig)
