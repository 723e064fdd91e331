"""A session's keys beyond its stream (the stream, input / output / control, is
:class:`~dockercc.storage.connection.RedisTransport`'s): fields of ``{p}{session}:state``,
the session registry ``{p}sessions``, ``{p}claude_sessions``, history, transcripts, the MCP
relay lists and the scratch-volume hash ``{p}pool:scratch``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..protocol.envelope import Envelope
from ..protocol.keys import OUTPUT_BUFFER_MAX, SessionKeys
from . import scripts
from .values import as_str

if TYPE_CHECKING:
    from .connection import RedisTransport


class McpRelay:
    """The host's end of one session's MCP relay: the runner pushes the CLI's requests on
    ``:mcp:requests``, the host answers on ``:mcp:reply:{id}``. A connection of its own (its
    BLPOP blocks); :meth:`aclose` it."""

    def __init__(self, client: Any, keys: SessionKeys) -> None:
        self._r = client
        self._keys = keys

    async def next_request(self, timeout: int = 1) -> bytes | None:
        """The next relayed request as sent; None after ``timeout`` s without one."""
        item = await self._r.blpop([self._keys.mcp_requests], timeout=timeout)
        return None if item is None else item[1]

    async def reply(self, request_id: str, reply: Any) -> None:
        """Answer one request (the runner BLPOPs it; it expires after 10 min)."""
        key = self._keys.mcp_reply(request_id)
        pipe = self._r.pipeline(transaction=False)
        pipe.rpush(key, json.dumps(reply, ensure_ascii=False, default=str))
        pipe.expire(key, 600)
        await pipe.execute()

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self._r.aclose()


class SessionStore:
    """Session-scoped commands (``transport.sessions``)."""

    def __init__(self, transport: RedisTransport) -> None:
        self._t = transport
        self.pool_keys = transport.pool_keys
        self._report: Any = None
        self._register_new: Any = None

    @property
    def _r(self) -> Any:
        return self._t.client

    def keys(self, session: str) -> SessionKeys:
        return self._t.keys(session)

    # -- state -----------------------------------------------------------------------------

    async def state_field(self, session: str, field: str) -> str | None:
        """One field of ``{p}{session}:state`` (``status``, ``container``, ...)."""
        raw = await self._r.hget(self.keys(session).state, field)
        return None if raw is None else as_str(raw)

    async def states(self, sessions: list[str]) -> dict[str, dict[str, str]]:
        """Several sessions' state hashes in one round trip."""
        pipe = self._r.pipeline(transaction=False)
        for sid in sessions:
            pipe.hgetall(self.keys(sid).state)
        raw = await pipe.execute() if sessions else []
        return {sid: {as_str(k): as_str(v) for k, v in st.items()}
                for sid, st in zip(sessions, raw, strict=True)}

    async def set_state(self, session: str, **fields: Any) -> None:
        await self._r.hset(self.keys(session).state, mapping=fields)

    async def exists(self, session: str) -> bool:
        """Whether the session has a state (open, or closed and still resumable)."""
        return bool(await self._r.exists(self.keys(session).state))

    async def has_keys(self, session: str) -> bool:
        """Whether any key a new session must not find (state, history, transcript, result,
        output buffer) exists under this id."""
        k = self.keys(session)
        return bool(await self._r.exists(k.state, k.history, k.transcript, k.result,
                                         k.output_buffer))

    async def last_seq(self, session: str) -> int:
        """The seq of the newest buffered envelope (0 when none)."""
        tail = await self._r.lindex(self.keys(session).output_buffer, -1)
        env = Envelope.decode(tail) if tail else None
        return env.seq if env is not None else 0

    async def report_event(self, session: str, envelope: str | bytes, *, status: str,
                           error: str) -> bool:
        """Write one envelope into the session's output (buffer and channel) and set its
        ``status`` / ``error``, for the host speaking when the runner cannot (a lost
        container); only while the session is registered (one Lua step). False if not."""
        if self._report is None:
            self._report = self._r.register_script(scripts.REPORT_EVENT)
        k = self.keys(session)
        done = await self._report(
            keys=[self.pool_keys.sessions, k.output_buffer, k.output, k.state],
            args=[session, envelope, OUTPUT_BUFFER_MAX, status, error])
        return bool(done)

    async def take_pending_input(self, session: str) -> int:
        """Drop the prompts no runner answered yet (queued or taken); how many there were."""
        k = self.keys(session)
        async with self._r.pipeline(transaction=True) as pipe:
            pipe.llen(k.input)
            pipe.llen(k.processing)
            pipe.delete(k.input, k.processing)
            waiting, taken, _ = await pipe.execute()
        return int(waiting) + int(taken)

    # -- the session registry ({p}sessions) and Claude's ids ----------------------------------

    async def register(self, session: str, record: Mapping[str, Any], tenant: str) -> None:
        """Enter an open session in ``{p}sessions``; its state keeps the tenant (the state
        outlives the registry entry)."""
        pipe = self._r.pipeline(transaction=False)
        pipe.hset(self.pool_keys.sessions, session, json.dumps(dict(record)))
        pipe.hset(self.keys(session).state, "tenant", tenant)
        await pipe.execute()

    async def register_new(self, session: str, record: Mapping[str, Any], tenant: str) -> bool:
        """:meth:`register` for a new session whose id must have no keys yet (see
        :meth:`has_keys`), in one step; False (nothing written) when it has some."""
        if self._register_new is None:
            self._register_new = self._r.register_script(scripts.REGISTER_NEW)
        k = self.keys(session)
        done = await self._register_new(
            keys=[self.pool_keys.sessions, k.state, k.history, k.transcript, k.result,
                  k.output_buffer],
            args=[session, json.dumps(dict(record)), tenant])
        return bool(done)

    async def unregister(self, session: str) -> None:
        await self._r.hdel(self.pool_keys.sessions, session)

    async def by_claude_id(self, claude_session_id: str) -> str | None:
        """The dockercc session a Claude session id belongs to (``{p}claude_sessions``)."""
        raw = await self._r.hget(self.pool_keys.claude_sessions, claude_session_id)
        return None if raw is None else as_str(raw)

    async def forget_claude_id(self, claude_session_id: str) -> None:
        await self._r.hdel(self.pool_keys.claude_sessions, claude_session_id)

    async def retain(self, session: str, *, keep: tuple[str, ...], ttl_s: int,
                     claude_session_id: str = "", closed_ms: int) -> None:
        """A closed session's ``keep`` keys (what a resume needs) expire in ``ttl_s``; its
        state says closed; its Claude id maps to it."""
        k = self.keys(session)
        pipe = self._r.pipeline(transaction=False)
        pipe.hset(k.state, mapping={"status": "closed", "closed": closed_ms})
        for name in keep:
            pipe.expire(getattr(k, name), ttl_s)
        if claude_session_id:
            pipe.hset(self.pool_keys.claude_sessions, claude_session_id, session)
        await pipe.execute()

    # -- history and transcript ------------------------------------------------------------

    async def history_len(self, session: str) -> int:
        return int(await self._r.llen(self.keys(session).history))

    async def history(self, session: str, start: int = 0, end: int = -1) -> list[bytes]:
        """History entries ``start``..``end`` (inclusive) as stored."""
        return list(await self._r.lrange(self.keys(session).history, start, end))

    async def transcript(self, session: str) -> dict[bytes, bytes]:
        """The saved CLI transcript hash as stored (``meta``, ``data``, ``mac``)."""
        return dict(await self._r.hgetall(self.keys(session).transcript))

    async def seal_transcript(self, session: str, mac: str) -> None:
        await self._r.hset(self.keys(session).transcript, "mac", mac)

    # -- the MCP relay ---------------------------------------------------------------------

    def mcp_relay(self, session: str) -> McpRelay:
        return McpRelay(self._t.new_client(), self.keys(session))

    # -- scratch volumes ({p}pool:scratch) -----------------------------------------------------

    async def keep_scratch(self, session: str, volume: str) -> None:
        """``volume`` is ``session``'s scratch workspace from now on."""
        await self._r.hset(self.keys(session).state, "workspace_volume", volume)
        await self._r.hset(self.pool_keys.scratch, volume, session)

    async def scratch_owner(self, volume: str) -> str | None:
        raw = await self._r.hget(self.pool_keys.scratch, volume)
        return None if raw is None else as_str(raw)

    async def drop_scratch(self, volume: str) -> None:
        await self._r.hdel(self.pool_keys.scratch, volume)
