"""Node tools: ``nodes_list`` and ``nodes_exec``.

A node is a Docker engine the pool can use: ``local`` (the pool's own engine,
``docker.baseUrl`` or ``DOCKER_HOST``) and the engines named in ``tools.nodes.remote``.

``nodes_exec`` never runs anything on a host: each command gets a fresh, throwaway container
on the chosen node — the exec image (``tools.nodes.execImage``, the node's ``image``, else the
agent image), no network, every capability dropped, ``no-new-privileges``, a read-only root
with a small ``/tmp`` tmpfs, the pool's user, memory / CPU / PID limits, no environment from
the host (no credentials), a time limit (the container is killed) and a cap on the output
returned. It is labelled like the pool's containers (``clawdbot.docker-cc=1``, role ``exec``)
and removed when the command ends, whatever happens. At most two run at once per pool. The
tool is offered only to agents with ``nodesExec: true``.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, Field

from ..bridge import Tool
from ..pool.backend import LABEL
from ..redaction import redact
from ._base import BuiltinHost, BuiltinToolError, ToolContext, builtin, to_json

if TYPE_CHECKING:  # pragma: no cover
    pass

__all__ = ["ExecResult", "NodeInfo", "exec_in_container", "list_nodes", "node_tools"]

LOCAL = "local"
PING_TIMEOUT_S = 10


class NodeInfo(BaseModel):
    """One Docker engine as ``nodes_list`` shows it."""

    name: str
    kind: str
    url: str
    description: str | None = None
    reachable: bool = False
    error: str | None = None
    server_version: str | None = None
    os: str | None = None
    arch: str | None = None
    cpus: int | None = None
    memory_bytes: int | None = None
    containers_running: int | None = None
    exec_image: str | None = None
    exec_image_present: bool | None = None


class ExecResult(BaseModel):
    """The outcome of one ``nodes_exec`` command."""

    node: str
    image: str
    exit_code: int | None
    timed_out: bool = False
    stdout: str = ""
    stderr: str = ""
    stdout_truncated: bool = False
    stderr_truncated: bool = False
    duration_ms: int = 0


def _nodes(host: BuiltinHost) -> dict[str, tuple[str | None, str | None, str | None]]:
    """name -> (engine URL or None for the environment's, exec image, description)."""
    cfg = host.config
    default_image = cfg.tools.nodes.exec_image or cfg.image
    out: dict[str, tuple[str | None, str | None, str | None]] = {
        LOCAL: (cfg.docker.base_url, default_image, "the pool's own Docker engine")}
    for name, node in cfg.tools.nodes.remote.items():
        out[name] = (node.url, node.image or default_image, node.description)
    return out


def _client(host: BuiltinHost, name: str, url: str | None) -> Any:
    state = host.state
    client = state.docker_clients.get(name)
    if client is None:
        import docker

        client = (docker.DockerClient(base_url=url, timeout=PING_TIMEOUT_S) if url
                  else docker.from_env(timeout=PING_TIMEOUT_S))
        state.docker_clients[name] = client
    return client


def _describe(host: BuiltinHost, name: str, url: str | None, image: str | None,
              description: str | None) -> NodeInfo:
    import docker.errors

    shown = redact(url) if url else "DOCKER_HOST / the local socket"
    info = NodeInfo(name=name, kind=LOCAL if name == LOCAL else "remote", url=shown,
                    description=description, exec_image=image)
    try:
        client = _client(host, name, url)
        data = client.info()
    except Exception as exc:  # noqa: BLE001 - an unreachable node is reported, not raised
        info.error = f"{type(exc).__name__}: {redact(str(exc))}"[:300]
        host.state.docker_clients.pop(name, None)
        return info
    info.reachable = True
    info.server_version = data.get("ServerVersion")
    info.os = data.get("OperatingSystem")
    info.arch = data.get("Architecture")
    info.cpus = data.get("NCPU")
    info.memory_bytes = data.get("MemTotal")
    info.containers_running = data.get("ContainersRunning")
    if image:
        try:
            client.images.get(image)
            info.exec_image_present = True
        except docker.errors.ImageNotFound:
            info.exec_image_present = False
        except Exception:  # noqa: BLE001
            info.exec_image_present = None
    return info


async def list_nodes(host: BuiltinHost) -> list[NodeInfo]:
    """Every node with what its engine reports (unreachable ones with the error)."""
    nodes = _nodes(host)
    return list(await asyncio.gather(*(
        asyncio.to_thread(_describe, host, name, url, image, desc)
        for name, (url, image, desc) in nodes.items())))


def _read_capped(stream: Any, cap: int) -> tuple[str, bool]:
    data = bytearray()
    cut = False
    try:
        for chunk in stream:
            data.extend(chunk)
            if len(data) > cap:
                cut = True
                break
    finally:
        with contextlib.suppress(Exception):
            stream.close()
    return bytes(data[:cap]).decode("utf-8", errors="replace"), cut


def exec_in_container(client: Any, *, node: str, image: str, command: str, timeout: float,
                      max_output: int, user: str, memory: str, cpus: float, pids_limit: int,
                      name: str, labels: dict[str, str]) -> ExecResult:
    """Run ``command`` (``/bin/sh -c``) in a fresh limited container; always removed."""
    import docker.errors
    import requests.exceptions
    from docker.types import LogConfig

    log_cap = max(4 * max_output // 1024, 64)
    start = time.monotonic()
    try:
        container = client.containers.create(
            image, entrypoint=["/bin/sh", "-c"], command=[command], name=name,
            labels=labels, user=user, network_mode="none", network_disabled=True,
            cap_drop=["ALL"], security_opt=["no-new-privileges"], read_only=True,
            tmpfs={"/tmp": "rw,nosuid,nodev,size=64m,mode=1777"}, working_dir="/tmp",
            environment={"HOME": "/tmp"}, mem_limit=memory, memswap_limit=memory,
            nano_cpus=int(cpus * 1e9), pids_limit=pids_limit, init=True,
            log_config=LogConfig(type="json-file",
                                 config={"max-size": f"{log_cap}k", "max-file": "1"}),
            stdin_open=False, tty=False)
    except docker.errors.ImageNotFound:
        raise BuiltinToolError(f"image {image!r} is not on node {node!r}; build or pull it "
                               f"there (tools.nodes.execImage)") from None
    except docker.errors.APIError as exc:
        raise BuiltinToolError(f"node {node!r} refused the container: "
                               f"{exc.explanation or exc}") from None
    try:
        container.start()
        timed_out = False
        exit_code: int | None
        try:
            status = container.wait(timeout=timeout)
            exit_code = int(status.get("StatusCode", -1))
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            timed_out = True
            with contextlib.suppress(docker.errors.APIError):
                container.kill()
            with contextlib.suppress(Exception):
                container.wait(timeout=10)
            exit_code = None
        stdout, out_cut = _read_capped(container.logs(stdout=True, stderr=False, stream=True),
                                       max_output)
        stderr, err_cut = _read_capped(container.logs(stdout=False, stderr=True, stream=True),
                                       max_output)
    finally:
        with contextlib.suppress(docker.errors.NotFound):
            client.api.remove_container(container.id, force=True, v=True)
    return ExecResult(node=node, image=image, exit_code=exit_code, timed_out=timed_out,
                      stdout=stdout, stderr=stderr, stdout_truncated=out_cut,
                      stderr_truncated=err_cut,
                      duration_ms=int((time.monotonic() - start) * 1000))


def node_tools(ctx: ToolContext) -> list[Tool[..., Any]]:
    host = ctx.host
    cfg = ctx.config.tools.nodes

    async def nodes_list() -> Any:
        nodes = await list_nodes(host)
        return to_json({"nodes": [n.model_dump(exclude_none=True) for n in nodes]})

    async def nodes_exec(command: Annotated[str, Field(min_length=1, max_length=20_000)],
                         node: str = LOCAL,
                         timeout_s: Annotated[float | None, Field(gt=0)] = None) -> Any:
        nodes = _nodes(host)
        if node not in nodes:
            raise BuiltinToolError(f"unknown node {node!r} (nodes: {', '.join(nodes)})")
        url, image, _ = nodes[node]
        assert image is not None
        limit = cfg.exec_timeout_ms / 1000
        timeout = limit if timeout_s is None else min(timeout_s, limit)
        labels = {LABEL: "1", f"{LABEL}.prefix": ctx.transport.prefix,
                  f"{LABEL}.owner": host.owner, f"{LABEL}.role": "exec",
                  f"{LABEL}.session": ctx.session.id}
        name = f"{ctx.config.docker.container_prefix}exec-{secrets.token_hex(5)}"
        async with ctx.state.exec_slots:
            try:
                client = await asyncio.to_thread(_client, host, node, url)
            except Exception as exc:  # noqa: BLE001
                raise BuiltinToolError(f"node {node!r} is not reachable: {exc}") from None
            # shield: a cancelled call must still wait for the container to be removed
            task = asyncio.ensure_future(asyncio.to_thread(
                exec_in_container, client, node=node, image=image, command=command,
                timeout=timeout, max_output=cfg.exec_max_output_bytes,
                user=ctx.config.docker.user, memory=cfg.exec_memory, cpus=cfg.exec_cpus,
                pids_limit=cfg.exec_pids_limit, name=name, labels=labels))
            result = await asyncio.shield(task)
        return to_json(result.model_dump())

    tools = [builtin(nodes_list, name="nodes_list", description=(
        "List the Docker engines (nodes) this pool can use: the local one and configured "
        "remote ones, with reachability, version, CPUs, memory and running containers."))]
    if ctx.session.agent_config.nodes_exec:
        tools.append(builtin(nodes_exec, name="nodes_exec",
                             timeout=cfg.exec_timeout_ms / 1000 + 30, description=(
                                 "Run a shell command in a fresh throwaway container on a "
                                 "node (no network, no capabilities, read-only, time and "
                                 "output limits); returns exit code, stdout and stderr.")))
    return tools
