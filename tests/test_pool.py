"""The container pool against a real Docker engine and a real Redis.

Pool-mechanics tests that don't need a model run the real runner with ``cat`` standing in for
the CLI (``DOCKERCC_CLAUDE_BIN``), so twenty containers fit on a 2-core machine; everything
else (Docker, Redis, the runner, the claim protocol) is the real thing. Tests that need the
CLI use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest

from dockercc.client import AsyncPool
from dockercc.errors import ContainerLost, PoolExhausted, StartupTimeout
from dockercc.pool.backend import LABEL
from dockercc.testing import text, tool_use

pytestmark = pytest.mark.docker

# the runner appends the CLI's arguments; `sh -c 'exec cat'` takes them as $0.. and ignores them
CAT = {"DOCKERCC_CLAUDE_BIN": "sh -c 'exec cat'"}


def pool_containers(docker_client: Any, prefix: str) -> list[Any]:
    import docker.errors

    for _ in range(10):  # list() inspects each one: retry when one vanishes meanwhile
        try:
            return list(docker_client.containers.list(
                all=True, filters={"label": [f"{LABEL}=1", f"{LABEL}.prefix={prefix}"]}))
        except docker.errors.NotFound:
            time.sleep(0.1)
    raise AssertionError("containers kept vanishing while listing them")


class ContainerCounter:
    """Samples how many of the pool's containers exist, in the background."""

    def __init__(self, docker_client: Any, prefix: str) -> None:
        self.client, self.prefix = docker_client, prefix
        self.max = 0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            n = len(await asyncio.to_thread(pool_containers, self.client, self.prefix))
            self.max = max(self.max, n)
            await asyncio.sleep(0.05)

    def __enter__(self) -> ContainerCounter:
        self._task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()


async def assert_not_in_redis(pool: AsyncPool, prefix: str, secret: str) -> None:
    """No key or value under the prefix holds ``secret`` (compressed transcripts inflated)."""
    import zlib

    r = pool.transport.client
    needle = secret.encode()
    async for key in r.scan_iter(match=f"{prefix}*"):
        assert needle not in key
        kind = (await r.type(key)).decode()
        if kind == "hash":
            values = list((await r.hgetall(key)).values())
        elif kind == "list":
            values = await r.lrange(key, 0, -1)
        elif kind == "string":
            values = [await r.get(key)]
        elif kind == "zset":
            values = await r.zrange(key, 0, -1)
        else:
            values = list(await r.smembers(key))
        for value in values:
            with contextlib.suppress(zlib.error):
                value = zlib.decompress(value)
            assert needle not in value, f"secret found in {key!r}"


async def claim_only(pool: AsyncPool, session: str, agent: str = "main", **kw: Any) -> Any:
    s = pool.session(agent, session_id=session, env=CAT, **kw)
    await s.start()
    return s


async def test_min_warm_is_reached_and_held_after_claims(make_config: Any, docker_client: Any,
                                                         prefix: str) -> None:
    cfg = make_config(pool={"minWarm": 2, "maxTotal": 6},
                      docker={"network": "host", "env": CAT})
    async with AsyncPool(cfg) as pool:
        await pool.containers.wait_warm(timeout=90)
        stats = await pool.stats()
        assert stats.warm == 2
        sessions = [pool.session(session_id=f"warm-{i}") for i in range(3)]
        for s in sessions:
            await s.start()
        assert [s.lease.warm for s in sessions[:2]] == [True, True]  # type: ignore[union-attr]
        # topped up again after the claims
        await pool.containers.wait_warm(timeout=90)
        stats = await pool.stats()
        assert stats.warm == 2 and stats.busy == 3 and stats.warm_claims >= 2
        # a claimed warm container carries the session's name (seed: docker logs clawdbot-cc-<s>)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            names = {c.name for c in pool_containers(docker_client, prefix)}
            if all(f"clawdbot-cc-{s.id}" in names for s in sessions):
                break
            await asyncio.sleep(0.2)
        assert all(f"clawdbot-cc-{s.id}" in names for s in sessions), names
        for s in sessions:
            await s.close(forget=True)
    assert pool_containers(docker_client, prefix) == []


async def test_twenty_claims_with_max_total_five_are_served_in_order(
        make_config: Any, docker_client: Any, prefix: str) -> None:
    cfg = make_config(pool={"maxTotal": 5, "maxPerAgent": 20, "acquireTimeoutMs": 180000})
    served: list[int] = []
    async with AsyncPool(cfg) as pool:

        async def one(i: int) -> None:
            await asyncio.sleep(i * 0.05)  # arrival order = i
            s = await claim_only(pool, f"c{i:02d}")
            served.append(i)
            await asyncio.sleep(0.3)
            await s.close(forget=True)

        with ContainerCounter(docker_client, prefix) as counter:
            await asyncio.wait_for(asyncio.gather(*(one(i) for i in range(20))), 300)
        assert sorted(served) == list(range(20)), "every claim served, none lost"
        assert counter.max <= 5, f"saw {counter.max} containers with maxTotal 5"
        displacement = max(abs(pos - i) for pos, i in enumerate(served))
        assert displacement <= 5, f"served out of arrival order: {served}"
        stats = await pool.stats()
        assert stats.waits >= 10 and stats.claims == 20
    assert pool_containers(docker_client, prefix) == []


async def test_max_per_agent_holds_and_exhaustion_names_the_limit(
        make_config: Any, docker_client: Any) -> None:
    cfg = make_config(pool={"maxTotal": 6, "maxPerAgent": 2, "acquireTimeoutMs": 1500},
                      agents={"main": {}, "helper": {}})
    async with AsyncPool(cfg) as pool:
        a = [await claim_only(pool, f"a{i}", "main") for i in range(2)]
        b = [await claim_only(pool, f"b{i}", "helper") for i in range(2)]
        t0 = time.monotonic()
        third = pool.session("main", session_id="a-third", env=CAT)
        with pytest.raises(PoolExhausted) as info:
            await third.start()
        assert time.monotonic() - t0 >= 1.4, "waits for the acquire timeout before giving up"
        assert info.value.limit == "maxPerAgent"
        assert info.value.counts["agent"] == 2
        assert "maxPerAgent" in str(info.value)
        # a prompt is queued while its claim is under way: a failed claim takes it back
        fourth = pool.session("main", session_id="a-fourth", env=CAT)
        with pytest.raises(PoolExhausted):
            await fourth.send("never runs")
        r = pool.transport.client
        assert not await r.exists(fourth.keys.input, fourth.keys.processing)
        assert not await r.hexists(pool.sessions_key, "a-fourth")
        stats = await pool.stats()
        assert stats.per_agent == {"main": 2, "helper": 2}
        # a freed slot of that agent is taken by the next claim
        await a[0].close(forget=True)
        a.append(await claim_only(pool, "a-again", "main"))
        for s in [*a[1:], *b, third, fourth]:
            await s.close(forget=True)


async def test_claims_beyond_max_total_wait_for_a_release(make_config: Any) -> None:
    cfg = make_config(pool={"maxTotal": 1, "acquireTimeoutMs": 30000})
    async with AsyncPool(cfg) as pool:
        first = await claim_only(pool, "first")
        waiter = asyncio.create_task(claim_only(pool, "second"))
        await asyncio.sleep(1.0)
        assert not waiter.done(), "the second claim must queue, not fail"
        await first.close(forget=True)
        second = await asyncio.wait_for(waiter, 60)
        assert second.lease is not None
        await second.close(forget=True)


SHARED_SCRIPT = textwrap.dedent("""
    import asyncio, json, sys
    from dockercc.client import AsyncPool

    async def main():
        cfg = json.loads(sys.argv[1])
        async with AsyncPool(cfg) as pool:
            got = []
            async def one(i):
                s = pool.session(session_id=f"p2-{i}",
                                 env={"DOCKERCC_CLAUDE_BIN": "sh -c 'exec cat'"})
                await s.start()
                got.append(s.lease.container)
                await asyncio.sleep(0.5)
                await s.close(forget=True)
            await asyncio.gather(*(one(i) for i in range(6)))
            print(json.dumps(got), flush=True)

    asyncio.run(main())
""")


async def test_two_processes_share_one_pool(make_config: Any, docker_client: Any,
                                            prefix: str) -> None:
    cfg = make_config(pool={"maxTotal": 4, "minWarm": 2, "acquireTimeoutMs": 180000},
                      docker={"network": "host", "env": CAT})
    async with AsyncPool(cfg) as pool:
        await pool.containers.wait_warm(timeout=90)
        other = await asyncio.create_subprocess_exec(
            sys.executable, "-c", SHARED_SCRIPT, json.dumps(cfg),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        mine: list[str] = []

        async def one(i: int) -> None:
            s = pool.session(session_id=f"p1-{i}")
            await s.start()
            assert s.lease is not None
            mine.append(s.lease.container)
            await asyncio.sleep(0.5)
            await s.close(forget=True)

        with ContainerCounter(docker_client, prefix) as counter:
            await asyncio.gather(*(one(i) for i in range(6)))
            out, err = await asyncio.wait_for(other.communicate(), 300)
        assert other.returncode == 0, err.decode()[-2000:]
        theirs = json.loads(out.decode().strip().splitlines()[-1])
        assert len(mine) == 6 and len(theirs) == 6
        both = mine + theirs
        assert len(set(both)) == len(both), "a container was handed out twice"
        assert counter.max <= 4, f"{counter.max} containers with maxTotal 4 across 2 processes"


async def test_killed_busy_container_is_detected_replaced_and_reported(
        make_config: Any, api: Any, docker_client: Any, prefix: str) -> None:
    interval_ms = 1000
    cfg = make_config(pool={"minWarm": 1}, timeouts={"healthIntervalMs": interval_ms})
    api.on("slow", text(" ".join(["word"] * 60), delay=0.2))
    api.on("after", text("resumed fine"))
    async with AsyncPool(cfg) as pool:
        await pool.containers.wait_warm(timeout=90)
        s = pool.session(session_id="victim")
        await s.send("slow please")
        name: str | None = None
        killed_at = 0.0
        with pytest.raises(ContainerLost) as info:
            async for ev in s.receive(timeout=60):
                if type(ev).__name__ == "TextDelta" and name is None:
                    assert s.lease is not None
                    name = s.lease.name
                    victim, = docker_client.containers.list(filters={
                        "label": f"{LABEL}.container={s.lease.container}"})
                    victim.kill()
                    killed_at = time.monotonic()
        detected = time.monotonic() - killed_at
        assert detected <= 3 * interval_ms / 1000 + 1.0, f"detected after {detected:.2f}s"
        assert "lost" in str(info.value)
        # replaced: the lost container is removed, the warm set topped up, and the session
        # goes on in a new container
        deadline = time.monotonic() + 30
        while (await pool.stats()).replacements < 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        stats = await pool.stats()
        assert stats.lost >= 1 and stats.replacements >= 1
        await pool.containers.wait_warm(timeout=90)
        result = await s.ask("after the loss", timeout=90)
        assert result.text == "resumed fine"
        await s.close(forget=True)


async def test_idle_warm_containers_are_reaped_down_to_min_warm(
        make_config: Any, docker_client: Any, prefix: str) -> None:
    cfg = make_config(pool={"minWarm": 1}, timeouts={"healthIntervalMs": 300, "idleMs": 1500},
                      docker={"network": "host", "env": CAT})
    async with AsyncPool(cfg) as pool:
        await pool.warm(count=3, timeout=90)
        assert (await pool.stats()).warm == 3
        await pool.warm(count=1, wait=False)
        deadline = time.monotonic() + 20
        while (await pool.stats()).warm > 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        while len(pool_containers(docker_client, prefix)) > 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        stats = await pool.stats()
        assert stats.warm == 1 and stats.reaped == 2
        assert len(pool_containers(docker_client, prefix)) == 1


async def test_max_age_recycles_warm_containers(make_config: Any, docker_client: Any,
                                                prefix: str) -> None:
    cfg = make_config(pool={"minWarm": 1}, timeouts={"healthIntervalMs": 300, "maxAgeMs": 2500},
                      docker={"network": "host", "env": CAT})
    async with AsyncPool(cfg) as pool:
        await pool.containers.wait_warm(timeout=90)
        before = {r.id for r in await pool.containers.records()}
        deadline = time.monotonic() + 40
        after: set[str] = set()
        while time.monotonic() < deadline:
            after = {r.id for r in await pool.containers.records() if r.status == "warm"}
            if after and not after & before:
                break
            await asyncio.sleep(0.2)
        assert after and not after & before, "the old warm container was replaced"
        assert (await pool.stats()).recycled >= 1


async def test_max_age_recycles_a_busy_container_only_when_idle(
        make_config: Any, api: Any, docker_client: Any) -> None:
    cfg = make_config(timeouts={"healthIntervalMs": 300, "maxAgeMs": 4000})
    api.on("first", text("one"))
    api.on("slow", text(" ".join(["tick"] * 30), delay=0.2))
    api.on("second", text("two"))
    async with AsyncPool(cfg) as pool:
        s = pool.session(session_id="aging")
        assert (await s.ask("first turn", timeout=60)).text == "one"
        assert s.lease is not None
        first_container = s.lease.container
        # a turn that runs past maxAgeMs is never cut short
        slow = await s.ask("slow turn", timeout=60)
        assert slow.ok and slow.text.count("tick") == 30
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if (await s.state()).get("status") == "parked":
                break
            await asyncio.sleep(0.2)
        assert (await s.state()).get("status") == "parked", "idle busy container recycled"
        assert (await pool.stats()).recycled >= 1
        # the conversation continues in a fresh container
        assert (await s.ask("second turn", timeout=90)).text == "two"
        assert s.lease.container != first_container
        prior = api.message_requests[-1].messages
        assert any("first turn" in json.dumps(m) for m in prior), "resumed with its history"
        await s.close(forget=True)


async def test_startup_timeout_removes_the_container(make_config: Any, docker_client: Any,
                                                    agent_image: str, prefix: str) -> None:
    tag = "dockercc-test/never-ready:latest"
    docker_client.images.build(
        fileobj=__import__("io").BytesIO(
            f'FROM {agent_image}\nCMD ["sleep", "3600"]\n'.encode()), tag=tag, rm=True)
    try:
        cfg = make_config(image=tag, timeouts={"startupMs": 2000, "healthIntervalMs": 500})
        async with AsyncPool(cfg) as pool:
            t0 = time.monotonic()
            with pytest.raises(StartupTimeout) as info:
                await pool.session(session_id="never").start()
            assert time.monotonic() - t0 < 15
            assert "startupMs" in str(info.value)
            assert pool_containers(docker_client, prefix) == []
            assert (await pool.stats()).total == 0
    finally:
        docker_client.images.remove(tag, force=True)


KILLED_OWNER = textwrap.dedent("""
    import asyncio, json, sys
    from dockercc.client import AsyncPool

    async def main():
        pool = AsyncPool(json.loads(sys.argv[1]))
        await pool.start()
        await pool.containers.wait_warm(timeout=90)
        print("ready", flush=True)
        await asyncio.sleep(3600)

    asyncio.run(main())
""")


async def test_sigkilled_owner_leaves_containers_the_next_start_reaps(
        make_config: Any, docker_client: Any, prefix: str) -> None:
    cfg = make_config(pool={"minWarm": 2}, timeouts={"healthIntervalMs": 300},
                      docker={"network": "host", "env": CAT})
    proc = subprocess.Popen([sys.executable, "-c", KILLED_OWNER, json.dumps(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 120)
        assert line.strip() == b"ready", proc.stderr.read().decode() if proc.stderr else ""
        assert len(pool_containers(docker_client, prefix)) == 2
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    await asyncio.sleep(1.5)  # its heartbeat goes stale (3 x 300 ms)
    assert len(pool_containers(docker_client, prefix)) == 2, "SIGKILL leaves them behind"
    async with AsyncPool(make_config(timeouts={"healthIntervalMs": 300})) as pool:
        assert pool_containers(docker_client, prefix) == []
        assert (await pool.stats()).total == 0


async def test_canary_oauth_token_reaches_the_cli_and_nowhere_else(
        make_config: Any, api: Any, docker_client: Any, redis_server: Any, prefix: str,
        caplog: Any) -> None:
    canary = "sk-ant-oat01-CANARY-" + os.urandom(6).hex()
    cfg = make_config(credentials={"baseUrl": api.url, "apiKey": None, "oauthToken": canary})
    api.script(text("authorised"))
    caplog.set_level("DEBUG")
    async with AsyncPool(cfg) as pool:
        s = pool.session(session_id="canary")
        assert (await s.ask("hi", timeout=60)).text == "authorised"
        assert any(r.headers.get("authorization") == f"Bearer {canary}"
                   for r in api.message_requests)
        for c in pool_containers(docker_client, prefix):
            assert canary not in json.dumps(c.labels)
            assert canary not in c.logs().decode(errors="replace")
        await assert_not_in_redis(pool, prefix, canary)
        for obj in (pool, s, pool.config, pool.transport):
            assert canary not in repr(obj) and canary not in str(obj)
        assert canary not in caplog.text
        await s.close(forget=True)


SIGTERMED_OWNER = textwrap.dedent("""
    import json, sys, time
    from dockercc import Pool

    pool = Pool(json.loads(sys.argv[1]))
    pool.start()
    pool.warm(count=2)
    print("ready", flush=True)
    time.sleep(3600)
""")


async def test_sigterm_closes_the_pool_and_removes_its_containers(
        make_config: Any, docker_client: Any, prefix: str) -> None:
    cfg = make_config(docker={"network": "host", "env": CAT})
    proc = subprocess.Popen([sys.executable, "-c", SIGTERMED_OWNER, json.dumps(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 120)
        assert line.strip() == b"ready"
        assert len(pool_containers(docker_client, prefix)) == 2
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(asyncio.to_thread(proc.wait), 60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert pool_containers(docker_client, prefix) == [], "SIGTERM must clean up"


async def test_credentials_file_is_mounted_read_only_and_copied_home(
        make_config: Any, api: Any, tmp_path: Any) -> None:
    """With a network (here ``host``) the file goes into the container; on the default
    ``none`` network the egress proxy reads it on the host (tests/test_egress.py)."""
    creds = tmp_path / "credentials.json"
    creds.write_text('{"claudeAiOauth": {"accessToken": "test-not-a-real-token"}}')
    cfg = make_config(credentials={"baseUrl": api.url, "apiKey": "sk-ant-scripted-test",
                                   "credentialsFile": str(creds)}, docker={"network": "host"})
    api.script(tool_use("Bash", {"command": "stat -c %a ~/.claude/.credentials.json; "
                                            "md5sum < ~/.claude/.credentials.json; "
                                            "touch /run/dockercc/credentials.json || echo RO"}),
               text("checked"))
    async with AsyncPool(cfg) as pool:
        s = pool.session(permission_mode="bypassPermissions")
        assert (await s.ask("check the credentials", timeout=60)).text == "checked"
        out = api.message_requests[-1].tool_result_text
        import hashlib

        assert "600" in out
        assert hashlib.md5(creds.read_bytes()).hexdigest() in out
        assert "RO" in out, "the mounted file is read-only"
        await s.close(forget=True)


async def test_a_hung_runner_goes_stale_and_is_replaced(make_config: Any, docker_client: Any,
                                                        prefix: str) -> None:
    """The container keeps running but its runner stops heartbeating (SIGSTOP): after
    ``staleAfterMisses`` intervals it is declared lost, reported and removed."""
    interval_ms = 400
    cfg = make_config(timeouts={"healthIntervalMs": interval_ms, "staleAfterMisses": 3})
    async with AsyncPool(cfg) as pool:
        s = await claim_only(pool, "hung")
        assert s.lease is not None
        c, = docker_client.containers.list(
            filters={"label": f"{LABEL}.container={s.lease.container}"})
        code, out = c.exec_run(["pkill", "-STOP", "-f", "dockercc.agent"], user="0")
        assert code == 0, out
        stopped_at = time.monotonic()
        deadline = stopped_at + 20
        while time.monotonic() < deadline:
            if (await s.state()).get("status") == "lost":
                break
            await asyncio.sleep(0.1)
        took = time.monotonic() - stopped_at
        state = await s.state()
        assert state.get("status") == "lost" and "heartbeat stale" in state.get("error", "")
        assert took >= 3 * interval_ms / 1000 * 0.8, "not before the misses are up"
        deadline = time.monotonic() + 20
        while pool_containers(docker_client, prefix) and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert pool_containers(docker_client, prefix) == []
        assert (await pool.stats()).lost == 1
        await s.close(forget=True)


async def test_closing_while_a_warm_container_is_being_created_leaves_none(
        make_config: Any, docker_client: Any, prefix: str) -> None:
    """close() cancels a refill whose Docker call is still running in its worker thread (a
    slow Docker daemon: here 1.5 s in that thread before the real create); the pool waits for
    it, so the container it makes after close() began is removed too."""
    import threading

    from dockercc.pool.backend import DockerBackend

    entered = threading.Event()

    class SlowDocker(DockerBackend):
        def _create(self, *args: Any, **kwargs: Any) -> str:
            entered.set()
            time.sleep(1.5)
            return super()._create(*args, **kwargs)

    cfg = make_config(docker={"network": "host", "env": CAT})
    pool = AsyncPool(cfg, backend=SlowDocker())
    await pool.start()
    await pool.warm("main", count=1, wait=False)
    assert await asyncio.to_thread(entered.wait, 60)
    await pool.close()  # the Docker call has not even begun
    await asyncio.sleep(2.0)
    assert pool_containers(docker_client, prefix) == []


async def test_a_first_turn_cancelled_twice_during_its_claim_leaves_nothing_behind(
        make_config: Any, docker_client: Any, redis_server: Any, prefix: str) -> None:
    """A new session's ask() cancelled, and cancelled again while it takes its claim back,
    at timings swept across the claim (before and after the claim script, the hand-over,
    the confirmation): no container stays busy for a session that has no lease (the claim
    script's answer lost to the cancel, or a give-back cut short by the second cancel), and
    a closed session's keys stay deleted (a runner left holding the session would write its
    output after the close). Real Docker, Redis and runner; ``cat`` answers for the CLI."""
    cfg = make_config(pool={"minWarm": 1, "maxTotal": 8},
                      docker={"network": "host", "env": CAT})
    rounds = 24
    leaks: list[tuple[int, float, list[str], list[str]]] = []
    async with AsyncPool(cfg) as pool:
        # how long a first send takes here (the claim included): the sweep spans it
        await pool.containers.wait_warm(timeout=90)
        probe = pool.session(session_id="cancel-probe")
        t0 = time.perf_counter()
        await probe.send("hi")
        span = time.perf_counter() - t0
        await probe.close(forget=True)
        for i in range(rounds):
            await pool.containers.wait_warm(timeout=90)
            s = pool.session(session_id=f"cancel-{i}")
            turn = asyncio.ensure_future(s.ask("hi", timeout=30))
            delay = span * 1.5 * i / rounds
            await asyncio.sleep(delay)
            turn.cancel()
            # the second cancel: at once, a loop turn later, or a few ms into the clean-up
            gap = i % 4
            if gap == 1:
                await asyncio.sleep(0)
            elif gap > 1:
                await asyncio.sleep(0.002 * (gap - 1))
            turn.cancel()
            with contextlib.suppress(BaseException):
                await turn
            assert turn.cancelled()
            own = s.lease.container if s.lease is not None else None
            held = [r.id for r in await pool.containers.records()
                    if r.session == s.id and r.id != own]
            await s.close(forget=True)
            await asyncio.sleep(0.3)  # a runner that kept the session would write by now
            keys = sorted(k for k in redis_server.keys(f"{prefix}{s.id}:*"))
            if held or keys:
                leaks.append((i, round(delay * 1000, 1), held, keys))
    assert not leaks, f"(round, first cancel after ms, containers held, keys): {leaks}"
    assert pool_containers(docker_client, prefix) == []


async def test_a_warm_claim_leases_the_name_its_container_has(
        make_config: Any, docker_client: Any, agent_image: str, prefix: str) -> None:
    """A claimed warm container is renamed for its session (``docker logs
    clawdbot-cc-<session>``); the lease, and so ``repr(session)``, name it as it is once the
    claim returns: the session's name, or the warm name it kept when the rename failed (here
    a stale container, not the pool's, holds the session's name)."""
    cfg = make_config(pool={"minWarm": 1, "maxTotal": 3},
                      docker={"network": "host", "env": CAT})
    name_prefix = AsyncPool(cfg).config.docker.container_prefix
    stale = docker_client.containers.create(agent_image, name=f"{name_prefix}named-1",
                                            command=["true"])
    try:
        async with AsyncPool(cfg) as pool:
            for sid, renamed in (("named-0", True), ("named-1", False)):
                await pool.containers.wait_warm(timeout=90)
                warm = {r.id: r.name for r in await pool.containers.records()
                        if r.status == "warm"}
                s = pool.session(session_id=sid)
                await s.start()
                lease = s.lease
                assert lease is not None and lease.warm
                info = await asyncio.to_thread(docker_client.api.inspect_container, lease.name)
                assert info["Config"]["Labels"][f"{LABEL}.container"] == lease.container
                assert info["Name"].lstrip("/") == lease.name
                assert lease.name == (f"{name_prefix}{sid}" if renamed else warm[lease.container])
                assert f"container={lease.name!r}" in repr(s)
                await s.close(forget=True)
    finally:
        stale.remove(force=True)
