"""The built-in tools' state in Redis: the cron scheduler's jobs (``{p}cron:jobs``) and due
times (``{p}cron:due``), and the ``message`` tool's channels (``{p}channel:{name}``). The
stores hold JSON as given; the models and the scheduling are :mod:`dockercc.builtins`'.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import scripts
from .values import as_int, as_str

if TYPE_CHECKING:
    from .connection import RedisTransport


class CronStore:
    """Cron commands (``transport.cron``)."""

    def __init__(self, transport: RedisTransport) -> None:
        self._t = transport
        self.keys = transport.pool_keys
        self._claim: Any = None
        self._record: Any = None

    @property
    def _r(self) -> Any:
        return self._t.client

    async def count(self) -> int:
        return int(await self._r.hlen(self.keys.cron_jobs))

    async def add(self, job_id: str, job_json: str, next_ms: int) -> None:
        """Store a job and schedule its first run, in one step."""
        pipe = self._r.pipeline(transaction=True)
        pipe.hset(self.keys.cron_jobs, job_id, job_json)
        pipe.zadd(self.keys.cron_due, {job_id: next_ms})
        await pipe.execute()

    async def job(self, job_id: str) -> bytes | None:
        """A job's JSON as stored."""
        raw: bytes | None = await self._r.hget(self.keys.cron_jobs, job_id)
        return raw

    async def jobs(self) -> tuple[list[bytes], dict[str, int]]:
        """Every job's JSON, and job id -> next run (ms)."""
        raw = await self._r.hgetall(self.keys.cron_jobs)
        scored: list[Any] = await self._r.zrange(self.keys.cron_due, 0, -1, withscores=True)
        return list(raw.values()), {as_str(k): int(v) for k, v in scored}

    async def remove(self, job_id: str) -> bool:
        """Remove a job and its schedule; False if there was none."""
        pipe = self._r.pipeline(transaction=True)
        pipe.hdel(self.keys.cron_jobs, job_id)
        pipe.zrem(self.keys.cron_due, job_id)
        removed, _ = await pipe.execute()
        return bool(removed)

    async def due(self, now: int, limit: int = 100) -> list[tuple[str, int]]:
        """Jobs due by ``now``: (id, due ms), earliest first."""
        got: list[Any] = await self._r.zrangebyscore(self.keys.cron_due, "-inf", now, start=0,
                                                     num=limit, withscores=True)
        return [(as_str(k), int(v)) for k, v in got]

    async def next_due(self) -> int | None:
        """When the earliest job is due (ms); None with no jobs."""
        got = await self._r.zrange(self.keys.cron_due, 0, 0, withscores=True)
        return int(got[0][1]) if got else None

    async def unschedule(self, job_id: str) -> None:
        await self._r.zrem(self.keys.cron_due, job_id)

    async def claim_run(self, job_id: str, due_ms: int, next_ms: int) -> bool:
        """Take the run due at ``due_ms`` by moving the job's score to ``next_ms``
        (compare-and-set: one scheduler wins)."""
        if self._claim is None:
            self._claim = self._r.register_script(scripts.CRON_CLAIM)
        return bool(await self._claim(keys=[self.keys.cron_due], args=[job_id, due_ms, next_ms]))

    async def record_run(self, job_id: str, run_json: str, kind: str) -> bool:
        """Note a run (``start``, ``end`` or ``skip``) on a job that still exists."""
        if self._record is None:
            self._record = self._r.register_script(scripts.CRON_RECORD)
        return bool(await self._record(keys=[self.keys.cron_jobs],
                                       args=[job_id, run_json, kind]))

    async def owner_heartbeat(self, owner: str) -> int | None:
        """A pool owner's last heartbeat (ms), None when it has none."""
        raw = await self._r.hget(self.keys.owners, owner)
        return None if raw is None else as_int(raw)


class ChannelStore:
    """``message`` tool channels on Redis pub/sub (``transport.channels``)."""

    def __init__(self, transport: RedisTransport) -> None:
        self._t = transport

    def name(self, channel: str) -> str:
        """The Redis pub/sub channel of a ``message`` channel."""
        return self._t.pool_keys.channel(channel)

    async def publish(self, channel: str, payload: str) -> int:
        """Publish; how many subscribers got it."""
        return int(await self._t.client.publish(self.name(channel), payload))
