"""Shared fixtures: a real Redis server, a real Docker engine with the agent image, and the
scripted Messages API. Nothing is mocked: when something is missing the tests FAIL with what
to do (``bash .ci/run`` sets all of it up)."""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dockercc.errors import RedisServerError
from dockercc.pool.backend import LABEL
from dockercc.protocol.keys import SCRATCH_KEY, SessionKeys, acl_user_container
from dockercc.testing import RedisServer

# (and the spend ledger: budgets need the costs of closed sessions; see dockercc.budget)
RETAINED = (":state", ":history", ":result", ":transcript", "claude_sessions", "budget:spend",
            "budget:cost", SCRATCH_KEY)
"""(``pool:scratch``: which closed session keeps which scratch workspace volume)"""
ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "claude-code-2.1.328"
"""Transcripts of the real CLI, made by ``scripts/capture_transcripts.py`` and committed."""
SEED_TABLES = ROOT / "tests" / "data" / "seed_tables.md"
"""The spec's tables (copied from the seed) that the docs and defaults are checked against."""
IMAGE = os.environ.get("DOCKERCC_TEST_IMAGE", "clawdbot/docker-cc:latest")


DOCKER_FIXTURES = frozenset({"docker_client", "agent_image", "own_dockerd"})
"""Fixtures that need a Docker engine (``make_config`` and the like depend on them): a test
that uses one, directly or through another fixture, must be marked ``docker``."""


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # `-m "not docker"` must leave out every test that needs Docker: an unmarked one is a
    # collection error, so a forgotten marker cannot slip in
    for item in items:
        if item.path.suffix == ".ipynb":  # the tutorials (nbmake) all run real pools
            item.add_marker(pytest.mark.docker)
            if item.path.name == "05_scripted_experiments.ipynb":
                # pool.map over 200 items: a container per item, ~3-4 min on 2 cores
                item.add_marker(pytest.mark.timeout(900))
    unmarked = [item.nodeid for item in items
                if DOCKER_FIXTURES & set(getattr(item, "fixturenames", ()))
                and item.get_closest_marker("docker") is None]
    if unmarked:
        raise pytest.UsageError(
            "tests that use Docker fixtures must be marked `docker` (pytest.mark.docker):\n  "
            + "\n  ".join(unmarked))


@pytest.fixture(scope="session")
def cli_fixtures() -> Path:
    """The real CLI transcripts (tests/fixtures): missing means a broken checkout, a failure
    with what to do, never a skip."""
    if not any(FIXTURES.glob("*.jsonl")):
        pytest.fail(f"CLI transcripts not found in {FIXTURES}: restore them from git, or "
                    "recapture with `python3 scripts/capture_transcripts.py`")
    return FIXTURES


def host_claude() -> str:
    """The pinned Claude Code CLI on the host: missing means a set-up step was skipped, a
    failure with what to do, never a skip."""
    import shutil

    found = shutil.which("claude")
    if found is None:
        pytest.fail("no claude CLI on the host: bash scripts/stack.sh up installs the pinned one")
    return found


def dev_import(module: str) -> Any:
    """A module of the dev extra: missing is a broken install, a failure, never a skip."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pytest.fail(f"{module} is missing ({exc}): pip install -e '.[dev]' "
                    "(bash scripts/stack.sh up does it)")


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The tests' own redis-server (loopback port and a unix socket), for the whole session."""
    try:
        server = RedisServer(tmp_path_factory.mktemp("redis"), unix_socket=True)
    except RedisServerError as exc:
        pytest.fail(f"{exc} (bash .ci/run does it)")
    with server:
        yield server


@pytest.fixture(scope="session")
def docker_client() -> Any:
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except Exception as exc:  # pragma: no cover - environment problem
        pytest.fail(f"no Docker engine ({exc}); start dockerd (bash .ci/run does it)")
    return client


@pytest.fixture(scope="session")
def agent_image(docker_client: Any) -> str:
    """The agent image, (re)built from this checkout when its content hash changed."""
    from dockercc.image import build_image

    # same inputs as `dockercc image build` in scripts/stack.sh: $DOCKERCC_BASE_IMAGE and
    # $DOCKERCC_CA_BUNDLE if set, else those the existing image recorded; so this is a cache
    # hit after `stack.sh up` (even in a plain `pytest`) and a rebuild after code changes
    build_image(IMAGE)
    return IMAGE


@pytest.fixture
def api() -> Iterator[Any]:
    from dockercc.testing import ScriptedAPI

    with ScriptedAPI() as server:
        yield server


TEST_PREFIXES: set[str] = set()
"""Key prefixes the running test uses (``prefix`` fixture, or added by the test itself): the
leak check looks only at containers labelled with them, so it never touches containers of
tests that other processes run at the same time."""


def labelled_containers(docker_client: Any, prefixes: set[str] | None = None,
                        owner_pid: int | None = None) -> list[str]:
    # the low-level list: no per-container inspect that races a removal
    found = docker_client.api.containers(all=True, filters={"label": f"{LABEL}=1"})
    if prefixes:
        found = [c for c in found if (c.get("Labels") or {}).get(f"{LABEL}.prefix") in prefixes]
    if owner_pid is not None:  # owners are "<host>-<pid>-<hex>"
        found = [c for c in found if ((c.get("Labels") or {}).get(f"{LABEL}.owner") or "")
                 .rsplit("-", 2)[-2:-1] == [str(owner_pid)]]
    return [c["Names"][0].lstrip("/") for c in found]


@pytest.fixture(autouse=True)
def no_leaked_containers(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test that uses Docker must leave no dockercc container behind (only its own are
    counted when it has a key prefix, so parallel runs don't blame each other)."""
    if "docker_client" not in request.fixturenames and "agent_image" not in request.fixturenames:
        yield
        return
    client = request.getfixturevalue("docker_client")
    TEST_PREFIXES.clear()
    own = request.getfixturevalue("prefix") if "prefix" in request.fixturenames else None

    def current() -> set[str]:
        # the test's prefixes: the fixture's, or ones the test registered in TEST_PREFIXES
        mine = {own} if own is not None else set(TEST_PREFIXES)
        if not mine:  # no prefix known: the containers this process's pools made, only
            return set(labelled_containers(client, owner_pid=os.getpid()))
        return set(labelled_containers(client, mine))

    def volumes() -> dict[str, dict[str, str]]:
        # scratch workspace volumes (the default /workspace) of the same scope as current()
        mine = {own} if own is not None else set(TEST_PREFIXES)
        found = {v["Name"]: v.get("Labels") or {} for v in client.api.volumes(
            filters={"label": [f"{LABEL}=1", f"{LABEL}.workspace=scratch"]}
        ).get("Volumes") or []}
        if mine:
            return {n: lb for n, lb in found.items() if lb.get(f"{LABEL}.prefix") in mine}
        return {n: lb for n, lb in found.items() if (lb.get(f"{LABEL}.owner") or "")
                .rsplit("-", 2)[-2:-1] == [str(os.getpid())]}

    before, before_volumes = current(), set(volumes())
    yield
    deadline = time.monotonic() + 10
    left: set[str] = set()
    while time.monotonic() < deadline:
        left = current() - before
        if not left:
            break
        time.sleep(0.2)
    for name in left:
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    vols = {n: lb for n, lb in volumes().items() if n not in before_volumes}
    # a closed session stays resumable with its scratch volume (as with its Redis keys,
    # RETAINED); any other volume left behind is a leak. Both are removed here.
    redis = (request.getfixturevalue("redis_server")
             if "redis_server" in request.fixturenames else None)

    def kept(name: str, labels: dict[str, str]) -> bool:
        p = labels.get(f"{LABEL}.prefix", "")
        if redis is None or not p:
            return False
        sid = redis.cli("hget", f"{p}{SCRATCH_KEY}", name).strip()
        return bool(sid) and redis.cli("exists", SessionKeys(sid, p).state).strip() == "1"

    leaked_volumes = sorted(n for n, lb in vols.items() if not kept(n, lb))
    for name in vols:
        for _ in range(50):  # a container that lets go of it only as it is removed
            if subprocess.run(["docker", "volume", "rm", "-f", name],
                              capture_output=True).returncode == 0:
                break
            time.sleep(0.2)
    assert not left, f"test leaked containers: {sorted(left)}"
    assert not leaked_volumes, f"test leaked scratch volumes: {leaked_volumes}"


@pytest.fixture
def prefix(redis_server: RedisServer) -> Iterator[str]:
    """A fresh key prefix; the test must leave no key under it (checked afterwards)."""
    p = f"t{uuid.uuid4().hex[:8]}:"
    TEST_PREFIXES.add(p)
    yield p
    left = redis_server.keys(f"{p}*")
    if left:
        redis_server.cli("eval", "for _,k in ipairs(redis.call('keys', ARGV[1])) do "
                         "redis.call('del', k) end", "0", f"{p}*")
    # the containers' Redis ACL users of this prefix go with their containers
    users = [u for u in redis_server.cli("acl", "users").split()
             if acl_user_container(p, u) is not None]
    for user in users:
        redis_server.cli("acl", "deluser", user)
    # closed sessions stay resumable on purpose (state, history, result, transcript);
    # anything else left behind is a leak
    leaked = [k for k in left if not k.endswith(RETAINED)]
    assert not leaked, f"test leaked Redis keys: {sorted(leaked)}"
    assert not users, f"test leaked Redis ACL users: {sorted(users)}"


def with_overrides(cfg: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``cfg`` with ``overrides``: a section given as a dict is merged one level deep."""
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(cfg.get(key), dict):
            cfg[key] = {**cfg[key], **value}
        else:
            cfg[key] = value
    return cfg


@pytest.fixture
def make_config(redis_server: RedisServer, api: Any, agent_image: str,
                prefix: str) -> Callable[..., dict[str, Any]]:
    """Config for a pool on the test Redis and the scripted API, with the product's defaults:
    network ``none``, the egress proxy and Redis through the pool's unix-socket relay (a test
    that needs host networking passes ``docker={"network": "host"}``)."""

    def make(**overrides: Any) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "image": agent_image,
            "redis": {"url": redis_server.url, "keyPrefix": prefix},
            "credentials": {"baseUrl": api.url, "apiKey": "sk-ant-scripted-test"},
            "resources": {"memory": "1g", "cpus": 1},
            "timeouts": {"healthIntervalMs": 1000, "startupMs": 30000},
            "pool": {"acquireTimeoutMs": 60000},
        }
        return with_overrides(cfg, overrides)

    return make


@pytest.fixture
def local_config(redis_server: RedisServer, api: Any,
                 prefix: str) -> Callable[..., dict[str, Any]]:
    """Config for a pool on the local backend (``docker.backend: local``: the real runner and
    the host's real CLI as subprocesses, no Docker), the test Redis and the scripted API,
    with the product's defaults otherwise (network ``none``: the egress proxy, the Redis
    relay, a Redis ACL user per container)."""
    host_claude()

    def make(**overrides: Any) -> dict[str, Any]:
        cfg: dict[str, Any] = {
            "docker": {"backend": "local"},
            "redis": {"url": redis_server.url, "keyPrefix": prefix},
            "credentials": {"baseUrl": api.url, "apiKey": "sk-ant-scripted-test"},
            "timeouts": {"healthIntervalMs": 1000, "startupMs": 30000},
            "pool": {"acquireTimeoutMs": 30000},
        }
        return with_overrides(cfg, overrides)

    return make
