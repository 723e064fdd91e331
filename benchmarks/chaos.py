"""Chaos run: concurrent sessions against the scripted API while containers are killed and
Redis restarts mid-stream. Loopback only, bounded in count and time, cleans up after itself.

One command prints the figures (docs/reliability.md has the latest ones)::

    python -m benchmarks.chaos --sessions 20 --turns 10 --kills 6 --redis-restarts 2
    python -m benchmarks.chaos --failover ...   # the Redis faults are Sentinel fail-overs

With ``--failover`` Redis is a Sentinel group on loopback (an append-only primary, a replica
and one ``redis-sentinel``; :class:`dockercc.testing.sentinel.SentinelGroup`), the pool and
the runners use its ``redis+sentinel://`` URL, and each Redis fault SIGKILLs the primary
while sessions stream: the sentinel promotes the replica (asynchronous replication).

What it does:

* starts its own ``redis-server`` on 127.0.0.1 with an append-only file
  (``appendonly yes``, ``appendfsync always``) — a Redis restart keeps every acknowledged
  write only if Redis persists, so production Redis must persist too for these guarantees;
* starts the scripted Messages API on 127.0.0.1 (each reply streams a few words slowly, so a
  kill lands mid-stream) and a pool on host networking;
* runs ``sessions`` concurrent sessions of ``turns`` turns each; every prompt carries a unique
  token that the reply echoes, so each answer can be matched to its prompt;
* meanwhile ``docker kill``s ``kills`` busy containers (sessions that are streaming) and
  restarts Redis ``redis_restarts`` times while several sessions stream;
* a caller whose turn fails with a typed error (:class:`~dockercc.errors.DockerCCError`,
  e.g. ``ContainerLost``) sends the prompt again (a new attempt with a new token): the session
  resumes in a new container. Anything else (an untyped exception, a hang) is a failure;
* an independent observer reads every session's output stream from seq 0 (like a dashboard
  would) to check that readers see every seq once, in order, across the Redis restarts.

Figures: lost inputs (accepted prompts that neither reached the model nor failed with a
typed error), prompts run twice, seq gaps / duplicates (in each output buffer, as seen by the
observer and as seen by the caller), typed errors vs. transparent resumes per fault, untyped
errors, hangs, containers and keys left, turn latency (including the wait for a container).
Sessions close when their turns are done, so more sessions than ``--max-total`` take turns.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import random
import re
import signal
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dockercc.client import AsyncPool
from dockercc.errors import DockerCCError
from dockercc.events import Result, TextDelta
from dockercc.pool.backend import LABEL
from dockercc.protocol.envelope import Envelope
from dockercc.session import AsyncSession
from dockercc.testing import RedisServer, ScriptedAPI, last_user_text, text
from dockercc.testing.sentinel import SentinelGroup

log = logging.getLogger("dockercc.chaos")

TOKEN_RE = re.compile(r"\[chaos:[A-Za-z0-9_.-]+\]")
DEFAULT_IMAGE = os.environ.get("DOCKERCC_TEST_IMAGE", "clawdbot/docker-cc:latest")


@dataclass
class ChaosSettings:
    sessions: int = 10
    turns: int = 5
    kills: int = 3
    redis_restarts: int = 1
    max_total: int = 10
    health_interval_ms: int = 500
    stale_after_misses: int = 6
    words: int = 20
    delay: float = 0.08
    outage_s: float = 0.5
    redis_signal: str = "TERM"
    failover: bool = False  # Redis faults are Sentinel fail-overs (needs a SentinelGroup)
    turn_timeout_s: float = 120.0
    max_attempts: int = 5
    run_timeout_s: float = 600.0
    seed: int = 7
    image: str = DEFAULT_IMAGE
    memory: str = "1g"
    cpus: float = 1.0


@dataclass
class Attempt:
    session: str
    turn: int
    attempt: int
    token: str
    outcome: str = "pending"  # result | typed:<Error> | untyped:<Error> | timeout
    detail: str = ""
    sent: bool = False
    streaming: bool = False
    streaming_since: float = 0.0
    started: float = 0.0
    latency_s: float = 0.0


@dataclass
class Fault:
    kind: str  # kill | redis_restart
    at_s: float
    sessions: list[str]
    tokens: list[str]
    container: str = ""
    outcomes: dict[str, str] = field(default_factory=dict)


@dataclass
class ChaosReport:
    settings: dict[str, Any]
    duration_s: float = 0.0
    turns_expected: int = 0
    turns_completed: int = 0
    attempts: int = 0
    inputs_sent: int = 0
    inputs_seen_by_api: int = 0
    lost_inputs: int = 0
    inputs_failed_typed: int = 0
    inputs_run_twice: int = 0
    inputs_left_in_queues: int = 0
    kills: int = 0
    kills_mid_stream: int = 0
    redis_restarts: int = 0
    streams_during_redis_restart: int = 0
    failover_s: list[float] = field(default_factory=list)
    typed_errors: dict[str, int] = field(default_factory=dict)
    untyped_errors: list[str] = field(default_factory=list)
    hangs: int = 0
    affected_callers: int = 0
    affected_typed_error: int = 0
    affected_transparent: int = 0
    affected_unaccounted: list[str] = field(default_factory=list)
    stale_results_skipped: int = 0
    buffer_seq_gaps: int = 0
    buffer_seq_dups: int = 0
    observer_seq_gaps: int = 0
    observer_seq_dups: int = 0
    caller_seq_dups: int = 0
    envelopes: int = 0
    context_kept: int = 0
    context_checked: int = 0
    containers_left: int = 0
    keys_left: int = 0
    pool_lost: int = 0
    turn_p50_s: float = 0.0
    turn_p95_s: float = 0.0
    turn_max_s: float = 0.0
    faults: list[dict[str, Any]] = field(default_factory=list)
    incidents: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures()

    def failures(self) -> list[str]:
        out = []
        if self.turns_completed != self.turns_expected:
            out.append(f"{self.turns_completed}/{self.turns_expected} turns completed")
        for name in ("lost_inputs", "inputs_run_twice", "inputs_left_in_queues", "hangs",
                     "buffer_seq_gaps",
                     "buffer_seq_dups", "observer_seq_gaps", "observer_seq_dups",
                     "caller_seq_dups", "containers_left", "keys_left"):
            if getattr(self, name):
                out.append(f"{name} = {getattr(self, name)}")
        if self.untyped_errors:
            out.append(f"untyped errors: {self.untyped_errors[:5]}")
        if self.affected_unaccounted:
            out.append(f"affected callers without a typed error or a resume: "
                       f"{self.affected_unaccounted[:5]}")
        return out

    def summary(self) -> str:
        s = self.settings
        typed = ", ".join(f"{k} {v}" for k, v in sorted(self.typed_errors.items())) or "none"
        lines = [
            f"chaos run: {s['sessions']} sessions x {s['turns']} turns, "
            f"{self.kills} docker kills ({self.kills_mid_stream} mid-stream), "
            f"{self.redis_restarts} Redis "
            f"{'Sentinel fail-overs' if s.get('failover') else 'restarts'} "
            f"({self.streams_during_redis_restart} streams "
            f"in flight), maxTotal {s['max_total']}, healthIntervalMs {s['health_interval_ms']}",
            *([f"  fail-over took      {', '.join(f'{x:.1f}' for x in self.failover_s)} s "
               "(primary SIGKILLed -> replica answers as primary)"] if self.failover_s else []),
            f"  duration            {self.duration_s:.1f} s",
            f"  turns completed     {self.turns_completed}/{self.turns_expected} "
            f"({self.attempts} attempts)",
            f"  inputs sent / seen  {self.inputs_sent} / {self.inputs_seen_by_api} by the API; "
            f"lost {self.lost_inputs} (+{self.inputs_failed_typed} never answered, caller told "
            f"with a typed error); run twice {self.inputs_run_twice}; left in queues "
            f"{self.inputs_left_in_queues}",
            f"  seq (buffer)        gaps {self.buffer_seq_gaps}, dups {self.buffer_seq_dups} "
            f"over {self.envelopes} envelopes",
            f"  seq (observer)      gaps {self.observer_seq_gaps}, dups {self.observer_seq_dups}",
            f"  seq (caller)        dups/out-of-order {self.caller_seq_dups}",
            f"  affected callers    {self.affected_callers}: typed error "
            f"{self.affected_typed_error}, transparent {self.affected_transparent}, "
            f"unaccounted {len(self.affected_unaccounted)}",
            f"  typed errors        {typed}",
            f"  untyped errors      {len(self.untyped_errors)}; hangs {self.hangs}",
            f"  stale results       {self.stale_results_skipped} skipped (re-delivered inputs)",
            f"  context kept        {self.context_kept}/{self.context_checked} resumed sessions "
            f"still had their earlier turns",
            f"  pool lost events    {self.pool_lost}",
            f"  turn latency        p50 {self.turn_p50_s:.2f} s, p95 {self.turn_p95_s:.2f} s, "
            f"max {self.turn_max_s:.2f} s",
            f"  left after shutdown {self.containers_left} containers, {self.keys_left} keys",
            "  RESULT: " + ("PASS" if self.ok else "FAIL: " + "; ".join(self.failures())),
        ]
        return "\n".join(lines)


def _seq_problems(seqs: list[int], start: int = 1) -> tuple[int, int]:
    """(gaps, duplicates) in a list of seqs that should be start, start+1, ... exactly."""
    gaps = dups = 0
    expected = start
    seen: set[int] = set()
    for s in seqs:
        if s in seen:
            dups += 1
            continue
        seen.add(s)
        if s > expected:
            gaps += s - expected
        expected = max(expected, s + 1)
    return gaps, dups


class ChaosRun:
    """One chaos run (see the module docs). ``run()`` returns a :class:`ChaosReport`."""

    def __init__(self, settings: ChaosSettings, *, redis: RedisServer | SentinelGroup,
                 api: ScriptedAPI, prefix: str | None = None) -> None:
        self.s = settings
        self.redis = redis
        self.api = api
        self.prefix = prefix or f"chaos{uuid.uuid4().hex[:8]}:"
        self.rng = random.Random(settings.seed)
        self.attempts: list[Attempt] = []
        self.current: dict[str, Attempt] = {}
        self.faults: list[Fault] = []
        self.caller_seqs: dict[str, list[int]] = {}
        self.observed: dict[str, list[int]] = {}
        self.done_turns = 0
        self.stale = 0
        self.t0 = 0.0
        self.sessions: dict[str, AsyncSession] = {}
        self._progress = asyncio.Event()
        self._docker: Any = None
        self.logs_dir: Path | None = None
        self.tag = self.prefix.removeprefix("chaos")[:4]
        self.failover_s: list[float] = []

    def _save_logs(self) -> None:
        assert self.logs_dir is not None
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        for c in self.our_containers():
            with contextlib.suppress(Exception):
                (self.logs_dir / f"{c.name}.log").write_bytes(c.logs())

    # -- set-up ----------------------------------------------------------------------------

    def config(self) -> dict[str, Any]:
        s = self.s
        return {
            "image": s.image,
            "redis": {"url": self.redis.url, "keyPrefix": self.prefix},
            "docker": {"network": "host"},
            "credentials": {"baseUrl": self.api.url, "apiKey": "sk-ant-chaos-test"},
            "resources": {"memory": s.memory, "cpus": s.cpus},
            "timeouts": {"healthIntervalMs": s.health_interval_ms, "startupMs": 90000,
                         "staleAfterMisses": s.stale_after_misses},
            "pool": {"maxTotal": s.max_total, "maxPerAgent": s.max_total, "minWarm": 0,
                     "acquireTimeoutMs": int(s.run_timeout_s * 1000)},
        }

    def responder(self, body: dict[str, Any]) -> Any:
        prompt = last_user_text(body)
        token = " ".join(TOKEN_RE.findall(prompt)) or "[chaos:none]"
        filler = " ".join(f"w{i}" for i in range(self.s.words))
        return text(f"ack {token} {filler}", delay=self.s.delay)

    @property
    def docker(self) -> Any:
        if self._docker is None:
            import docker

            self._docker = docker.from_env(timeout=60)
        return self._docker

    def our_containers(self) -> list[Any]:
        return list(self.docker.containers.list(
            all=True, filters={"label": [f"{LABEL}=1", f"{LABEL}.prefix={self.prefix}"]}))

    # -- the callers -----------------------------------------------------------------------

    def _on_event(self, sid: str) -> Any:
        def record(event: Any) -> None:
            self.caller_seqs.setdefault(sid, []).append(int(getattr(event, "seq", 0) or 0))
            cur = self.current.get(sid)
            if cur is not None and isinstance(event, TextDelta) and cur.token in event.text:
                cur.streaming = True
                cur.streaming_since = time.monotonic()
        return record

    async def _turn(self, s: AsyncSession, sid: str, turn: int) -> bool:
        """One turn, re-sent after typed errors; True once it got its result."""
        for attempt in range(1, self.s.max_attempts + 1):
            token = f"[chaos:{sid}-t{turn}-a{attempt}]"
            a = Attempt(sid, turn, attempt, token, started=time.monotonic())
            self.attempts.append(a)
            self.current[sid] = a
            try:
                await s.send(f"turn {turn} of {sid} {token}")
                a.sent = True
                result = await self._receive(s, a)
                a.outcome = "result"
                if token not in (result.text or ""):
                    a.outcome = "untyped:WrongAnswer"
                    a.detail = f"result {result.text!r} does not echo {token}"
                    return False
                self.done_turns += 1
                self._progress.set()
                return True
            except DockerCCError as exc:
                a.outcome = f"typed:{type(exc).__name__}"
                a.detail = str(exc)[:300]
                log.info("typed error in %s", token, exc_info=True)
            except TimeoutError as exc:
                a.outcome = "timeout"
                a.detail = str(exc)[:300]
                return False
            except Exception as exc:  # the figure we want to be 0
                a.outcome = f"untyped:{type(exc).__name__}"
                a.detail = str(exc)[:300]
                log.exception("untyped error in %s", sid)
                return False
            finally:
                a.latency_s = time.monotonic() - a.started
                a.streaming = False
                self.current.pop(sid, None)
            await asyncio.sleep(0.05)
        return False

    async def _receive(self, s: AsyncSession, a: Attempt) -> Result:
        """Events until the Result that echoes this attempt's token; results of inputs that
        were delivered twice (an earlier attempt re-delivered after a loss) are skipped."""
        deadline = time.monotonic() + self.s.turn_timeout_s
        while True:
            result = None
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no result for {a.token} in {self.s.turn_timeout_s}s")
            async for event in s.receive(timeout=left):
                if isinstance(event, Result):
                    result = event
            if result is None:
                raise TimeoutError(f"the turn of {a.token} ended without a result")
            if a.token in (result.text or "") or not TOKEN_RE.search(result.text or ""):
                return result
            self.stale += 1

    def sid(self, index: int) -> str:
        # container names are global on the Docker engine: unique per run
        return f"chaos-{self.tag}-{index:03d}"

    async def _session(self, pool: AsyncPool, index: int, report: ChaosReport) -> None:
        sid = self.sid(index)
        s = pool.session(session_id=sid, on_event=self._on_event(sid))
        self.sessions[sid] = s
        try:
            for turn in range(1, self.s.turns + 1):
                if not await self._turn(s, sid, turn):
                    return
        finally:
            # check what it left in Redis, then close it (a waiting session gets its slot)
            with contextlib.suppress(Exception):
                await self._check_session(pool, sid, report)
            if self.logs_dir is not None:
                await asyncio.to_thread(self._save_logs)
            with contextlib.suppress(Exception):
                await s.close(forget=True)

    # -- observer --------------------------------------------------------------------------

    async def _observe(self, pool: AsyncPool, sid: str) -> None:
        seqs = self.observed.setdefault(sid, [])
        async for env in pool.transport.events(sid, 0, reconnect_timeout=60):
            seqs.append(env.seq)

    async def _observer_catch_up(self, pool: AsyncPool, sid: str, timeout: float = 15) -> None:
        raw = await pool.transport.client.lindex(pool.transport.keys(sid).output_buffer, -1)
        env = Envelope.decode(raw) if raw else None
        if env is None:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            seen = self.observed.get(sid) or [0]
            if max(seen) >= env.seq:
                return
            await asyncio.sleep(0.05)

    # -- the faults ------------------------------------------------------------------------

    def _streaming(self, within_s: float | None = None) -> list[Attempt]:
        """Attempts streaming now (that began streaming less than ``within_s`` ago)."""
        now = time.monotonic()
        return [a for a in self.current.values() if a.streaming and a.outcome == "pending"
                and (within_s is None or now - a.streaming_since < within_s)]

    async def _wait_progress(self, fraction: float, stop: asyncio.Event) -> None:
        target = int(fraction * self.s.sessions * self.s.turns)
        while self.done_turns < target and not stop.is_set():
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), 0.5)

    async def _wait_streaming(self, count: int, stop: asyncio.Event, timeout: float = 60,
                              within_s: float | None = None) -> list[Attempt]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not stop.is_set():
            busy = self._streaming(within_s)
            if len(busy) >= count:
                return busy
            await asyncio.sleep(0.02)
        return self._streaming(within_s)

    async def _kill(self, stop: asyncio.Event) -> None:
        # a victim that has only just begun to stream, so the kill lands mid-stream
        # (the containers are listed before the wait, not after it: on a loaded machine the
        # listing took long enough for the chosen turn to finish before the kill landed)
        for _ in range(5):
            listed = await asyncio.to_thread(self.our_containers)
            by_id = {c.labels.get(f"{LABEL}.container"): c for c in listed}
            busy = await self._wait_streaming(1, stop, within_s=0.4)
            if not busy:
                return
            busy = [a for a in busy if a.outcome == "pending"
                    and (lease := self.sessions[a.session].lease) is not None
                    and lease.container in by_id]
            if busy:
                break
        else:
            return
        victim = self.rng.choice(busy)
        lease = self.sessions[victim.session].lease
        assert lease is not None
        container = by_id[lease.container]
        fault = Fault("kill", time.monotonic() - self.t0, [victim.session], [victim.token],
                      container=container.name)
        self.faults.append(fault)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(container.kill)
        # mid-stream: the turn was still streaming when the container died
        fault.outcomes["mid_stream"] = "yes" if victim.outcome == "pending" else "no"
        log.info("killed %s (session %s, %s)", container.name, victim.session, victim.token)

    async def _restart_redis(self, stop: asyncio.Event) -> None:
        want = max(1, min(3, self.s.sessions // 3))
        busy = await self._wait_streaming(want, stop)
        fault = Fault("redis_restart", time.monotonic() - self.t0,
                      [a.session for a in busy], [a.token for a in busy])
        self.faults.append(fault)
        if isinstance(self.redis, SentinelGroup):
            took = await asyncio.to_thread(self.redis.fail_over)
            self.failover_s.append(took)
            log.info("failed Redis over in %.1fs with %d streams in flight", took, len(busy))
            return
        sig = getattr(signal, f"SIG{self.s.redis_signal}")
        await asyncio.to_thread(self.redis.restart, self.s.outage_s, sig)
        log.info("restarted Redis with %d streams in flight", len(busy))

    async def _chaos(self, stop: asyncio.Event) -> None:
        plan: list[tuple[float, str]] = []
        n = self.s.kills + self.s.redis_restarts
        kinds = ["kill"] * self.s.kills + ["redis"] * self.s.redis_restarts
        # spread the faults over the run, Redis restarts in the middle of the kills
        kinds.sort(key=lambda k: 0 if k == "kill" else 1)
        if self.s.redis_restarts:
            step = max(1, len(kinds) // (self.s.redis_restarts + 1))
            order = [k for k in kinds if k == "kill"]
            for i in range(self.s.redis_restarts):
                order.insert(min(len(order), step * (i + 1) + i), "redis")
            kinds = order
        for i, kind in enumerate(kinds):
            plan.append(((i + 1) / (n + 1) * 0.9, kind))
        for fraction, kind in plan:
            await self._wait_progress(fraction, stop)
            if stop.is_set():
                return
            if kind == "kill":
                await self._kill(stop)
            else:
                await self._restart_redis(stop)

    # -- the run ---------------------------------------------------------------------------

    async def run(self) -> ChaosReport:
        self.api.set_default(self.responder)
        report = ChaosReport(settings=asdict(self.s), failover_s=self.failover_s)
        report.turns_expected = self.s.sessions * self.s.turns
        self.t0 = time.monotonic()
        lost_events: list[str] = []
        pool = AsyncPool(self.config())
        pool.containers.on_lost(lambda sid, reason: lost_events.append(f"{sid}: {reason}"))
        observers: list[asyncio.Task[None]] = []
        try:
            await pool.start()
            stop = asyncio.Event()
            for i in range(self.s.sessions):
                observers.append(asyncio.create_task(self._observe(pool, self.sid(i))))
            chaos = asyncio.create_task(self._chaos(stop))
            workers = [asyncio.create_task(self._session(pool, i, report))
                       for i in range(self.s.sessions)]
            try:
                await asyncio.wait_for(asyncio.gather(*workers, return_exceptions=True),
                                       self.s.run_timeout_s)
            except TimeoutError:
                report.hangs += sum(1 for w in workers if not w.done())
                for w in workers:
                    w.cancel()
            stop.set()
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(chaos, 30)
            report.duration_s = time.monotonic() - self.t0
            for task in observers:
                task.cancel()
            for task in observers:
                with contextlib.suppress(BaseException):
                    await task
            for s in list(self.sessions.values()):
                with contextlib.suppress(Exception):
                    await s.close(forget=True)
        finally:
            for task in observers:
                task.cancel()
            await pool.close()
        report.pool_lost = len(lost_events)
        await self._check_left(report)
        self._figures(report)
        return report

    async def _check_session(self, pool: AsyncPool, sid: str, report: ChaosReport) -> None:
        """Inputs left, seq gaps / duplicates in the buffer, as the observer and the caller
        saw them (before the session is closed and its keys deleted)."""
        r = pool.transport.client
        keys = pool.transport.keys(sid)
        report.inputs_left_in_queues += int(await r.llen(keys.input))
        report.inputs_left_in_queues += int(await r.llen(keys.processing))
        raw = await r.lrange(keys.output_buffer, 0, -1)
        seqs = [e.seq for e in (Envelope.decode(x) for x in raw) if e is not None]
        report.envelopes += len(seqs)
        start = seqs[0] if seqs else 1  # (the buffer keeps the last 1000)
        gaps, dups = _seq_problems(seqs, start)
        if gaps or dups:
            report.incidents.append(f"{sid} buffer seqs {seqs}")
        report.buffer_seq_gaps += gaps
        report.buffer_seq_dups += dups
        await self._observer_catch_up(pool, sid, timeout=10)
        gaps, dups = _seq_problems(self.observed.get(sid, []))
        # the observer may not have seen the very last ones if they came after its end
        report.observer_seq_gaps += gaps
        report.observer_seq_dups += dups
        mine = [x for x in self.caller_seqs.get(sid, []) if x]
        report.caller_seq_dups += sum(1 for a, b in zip(mine, mine[1:], strict=False)
                                      if b < a)

    async def _check_left(self, report: ChaosReport) -> None:
        deadline = time.monotonic() + 15
        while True:
            left = await asyncio.to_thread(self.our_containers)
            if not left or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        report.containers_left = len(left)
        for c in left:  # ours (by prefix label): never leave them running
            with contextlib.suppress(Exception):
                await asyncio.to_thread(c.remove, force=True)
        keys = self.redis.keys(f"{self.prefix}*")
        report.keys_left = len(keys)
        if keys:
            report.incidents.append(f"keys left: {keys[:20]}")

    def _figures(self, report: ChaosReport) -> None:
        report.turns_completed = self.done_turns
        report.attempts = len(self.attempts)
        report.stale_results_skipped = self.stale
        sent = [a for a in self.attempts if a.sent]
        report.inputs_sent = len(sent)
        seen_text = "\n".join(r.last_user_text for r in self.api.message_requests)
        unseen = [a for a in sent if a.token not in seen_text]
        report.inputs_seen_by_api = len(sent) - len(unseen)
        # lost: accepted, never reached the model, and the caller was not told (a typed
        # error says "this turn was lost, send it again")
        report.lost_inputs = sum(1 for a in unseen if not a.outcome.startswith("typed:"))
        report.inputs_failed_typed = len(unseen) - report.lost_inputs
        # each prompt is one model request (no tools here): a token in two requests, or two
        # tokens in one (the CLI merges prompts queued together), means a prompt ran twice
        per_request = [TOKEN_RE.findall(r.last_user_text) for r in self.api.message_requests]
        counts: dict[str, int] = {}
        for found in per_request:
            for token in found:
                counts[token] = counts.get(token, 0) + 1
        report.inputs_run_twice = (sum(1 for n in counts.values() if n > 1)
                                   + sum(1 for found in per_request if len(found) > 1))
        for a in self.attempts:
            if a.outcome.startswith("typed:"):
                name = a.outcome.split(":", 1)[1]
                report.typed_errors[name] = report.typed_errors.get(name, 0) + 1
            elif a.outcome.startswith("untyped:"):
                report.untyped_errors.append(f"{a.token} {a.outcome}: {a.detail}")
            elif a.outcome in ("timeout", "pending"):
                report.hangs += 1
        by_token = {a.token: a for a in self.attempts}
        for f in self.faults:
            if f.kind == "kill":
                report.kills += 1
                report.kills_mid_stream += f.outcomes.get("mid_stream") == "yes"
            else:
                report.redis_restarts += 1
                report.streams_during_redis_restart += len(f.tokens)
            for token in f.tokens:
                a = by_token[token]
                report.affected_callers += 1
                if a.outcome == "result":
                    report.affected_transparent += 1
                    f.outcomes[token] = "transparent"
                elif a.outcome.startswith("typed:"):
                    report.affected_typed_error += 1
                    f.outcomes[token] = a.outcome
                    # and the caller went on: the next attempt of that turn got its result
                    nxt = [b for b in self.attempts if b.session == a.session
                           and b.turn == a.turn and b.attempt > a.attempt]
                    if not any(b.outcome == "result" for b in nxt):
                        report.affected_unaccounted.append(f"{token}: never recovered")
                else:
                    report.affected_unaccounted.append(f"{token}: {a.outcome} {a.detail}")
            report.faults.append({"kind": f.kind, "at_s": round(f.at_s, 2),
                                  "sessions": f.sessions, "container": f.container,
                                  "outcomes": f.outcomes})
        # sessions that lost a container mid-turn resumed in a new one: did the model still
        # get the conversation so far? (the CLI transcript is restored from Redis)
        resumed = {a.session for a in self.attempts if a.outcome == "typed:ContainerLost"}
        for sid in resumed:
            reqs = [r for r in self.api.message_requests if f"of {sid} [chaos:" in r.last_user_text]
            if not reqs:
                continue
            last = reqs[-1]
            done = [a.token for a in self.attempts if a.session == sid and a.outcome == "result"
                    and a.token not in last.last_user_text]
            body = json.dumps(last.messages)
            report.context_checked += 1
            report.context_kept += all(t in body for t in done)
        report.incidents += [
            f"{a.token} at {a.started - self.t0:.1f}s took {a.latency_s:.1f}s: {a.outcome} "
            f"{a.detail}" for a in self.attempts if a.outcome != "result" or a.latency_s > 10]
        lat = sorted(a.latency_s for a in self.attempts if a.outcome == "result")
        if lat:
            report.turn_p50_s = lat[len(lat) // 2]
            report.turn_p95_s = lat[min(len(lat) - 1, int(len(lat) * 0.95))]
            report.turn_max_s = lat[-1]


@contextlib.contextmanager
def chaos_stack(directory: Path | None = None, *, failover: bool = False
                ) -> Iterator[tuple[RedisServer | SentinelGroup, ScriptedAPI]]:
    """An AOF Redis (every write persisted before it is acknowledged, so it can be restarted
    without data loss), or a Sentinel group (``failover``), and a scripted API on loopback,
    stopped afterwards."""
    if failover:
        with SentinelGroup(directory) as group, ScriptedAPI() as api:
            yield group, api
        return
    with RedisServer(directory, appendonly=True) as redis, ScriptedAPI() as api:
        yield redis, api


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.chaos", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    d = ChaosSettings()
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--turns", type=int, default=10)
    p.add_argument("--kills", type=int, default=6)
    p.add_argument("--redis-restarts", type=int, default=2)
    p.add_argument("--max-total", type=int, default=10)
    p.add_argument("--health-interval-ms", type=int, default=d.health_interval_ms)
    p.add_argument("--words", type=int, default=d.words)
    p.add_argument("--delay", type=float, default=d.delay)
    p.add_argument("--outage", type=float, default=d.outage_s,
                   help="seconds Redis stays down in a restart")
    p.add_argument("--redis-signal", choices=["TERM", "KILL"], default=d.redis_signal,
                   help="how Redis is stopped (KILL: a crash; AOF keeps acknowledged writes)")
    p.add_argument("--failover", action="store_true",
                   help="Redis is a Sentinel group; each Redis fault is a fail-over")
    p.add_argument("--timeout", type=float, default=900, help="bound on the whole run (s)")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--image", default=DEFAULT_IMAGE)
    p.add_argument("--no-build", action="store_true",
                   help="do not (re)build the agent image by content hash first")
    p.add_argument("--json", type=Path, default=None, help="also write the report here")
    p.add_argument("--logs", type=Path, default=None,
                   help="save the containers' logs here before shutdown")
    p.add_argument("-v", "--verbose", action="store_true")
    args = p.parse_args(argv)
    if args.sessions < 1 or args.turns < 1 or min(args.kills, args.redis_restarts) < 0:
        p.error("sessions and turns must be >= 1, kills and restarts >= 0")
    if args.max_total < 1 or args.max_total > 50 or args.sessions > 200 or args.turns > 100:
        p.error("bounded: max-total 1..50, sessions <= 200, turns <= 100")
    logging.basicConfig(level=logging.INFO if args.verbose else logging.ERROR,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not args.no_build:
        from dockercc.image import build_image

        build_image(args.image)
    settings = ChaosSettings(
        sessions=args.sessions, turns=args.turns, kills=args.kills,
        redis_restarts=args.redis_restarts, max_total=min(args.max_total, args.sessions),
        health_interval_ms=args.health_interval_ms, words=args.words, delay=args.delay,
        outage_s=args.outage, redis_signal=args.redis_signal, run_timeout_s=args.timeout,
        seed=args.seed, image=args.image, failover=args.failover)
    with chaos_stack(failover=args.failover) as (redis, api):
        run = ChaosRun(settings, redis=redis, api=api)
        run.logs_dir = args.logs
        report = asyncio.run(run.run())
    print(report.summary())
    if args.verbose:
        print("\n".join(report.incidents))
    if args.json is not None:
        args.json.write_text(json.dumps(asdict(report), indent=2, default=str))
    return 0 if report.ok else 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
