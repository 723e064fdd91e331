"""Cron: a job the agent creates through ``cron_create`` fires on schedule and keeps firing
after the pool's owner process is restarted (a real second process); the scheduler's
claim, missed-run and skip rules against a real Redis.

Run as a script, this file is the owner process: ``python test_builtins_cron.py CONFIG MODE
READY_FILE`` starts a pool (its cron scheduler runs), in mode ``create`` first asks one
prompt (the scripted API makes the agent call cron_create), then serves until SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import redis

from dockercc.builtins import CronJob
from dockercc.client import AsyncPool

HOST = "mcp__host__"


# ----------------------------------------------------------------------------- owner process


async def owner_main(config: dict[str, Any], mode: str, ready: Path) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    pool = AsyncPool(config)
    try:
        await pool.start()
        assert pool.cron.running
        if mode == "create":
            async with pool.session() as s:
                result = await s.ask("cron-setup please", timeout=180)
                note = {"text": result.text, "session": s.id}
        else:
            note = {"text": "serving"}
        await asyncio.to_thread(ready.write_text, json.dumps(note))
        await stop.wait()
    finally:
        await pool.close()
    return 0


def start_owner(config: dict[str, Any], mode: str, tmp: Path) -> tuple[subprocess.Popen[bytes],
                                                                       Path, Path]:
    ready = tmp / f"ready-{mode}-{time.monotonic_ns()}"
    log = tmp / f"owner-{mode}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, __file__, json.dumps(config), mode, str(ready)],
                                stdout=out, stderr=subprocess.STDOUT,
                                cwd=Path(__file__).resolve().parent.parent,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})
    return proc, ready, log


def stop_owner(proc: subprocess.Popen[bytes], log: Path) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(90)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    assert proc.returncode == 0, f"owner exited {proc.returncode}:\n{log.read_text()[-3000:]}"


def wait_for(what: str, check: Any, timeout: float, proc: subprocess.Popen[bytes] | None = None,
             log: Path | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            pytest.fail(f"owner process died ({proc.returncode}) while waiting for {what}:\n"
                        f"{log.read_text()[-3000:] if log else ''}")
        time.sleep(0.2)
    tail = log.read_text()[-3000:] if log else ""
    pytest.fail(f"timed out after {timeout}s waiting for {what}\n{tail}")


def jobs(redis_server: Any, prefix: str) -> list[CronJob]:
    client = redis.Redis.from_url(redis_server.url)
    try:
        return [CronJob.model_validate_json(v) for v in client.hvals(f"{prefix}cron:jobs")]
    finally:
        client.close()


@pytest.mark.docker
@pytest.mark.timeout(900)
def test_cron_job_from_the_tool_fires_and_survives_an_owner_restart(
        make_config: Any, api: Any, redis_server: Any, prefix: str, tmp_path: Path) -> None:
    api.on("cron-setup",
           tool_use_reply("cron_create", {"schedule": "* * * * * */2",
                                          "prompt": "cron-tick from the schedule",
                                          "description": "every two seconds"}),
           "scheduled")
    api.on("cron-tick", "tick done")
    config = make_config(tools={"cron": {"minIntervalS": 1}})

    def ticks(after: float = 0.0) -> list[Any]:
        return [r for r in api.message_requests
                if "cron-tick" in r.last_user_text and r.timestamp > after]

    proc, ready, log = start_owner(config, "create", tmp_path)
    try:
        wait_for("the set-up turn", ready.exists, 240, proc, log)
        assert json.loads(ready.read_text())["text"] == "scheduled"
        created = json.loads(next(r for r in api.message_requests
                                  if "cron-setup" in r.last_user_text and r.tool_results
                                  ).tool_result_text)
        assert created["created"] and created["schedule"] == "* * * * * */2"
        (job,) = jobs(redis_server, prefix)
        assert job.id == created["id"] and job.agent == "main" and job.created_by
        # it fires on schedule in the first owner, and the run is recorded on the job
        wait_for("a scheduled prompt", ticks, 150, proc, log)
        first = wait_for("a finished run", lambda: [j for j in jobs(redis_server, prefix)
                                                    if j.run_count >= 1 and j.last_run
                                                    and j.last_run.status == "ok"], 150, proc,
                         log)[0]
        assert first.last_run is not None and first.last_run.result == "tick done"
        assert first.last_run.session and first.last_run.session.startswith(f"cron-{job.id}-")
    finally:
        stop_owner(proc, log)

    restarted = time.time()
    count_before = jobs(redis_server, prefix)[0].run_count
    proc, ready, log = start_owner(config, "serve", tmp_path)
    try:
        wait_for("the restarted owner", ready.exists, 120, proc, log)
        wait_for("a prompt fired by the restarted owner", lambda: ticks(restarted), 150, proc,
                 log)
        later = wait_for("a run recorded by the restarted owner", lambda: [
            j for j in jobs(redis_server, prefix)
            if j.last_run and j.last_run.status == "ok"
            and j.last_run.started_ms > restarted * 1000], 150, proc, log)[0]
        assert later.id == job.id and later.run_count > count_before
    finally:
        stop_owner(proc, log)
        redis_server.cli("del", f"{prefix}cron:jobs", f"{prefix}cron:due")


def tool_use_reply(tool: str, args: dict[str, Any]) -> Any:
    from dockercc.testing import tool_use

    return tool_use(HOST + tool, args)


# ----------------------------------------------------------------------------- scheduler rules


async def test_scheduler_claims_each_run_once_and_records_missed_and_skipped_runs(
        redis_server: Any, prefix: str) -> None:
    config = {"redis": {"url": redis_server.url, "keyPrefix": prefix},
              "tools": {"cron": {"missedGraceMs": 60_000, "maxJobs": 2}}}
    a, b = AsyncPool(config), AsyncPool(config)
    try:
        job = await a.cron.create("* * * * * *", "late prompt", agent="main")
        due_key = a.cron.due_key
        long_ago = int(time.time() * 1000) - 3_600_000
        await a.transport.client.zadd(due_key, {job.id: long_ago})
        # two schedulers see the same due run: exactly one claims it; it is an hour late,
        # beyond missedGraceMs, so it is recorded as missed and not run
        await asyncio.gather(a.cron.tick(), b.cron.tick())
        stored = await a.cron.get(job.id)
        assert stored is not None and stored.skipped_count == 1 and stored.run_count == 0
        assert stored.last_skip is not None and stored.last_skip.status == "missed"
        assert stored.last_skip.scheduled_ms == long_ago and stored.last_run is None
        (listed, next_ms), = await b.cron.jobs()
        assert listed.id == job.id and next_ms is not None
        assert next_ms > time.time() * 1000 - 1000  # rescheduled from now, no burst

        # a job for a session nobody has open: due now, claimed, recorded as skipped
        other = await a.transport.client.hset(a.sessions_key, "ghost-session", json.dumps(
            {"agent": "main", "owner": "gone-owner", "created": 0, "parent": "",
             "tenant": a.tenant}))
        assert other == 1
        ghost = await a.cron.create("* * * * *", "hello ghost", session="ghost-session")
        await a.transport.client.hdel(a.sessions_key, "ghost-session")
        await a.transport.client.zadd(due_key, {ghost.id: int(time.time() * 1000) - 10})
        await b.cron.tick()
        for _ in range(50):
            stored = await b.cron.get(ghost.id)
            if stored and stored.last_skip:
                break
            await asyncio.sleep(0.05)
        assert stored is not None and stored.last_skip is not None
        assert stored.last_skip.status == "skipped" and stored.run_count == 0
        assert "not open" in (stored.last_skip.error or "")

        # bad jobs are refused with what is allowed
        with pytest.raises(ValueError, match="maxJobs"):
            await a.cron.create("@hourly", "third", agent="main")
        assert await a.cron.delete(ghost.id)
        for kwargs, match in (
                ({"schedule": "sometimes", "agent": "main"}, "invalid schedule"),
                ({"schedule": "@daily", "agent": "main", "timezone": "Nowhere/City"},
                 "time zone"),
                ({"schedule": "@daily", "session": "not-open-anywhere"}, "no open session"),
                ({"schedule": "@daily"}, "either an agent or a session"),
                ({"schedule": "@daily", "agent": "nobody"}, "unknown agent")):
            with pytest.raises(ValueError, match=match):
                await a.cron.create(prompt="x", **kwargs)
        assert await a.cron.delete(job.id) and not await a.cron.delete(job.id)
        assert await a.cron.jobs() == []
    finally:
        await a.cron.stop()
        await b.cron.stop()
        await a.transport.close()
        await b.transport.close()


if __name__ == "__main__":
    sys.exit(asyncio.run(owner_main(json.loads(sys.argv[1]), sys.argv[2], Path(sys.argv[3]))))
