"""No orphan outlives its usefulness (issue 19): a pool closed after its Redis stopped removes
its containers through Docker's labels, and a runner whose owner was SIGKILLed while its Redis
is gone exits by itself after ``timeouts.orphanMs``, with a log of a few lines."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, TEST_PREFIXES

from dockercc.agent.liveness import ORPHAN_EXIT, RedisLink
from dockercc.client import AsyncPool
from dockercc.pool.backend import LABEL
from dockercc.testing import RedisServer


def test_redis_link_logs_once_per_state_change_and_gives_up_after_orphan_ms(
        caplog: pytest.LogCaptureFixture) -> None:
    orphaned: list[bool] = []
    link = RedisLink(0.3, lambda: orphaned.append(True))
    caplog.set_level(logging.INFO, logger="dockercc.agent")
    delays = [link.backoff("heartbeat", ConnectionError("refused")) for _ in range(200)]
    assert not orphaned  # (no time has passed)
    assert max(delays) <= 5.0 and delays[0] < 0.5  # bounded, starts small
    assert len(set(delays)) > 100  # jittered: runners of one outage do not retry in step
    link.ok()
    link.backoff("heartbeat", ConnectionError("refused"))
    time.sleep(0.35)
    link.backoff("writing output", ConnectionError("refused"))
    link.backoff("writing output", ConnectionError("refused"))
    assert orphaned == [True] and link.orphaned
    lines = [r.getMessage() for r in caplog.records]
    # 2 outages: lost, back, lost, given up; 400 failed tries never reach the log
    assert len(lines) == 4, lines
    assert "unreachable" in lines[0] and "reachable again" in lines[1]
    assert "exiting as an orphan" in lines[3]


def own_containers(docker_client: Any, prefix: str) -> list[Any]:
    return docker_client.containers.list(all=True, filters={"label": f"{LABEL}.prefix={prefix}"})


def pool_config(redis: RedisServer, api: Any, image: str, prefix: str,
                **timeouts: int) -> dict[str, Any]:
    return {
        "image": image,
        "redis": {"url": redis.url, "keyPrefix": prefix},
        "credentials": {"baseUrl": api.url, "apiKey": "sk-ant-scripted-test"},
        "resources": {"memory": "512m", "cpus": 1},
        "timeouts": {"healthIntervalMs": 1000, "startupMs": 60000, **timeouts},
        "pool": {"minWarm": 1, "acquireTimeoutMs": 60000},
    }


@pytest.mark.docker
async def test_close_after_redis_stopped_leaves_no_container(
        tmp_path: Path, api: Any, agent_image: str, docker_client: Any) -> None:
    prefix = f"o{uuid.uuid4().hex[:8]}:"
    TEST_PREFIXES.add(prefix)
    with RedisServer(tmp_path) as redis:
        pool = AsyncPool(pool_config(redis, api, agent_image, prefix))
        await pool.start()
        try:
            await pool.containers.wait_warm(1, timeout=60)
            assert len(own_containers(docker_client, prefix)) == 1
            redis.stop()
        finally:
            started = time.monotonic()
            await pool.close()
            took = time.monotonic() - started
        assert own_containers(docker_client, prefix) == []
        assert took < 30, f"close() without Redis took {took:.1f}s"


OWNER = """
import asyncio, sys
from dockercc.client import AsyncPool

async def main():
    pool = AsyncPool({config!r})
    await pool.start()
    await pool.containers.wait_warm(1, timeout=60)
    print("warm", flush=True)
    await asyncio.sleep(600)

asyncio.run(main())
"""


class LogFollower:
    """Follow a container's log stream from its first line in a thread (``docker logs -f``):
    the lines are kept after the container removed itself."""

    def __init__(self, container: Any) -> None:
        import threading

        self.lines: list[str] = []
        self._stream = container.logs(stream=True, follow=True)
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        buf = b""
        try:
            for chunk in self._stream:
                buf += chunk
                *done, buf = buf.split(b"\n")
                self.lines.extend(x.decode(errors="replace") for x in done)
        except Exception:  # noqa: BLE001 - the container went away mid-read
            pass
        if buf:
            self.lines.append(buf.decode(errors="replace"))

    def join(self, timeout: float) -> list[str]:
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._stream.close()
        return self.lines


def die_exit_code(docker_client: Any, container_id: str, since: float) -> int | None:
    """The exit code Docker's ``die`` event of the container carried (the container itself,
    and with it its State.ExitCode, is gone)."""
    for event in docker_client.events(since=int(since) - 1, until=int(time.time()) + 1,
                                      decode=True, filters={"container": container_id,
                                                            "event": "die"}):
        return int(event["Actor"]["Attributes"]["exitCode"])
    return None


async def gc_takes_the_orphans_volume(redis: RedisServer, api: Any, image: str, prefix: str,
                                      docker_client: Any) -> None:
    """The one thing an orphan leaves: its never-claimed scratch volume (no process is left
    that could know it holds nothing; AutoRemove takes only anonymous volumes), which
    ``dockercc gc`` (``sweep_scratch_volumes``) removes."""
    from dockercc.files import sweep_scratch_volumes

    def ours() -> list[Any]:
        return docker_client.volumes.list(filters={"label": f"{LABEL}.prefix={prefix}"})

    assert len(ours()) == 1, ours()
    pool = AsyncPool(pool_config(redis, api, image, prefix))
    try:
        assert await sweep_scratch_volumes(pool.containers) == 1
    finally:
        await pool.close()
    assert ours() == []


async def wait_gone(docker_client: Any, prefix: str, container: Any, gone_at: float,
                    deadline: float) -> float:
    """Seconds from ``gone_at`` until no container of ``prefix`` is left (``docker ps -a``)."""
    while time.monotonic() < deadline:
        if not own_containers(docker_client, prefix):
            return time.monotonic() - gone_at
        await asyncio.sleep(0.2)
    left = [(c.name, c.status) for c in own_containers(docker_client, prefix)]
    raise AssertionError(f"container(s) still there {time.monotonic() - gone_at:.1f}s after "
                         f"the owner went: {left}")


@pytest.mark.docker
@pytest.mark.timeout(180)
async def test_sigkilled_owner_and_stopped_redis_the_orphan_exits_by_itself(
        tmp_path: Path, api: Any, agent_image: str, docker_client: Any) -> None:
    """... and its container goes away by itself (AutoRemove); what `gc` is left is its
    never-claimed scratch volume."""
    orphan_ms = 4000
    prefix = f"o{uuid.uuid4().hex[:8]}:"
    TEST_PREFIXES.add(prefix)
    with RedisServer(tmp_path) as redis:
        cfg = pool_config(redis, api, agent_image, prefix, orphanMs=orphan_ms)
        owner = subprocess.Popen([sys.executable, "-c", OWNER.format(config=cfg)],
                                 stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            assert owner.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(owner.stdout.readline), 90)
            assert line.strip() == "warm", line
            [container] = own_containers(docker_client, prefix)
            follower = LogFollower(container)
            since = time.time()
            owner.send_signal(signal.SIGKILL)
            owner.wait(10)
            redis.stop()
            gone_at = time.monotonic()
            # orphanMs, one back-off step (0.5 s here), the runner's shutdown and Docker's
            # removal: a small margin
            waited = await wait_gone(docker_client, prefix, container, gone_at,
                                     gone_at + orphan_ms / 1000 + 4)
            assert waited >= orphan_ms / 1000 - 0.5, f"gone after {waited:.1f}s: too early"
            assert die_exit_code(docker_client, container.id, since) == ORPHAN_EXIT
            log = await asyncio.to_thread(follower.join, 10)
            # a few lines for the whole wait (once per state change), not one per try
            assert len(log) <= 10, log
            assert any("exiting as an orphan" in x for x in log), log
            print(f"\norphan exited and was removed {waited:.1f}s after its Redis stopped "
                  f"(orphanMs {orphan_ms}), {len(log)} log lines")
            redis.start()
            await gc_takes_the_orphans_volume(redis, api, agent_image, prefix, docker_client)
        finally:
            if owner.poll() is None:
                owner.kill()
                owner.wait(10)
            for c in own_containers(docker_client, prefix):
                c.remove(force=True)


@pytest.mark.docker
@pytest.mark.timeout(400)
async def test_docker_kill_reaches_the_session_as_container_lost_within_a_second(
        api: Any, agent_image: str, docker_client: Any, make_config: Any, prefix: str) -> None:
    """Docker's `die` event, not the health pass, reports the loss: the health interval is
    set far beyond the budget so polling cannot be what makes it."""
    from dockercc.errors import ContainerLost
    from dockercc.events import TextDelta
    from dockercc.testing import text

    kills = int(os.environ.get("DOCKERCC_KILL_ROUNDS", "10"))
    api.on("count", text("one two three four five six seven eight nine ten " * 20, delay=0.5))
    cfg = make_config(timeouts={"healthIntervalMs": 30000, "startupMs": 60000},
                      pool={"minWarm": 1, "acquireTimeoutMs": 60000})
    latencies: list[float] = []
    async with AsyncPool(cfg) as pool:
        s = pool.session(session_id=f"kill-{uuid.uuid4().hex[:6]}")
        for _ in range(kills):
            await s.send("count slowly")
            killed_at = 0.0
            with pytest.raises(ContainerLost) as info:
                async for ev in s.receive(timeout=90):
                    if isinstance(ev, TextDelta) and not killed_at:
                        assert s.lease is not None
                        [c] = docker_client.containers.list(filters={"label": [
                            f"{LABEL}.prefix={prefix}", f"{LABEL}.container={s.lease.container}"]})
                        killed_at = time.monotonic()
                        await asyncio.to_thread(c.kill)
            latencies.append(time.monotonic() - killed_at)
            # the container removed itself: the `die` event's exit code says why
            assert "container exited (exit code 137)" in str(info.value), info.value
        await s.close(forget=True)
    latencies.sort()
    p50 = latencies[len(latencies) // 2]
    print(f"\ndocker kill -> ContainerLost over {kills} kills: p50 {p50 * 1000:.0f} ms, "
          f"max {latencies[-1] * 1000:.0f} ms, all {[round(x * 1000) for x in latencies]}")
    assert p50 < 1.0, latencies


@pytest.mark.docker
@pytest.mark.timeout(180)
async def test_an_unclaimed_runner_whose_owner_died_exits_while_redis_is_up(
        tmp_path: Path, api: Any, agent_image: str, docker_client: Any) -> None:
    """Host networking: the runner reaches Redis without its owner, so only the owner's
    heartbeat (refreshed into the runner's own record) says it is an orphan."""
    orphan_ms = 3000
    prefix = f"o{uuid.uuid4().hex[:8]}:"
    TEST_PREFIXES.add(prefix)
    with RedisServer(tmp_path) as redis:
        cfg = pool_config(redis, api, agent_image, prefix, orphanMs=orphan_ms)
        cfg["docker"] = {"network": "host"}
        owner = subprocess.Popen([sys.executable, "-c", OWNER.format(config=cfg)],
                                 stdout=subprocess.PIPE, text=True,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
        try:
            assert owner.stdout is not None
            line = await asyncio.wait_for(asyncio.to_thread(owner.stdout.readline), 90)
            assert line.strip() == "warm", line
            [container] = own_containers(docker_client, prefix)
            follower = LogFollower(container)
            since = time.time()
            await asyncio.sleep(1.5)  # (one health pass: the owner's heartbeat is in place)
            owner.send_signal(signal.SIGKILL)
            owner.wait(10)
            gone_at = time.monotonic()
            # the owner's last heartbeat may be up to one health pass (1 s) older
            waited = await wait_gone(docker_client, prefix, container, gone_at,
                                     gone_at + orphan_ms / 1000 + 5)
            assert die_exit_code(docker_client, container.id, since) == ORPHAN_EXIT
            log = await asyncio.to_thread(follower.join, 10)
            assert len(log) <= 10 and any("owner has not been seen" in x for x in log), log
            print(f"\nunclaimed orphan exited and was removed {waited:.1f}s after its owner "
                  f"died (orphanMs {orphan_ms})")
            await gc_takes_the_orphans_volume(redis, api, agent_image, prefix, docker_client)
        finally:
            if owner.poll() is None:
                owner.kill()
                owner.wait(10)
            for c in own_containers(docker_client, prefix):
                c.remove(force=True)


@pytest.mark.docker
@pytest.mark.timeout(240)
async def test_a_cold_container_that_dies_in_start_up_is_container_lost_with_its_exit_code(
        api: Any, docker_client: Any, make_config: Any, prefix: str) -> None:
    """It removed itself (AutoRemove), so nothing is left to inspect: the exit code comes
    from Docker's `die` event, and no container is left behind."""
    import threading

    from dockercc.errors import ContainerLost

    cfg = make_config(pool={"minWarm": 0, "acquireTimeoutMs": 60000})
    stop = threading.Event()
    killed: list[str] = []
    events = docker_client.events(decode=True, filters={
        "type": ["container"], "event": ["start"], "label": [f"{LABEL}.prefix={prefix}"]})

    def killer() -> None:  # every container of this pool dies as it starts
        for event in events:
            if stop.is_set():
                return
            with contextlib.suppress(Exception):
                docker_client.api.kill(event["id"])
                killed.append(event["id"])

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    try:
        async with AsyncPool(cfg) as pool:
            s = pool.session(session_id=f"cold-{uuid.uuid4().hex[:6]}")
            with pytest.raises(ContainerLost) as info:
                await s.start()
            print(f"\n{info.value}")
            assert "exited during start-up and was removed (exit code 137)" in str(
                info.value), info.value
            assert len(killed) == 2  # the claim tried once more
            assert (await pool.containers.stats()).startup_failures == 2
            assert own_containers(docker_client, prefix) == []
    finally:
        stop.set()
        events.close()
        thread.join(5)
