"""Scheduled prompts: the ``cron_*`` tools and the scheduler in the pool owner's process.

A job sends ``prompt`` on a cron schedule (``croniter``: 5 fields ``minute hour day month
weekday``, or 6 with **seconds last**, or ``@hourly`` / ``@daily`` / ...; in the job's
``timezone``, default UTC) to either

* an **agent**: each run opens a new session of that agent (id ``cron-<job>-<random>``), asks, and
  closes it (its history stays readable with ``sessions_history`` for 7 days), or
* a **session**: the prompt is a new turn of that open session. The process that has the
  session open runs it; when no process has it open the run is recorded as ``skipped``.

Storage (under the key prefix): ``{p}cron:jobs`` (hash: id -> job JSON, with its last run and
run count) and ``{p}cron:due`` (sorted set: id -> next run, ms). Every pool process runs a
scheduler (``tools.cron.enabled``); a due run is claimed by moving its score to the next run
with a compare-and-set, so with several processes each run happens once. Jobs live in Redis,
so they survive a restart of the owner process.

Missed runs: a run whose time passed while no scheduler was running is made up **once** when
a scheduler sees it, if it is at most ``tools.cron.missedGraceMs`` late (default 1 hour);
older misses are recorded as ``missed`` and not run. Either way the next run is computed from
the current time, so a long outage never causes a burst of catch-up runs. A run that is due
while the job's previous run (in this process) is still going is recorded as ``skipped``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, Field

from ..bridge import Tool
from ..errors import ConfigError, InvalidSessionId
from ..protocol.control import check_prompt
from ..protocol.keys import validate_id
from ._base import (
    BuiltinHost,
    BuiltinToolError,
    ToolContext,
    builtin,
    clip,
    now_ms,
    run_turn,
    to_json,
)
from .sessions import spawn_agent

if TYPE_CHECKING:  # pragma: no cover
    pass

log = logging.getLogger("dockercc.cron")

__all__ = ["CronJob", "CronRun", "CronScheduler", "cron_tools", "next_run_ms",
           "validate_schedule"]

NICKNAMES = frozenset({"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight",
                       "@hourly"})
RESULT_CHARS = 1000
IDLE_POLL_S = 5.0
"""How often a scheduler without any job looks for jobs created by other processes."""


class CronRun(BaseModel):
    """One run of a job."""

    scheduled_ms: int
    started_ms: int
    finished_ms: int | None = None
    status: Literal["running", "ok", "error", "timeout", "skipped", "missed", "cancelled"]
    session: str | None = None
    result: str | None = None
    error: str | None = None


class CronJob(BaseModel):
    """A scheduled prompt."""

    id: str
    schedule: str
    prompt: str
    agent: str | None = None
    session: str | None = None
    timezone: str = "UTC"
    description: str | None = None
    created_ms: int = Field(default_factory=now_ms)
    created_by: str | None = None
    tenant: str | None = Field(None, description="Only processes of this tenant run the job "
                               "and only its sessions see it (cron_list, cron_delete)")
    run_count: int = Field(0, description="Runs that sent the prompt (whatever their outcome)")
    last_run: CronRun | None = None
    skipped_count: int = Field(0, description="Runs not made (missed, overlapping, no session)")
    last_skip: CronRun | None = None


def validate_schedule(schedule: str) -> str:
    """``schedule`` stripped, or ``ValueError`` saying what a schedule looks like."""
    expr = " ".join(schedule.split())
    allowed = ("a cron expression: 5 fields 'minute hour day month weekday' (e.g. '*/15 * * * "
               "*'), 6 with seconds last (e.g. '* * * * * */10'), or @hourly/@daily/@weekly/"
               "@monthly/@yearly")
    if expr.startswith("@"):
        if expr.lower() not in NICKNAMES:
            raise ValueError(f"invalid schedule {schedule!r}: use {allowed}")
        return expr.lower()
    if len(expr.split()) not in (5, 6) or not croniter.is_valid(expr):
        raise ValueError(f"invalid schedule {schedule!r}: use {allowed}")
    return expr


def _zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (use an IANA name like 'UTC' or "
                         f"'Europe/Berlin')") from None


def next_run_ms(schedule: str, timezone: str, after_ms: int) -> int:
    """The first time (ms) strictly after ``after_ms`` that ``schedule`` fires."""
    base = datetime.fromtimestamp(after_ms / 1000, _zone(timezone))
    nxt = croniter(schedule, base).get_next(datetime)
    return int(nxt.timestamp() * 1000)


def shortest_interval_s(schedule: str, timezone: str, runs: int = 12) -> float:
    """The shortest gap (s) between the next ``runs`` firings of ``schedule``."""
    t = next_run_ms(schedule, timezone, now_ms())
    gaps = []
    for _ in range(runs):
        nxt = next_run_ms(schedule, timezone, t)
        gaps.append((nxt - t) / 1000)
        t = nxt
    return min(gaps)


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds")


class CronScheduler:
    """The cron jobs of a pool (shared through Redis) and this process's scheduler."""

    def __init__(self, host: BuiltinHost) -> None:
        self.host = host
        self.jobs_key = host.transport.pool_keys.cron_jobs
        self.due_key = host.transport.pool_keys.cron_due
        self._task: asyncio.Task[None] | None = None
        self._running: dict[str, asyncio.Task[None]] = {}
        self._wake = asyncio.Event()

    @property
    def config(self) -> Any:
        return self.host.config.tools.cron

    @property
    def running(self) -> bool:
        """Whether this process's scheduler loop runs."""
        return self._task is not None and not self._task.done()

    @property
    def _store(self) -> Any:
        return self.host.transport.cron

    # -- jobs ------------------------------------------------------------------------------

    async def create(self, schedule: str, prompt: str, *, agent: str | None = None,
                     session: str | None = None, timezone: str = "UTC",
                     description: str | None = None, created_by: str | None = None,
                     min_interval_s: float | None = None) -> CronJob:
        """Store a job (of this pool's tenant) and schedule its first run. ``ValueError`` /
        ``ConfigError`` for bad arguments; ``min_interval_s`` refuses schedules that fire more
        often (the tools pass ``tools.cron.minIntervalS``)."""
        expr = validate_schedule(schedule)
        _zone(timezone)
        if min_interval_s is not None:
            gap = shortest_interval_s(expr, timezone)
            if gap < min_interval_s:
                raise ValueError(f"schedule {expr!r} fires every {gap:g}s; the shortest "
                                 f"interval allowed is {min_interval_s:g}s "
                                 f"(tools.cron.minIntervalS)")
        check_prompt(prompt)
        if (agent is None) == (session is None):
            raise ValueError("a job targets either an agent or a session")
        if agent is not None:
            self.host.config.agent(agent)
        if session is not None:
            try:
                validate_id(session)
            except InvalidSessionId as exc:
                raise ValueError(str(exc)) from None
            record = await self.host.transport.session_record(session)
            if record is None or record.get("tenant") != self.host.tenant:
                raise ValueError(f"no open session {session!r} to schedule prompts to")
        if await self._store.count() >= self.config.max_jobs:
            raise ValueError(f"there are already {self.config.max_jobs} cron jobs "
                             f"(tools.cron.maxJobs); delete one first")
        job = CronJob(id=f"job-{secrets.token_hex(4)}", schedule=expr, prompt=prompt,
                      agent=agent, session=session, timezone=timezone,
                      description=description, created_by=created_by,
                      tenant=self.host.tenant)
        nxt = next_run_ms(expr, timezone, now_ms())
        await self._store.add(job.id, job.model_dump_json(), nxt)
        self._wake.set()
        return job

    async def get(self, job_id: str) -> CronJob | None:
        raw = await self._store.job(job_id)
        return CronJob.model_validate_json(raw) if raw is not None else None

    async def jobs(self, *, tenant: str | None = None) -> list[tuple[CronJob, int | None]]:
        """Every job (or ``tenant``'s) with its next run (ms), oldest job first."""
        raw, due = await self._store.jobs()
        jobs = []
        for value in raw:
            try:
                job = CronJob.model_validate_json(value)
            except ValueError:
                continue
            if tenant is None or job.tenant == tenant:
                jobs.append(job)
        jobs.sort(key=lambda j: j.created_ms)
        return [(job, due.get(job.id)) for job in jobs]

    async def delete(self, job_id: str, *, tenant: str | None = None) -> bool:
        """Remove a job (a run in progress finishes); False if there was none (or, with
        ``tenant``, none of that tenant)."""
        if tenant is not None:
            job = None
            with contextlib.suppress(ValueError):
                job = await self.get(job_id)
            if job is None or job.tenant != tenant:
                return False
        return bool(await self._store.remove(job_id))

    # -- scheduler -------------------------------------------------------------------------

    async def start(self) -> None:
        """Start this process's scheduler loop (unless ``tools.cron.enabled`` is false)."""
        if self.running or not self.config.enabled:
            return
        self._task = asyncio.create_task(self._loop(), name="dockercc-cron")

    async def stop(self) -> None:
        """Stop the loop and cancel the runs in progress (recorded as ``cancelled``)."""
        task, self._task = self._task, None
        tasks = [t for t in (task, *self._running.values()) if t is not None]
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(BaseException):
                await t
        self._running.clear()

    async def _loop(self) -> None:
        while True:
            try:
                wait = await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the scheduler must go on
                log.warning("cron scheduler: %s", exc)
                wait = 1.0
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), wait)

    async def tick(self) -> float:
        """Start every due run; returns how long to sleep before the next check."""
        now = now_ms()
        for job_id, score in await self._store.due(now):
            await self._consider(job_id, score, now)
        upcoming = await self._store.next_due()
        if upcoming is not None:
            return min(1.0, max(0.02, (upcoming - now_ms()) / 1000))
        return IDLE_POLL_S  # no jobs: jobs created here wake the loop at once

    async def _owner_alive(self, owner: str) -> bool:
        hb = await self._store.owner_heartbeat(owner)
        if hb is None:
            return False
        return now_ms() - hb <= max(self.host.stale_after_ms(), 1000)

    async def _consider(self, job_id: str, score: int, now: int) -> None:
        raw = await self._store.job(job_id)
        if raw is None:
            await self._store.unschedule(job_id)
            return
        try:
            job = CronJob.model_validate_json(raw)
        except ValueError as exc:  # not a job this process wrote: drop it, never run it
            log.warning("cron job %r dropped: %s", job_id[:64], str(exc)[:200])
            await self._store.unschedule(job_id)
            return
        if job.tenant != self.host.tenant:
            return  # another tenant's job: its own processes run it (never claimed here)
        if job.session is not None:
            local = self.host.get(job.session)
            if local is None or local.closed:
                record = await self.host.transport.session_record(job.session)
                if record is not None:
                    owner = record.get("owner") or ""
                    if owner != self.host.owner and await self._owner_alive(str(owner)):
                        return  # the process that has the session open runs it
        nxt = next_run_ms(job.schedule, job.timezone, max(now, score))
        if not await self._store.claim_run(job_id, score, nxt):
            return  # another scheduler took this run
        late = now - score
        if late > self.config.missed_grace_ms:
            await self._note(job, CronRun(scheduled_ms=score, started_ms=now, finished_ms=now,
                                          status="missed",
                                          error=f"{late // 1000}s late (missedGraceMs)"),
                             "skip")
            return
        if job_id in self._running:
            await self._note(job, CronRun(scheduled_ms=score, started_ms=now, finished_ms=now,
                                          status="skipped", error="the previous run is still "
                                          "going"), "skip")
            return
        task = asyncio.create_task(self._run(job, score), name=f"dockercc-cron-{job_id}")
        self._running[job_id] = task
        task.add_done_callback(functools.partial(self._forget, job_id))

    def _forget(self, job_id: str, task: asyncio.Task[None]) -> None:
        if self._running.get(job_id) is task:
            del self._running[job_id]

    async def _note(self, job: CronJob, run: CronRun,
                    kind: Literal["start", "end", "skip"] = "end") -> None:
        await self._store.record_run(job.id, run.model_dump_json(), kind)

    async def _run(self, job: CronJob, scheduled: int) -> None:
        host = self.host
        timeout = self.config.run_timeout_ms / 1000
        run = CronRun(scheduled_ms=scheduled, started_ms=now_ms(), status="running")
        if job.session is not None and ((target := host.get(job.session)) is None
                                        or target.closed):
            run.status, run.error = "skipped", f"session {job.session!r} is not open"
            run.finished_ms = run.started_ms
            await self._note(job, run, "skip")
            return
        try:
            if job.session is not None:
                assert target is not None
                run.session = target.id
                await self._note(job, run, "start")
                result = await run_turn(host, target, job.prompt, timeout)
            else:
                assert job.agent is not None
                session = host.open_session(job.agent,
                                            session_id=f"cron-{job.id}-{secrets.token_hex(3)}")
                run.session = session.id
                await self._note(job, run, "start")
                try:
                    result = await asyncio.wait_for(session.ask(job.prompt, check=False),
                                                    timeout)
                finally:
                    await session.close()
            run.status = "ok" if result.ok else "error"
            run.result, _ = clip(result.text or "", RESULT_CHARS)
            if not result.ok:
                run.error = result.subtype
        except asyncio.CancelledError:
            run.status, run.error = "cancelled", "the scheduler stopped"
            raise
        except TimeoutError:
            run.status, run.error = "timeout", f"no result within {timeout:g}s"
        except Exception as exc:  # noqa: BLE001 - recorded on the job
            run.status, run.error = "error", f"{type(exc).__name__}: {exc}"[:500]
        finally:
            run.finished_ms = now_ms()
            with contextlib.suppress(Exception):
                await self._note(job, run)


def _job_view(job: CronJob, next_ms: int | None) -> dict[str, Any]:
    out = job.model_dump(exclude_none=True)
    out["next_run"] = _iso(next_ms)
    if next_ms is not None:
        out["next_run_in_s"] = round((next_ms - now_ms()) / 1000, 1)
    return out


def cron_tools(ctx: ToolContext) -> list[Tool[..., Any]]:
    me = ctx.session

    def scheduler() -> CronScheduler:
        return ctx.host.cron

    async def cron_list() -> Any:
        jobs = await scheduler().jobs(tenant=ctx.host.tenant)
        return to_json({"count": len(jobs), "jobs": [_job_view(j, n) for j, n in jobs]})

    async def cron_create(schedule: Annotated[str, Field(min_length=1, max_length=200)],
                          prompt: Annotated[str, Field(min_length=1, max_length=100_000)],
                          agent: str | None = None, session_id: str | None = None,
                          timezone: str = "UTC",
                          description: Annotated[str | None, Field(max_length=500)] = None
                          ) -> Any:
        if agent is None and session_id is None:
            agent = me.agent
        if agent is not None:
            spawn_agent(me, agent)  # the agents sessions_spawn may start, no others
        try:
            job = await scheduler().create(schedule, prompt, agent=agent, session=session_id,
                                           timezone=timezone, description=description,
                                           created_by=me.id,
                                           min_interval_s=scheduler().config.min_interval_s)
        except (ValueError, ConfigError) as exc:
            raise BuiltinToolError(str(exc)) from None
        nxt = next_run_ms(job.schedule, job.timezone, now_ms())
        return to_json({"created": True, **_job_view(job, nxt)})

    async def cron_delete(job_id: Annotated[str, Field(min_length=1, max_length=64)]) -> Any:
        if not await scheduler().delete(job_id, tenant=ctx.host.tenant):
            raise BuiltinToolError(f"no cron job {job_id!r} (cron_list shows the jobs)")
        return to_json({"deleted": job_id})

    return [
        builtin(cron_list, name="cron_list", description=(
            "List the scheduled prompts (cron jobs): schedule, target agent or session, next "
            "run, last run and run count.")),
        builtin(cron_create, name="cron_create", description=(
            "Schedule a prompt: a cron expression (5 fields, or 6 with seconds last, or "
            "@hourly/@daily...), the prompt, and the target: an agent (a new session per run; "
            "default: this agent) or an open session_id. Times are in `timezone` (UTC).")),
        builtin(cron_delete, name="cron_delete", description="Delete a cron job by its id."),
    ]
