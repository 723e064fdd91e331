"""Session tools: ``sessions_list``, ``sessions_history``, ``sessions_send``,
``sessions_spawn`` and ``session_status``.

Sessions are the pool's shared registry (``{p}sessions``, every process on the same Redis and
key prefix) plus each session's ``state`` / ``result`` / ``history`` keys. Prompts can only be
*sent* to sessions open in this process: a turn injected behind another process's back would
be read by that process as the answer to its own next prompt.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import Field

from ..bridge import Tool
from ..errors import InvalidSessionId
from ..protocol.bounded import MAX_MESSAGE_BYTES, loads_record
from ..protocol.keys import validate_id
from ._base import (
    TURN_TIMEOUT_S,
    BuiltinHost,
    BuiltinToolError,
    ToolContext,
    age_s,
    builtin,
    clip,
    is_busy,
    now_ms,
    result_summary,
    run_turn,
    to_json,
)

if TYPE_CHECKING:  # pragma: no cover
    from ..session import AsyncSession

HISTORY_TEXT_LIMIT = 4000
STATUS_TEXT_LIMIT = 2000

SessionId = Annotated[str, Field(min_length=1, max_length=128,
                                 description="A session id (see sessions_list)")]
Prompt = Annotated[str, Field(min_length=1, max_length=200_000, description="The prompt text")]
WaitSeconds = Annotated[float | None, Field(
    default=None, gt=0, description="How long to wait for the reply (seconds); default and "
    "upper bound: tools.sessions.maxWaitMs")]


def _check_id(value: str) -> str:
    try:
        return validate_id(value)
    except InvalidSessionId as exc:
        raise BuiltinToolError(str(exc)) from None


async def registry(host: BuiltinHost) -> dict[str, dict[str, Any]]:
    """The shared session registry: id -> record (agent, owner, created, parent)."""
    records = await host.transport.session_records()
    return {sid: record for sid, record in records.items() if record}


async def _states(host: BuiltinHost, ids: list[str]) -> dict[str, dict[str, str]]:
    return await host.transport.sessions.states(ids)


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _last_activity(state: dict[str, str], record: dict[str, Any]) -> int | None:
    stamps = [_int(state.get(k)) for k in ("last_input", "last_result", "started", "closed")]
    stamps.append(_int(record.get("created")))
    values = [s for s in stamps if s]
    return max(values) if values else None


async def tenant_of(host: BuiltinHost, session_id: str) -> str | None:
    """The tenant a session belongs to: its registry record (written by the host that opened
    it), else its state (closed sessions keep it there); None when neither names one."""
    record = await host.transport.session_record(session_id)
    tenant = record.get("tenant") if record is not None else None
    if not isinstance(tenant, str) or not tenant:
        tenant = await host.transport.sessions.state_field(session_id, "tenant")
    return tenant or None


async def check_reach(host: BuiltinHost, me: AsyncSession, session_id: str,
                      missing: str = "no session {sid!r} in this pool") -> str:
    """``session_id`` if the calling session may reach it (it is the caller, or it belongs
    to the caller's tenant); otherwise the same error as for a session that does not exist,
    so an agent learns nothing about other tenants' sessions."""
    sid = _check_id(session_id)
    if sid != me.id and await tenant_of(host, sid) != host.tenant:
        raise BuiltinToolError(missing.format(sid=sid) + " (sessions_list shows the open ones)")
    return sid


def spawn_agent(me: AsyncSession, agent: str | None) -> str:
    """The agent a session may start (``sessions_spawn``) or schedule (``cron_create``): its
    own, or one its agent's ``subagents`` lists; never one with other tools or prompts that
    the caller's agent was not given."""
    name = agent or me.agent
    me.pool.config.agent(name)  # ConfigError (clean) for an unknown agent
    if name != me.agent and name not in me.agent_config.subagents:
        allowed = ", ".join([me.agent, *me.agent_config.subagents])
        raise BuiltinToolError(f"agent {name!r} is not one this agent may start (allowed: "
                               f"{allowed}; agents.{me.agent}.subagents lists others)")
    return name


def depth_of(session_id: str, records: dict[str, dict[str, Any]],
             first_parent: str | None = None) -> int:
    """How many ancestors a session has (a session opened by code is depth 0)."""
    depth, seen = 0, {session_id}
    parent = first_parent if first_parent is not None else (
        records.get(session_id, {}).get("parent") or None)
    while parent and parent not in seen and depth < 64:
        depth += 1
        seen.add(parent)
        parent = records.get(parent, {}).get("parent") or None
    return depth


def session_tools(ctx: ToolContext) -> list[Tool[..., Any]]:
    host, me = ctx.host, ctx.session
    cfg = ctx.config.tools.sessions

    def max_wait(timeout_s: float | None) -> float:
        cap = cfg.max_wait_ms / 1000
        return cap if timeout_s is None else min(timeout_s, cap)

    async def known(session_id: str) -> dict[str, str]:
        sid = _check_id(session_id)
        state = await ctx.transport.state(sid)
        if not state:
            raise BuiltinToolError(f"no session {sid!r} in this pool (sessions_list shows "
                                   f"the open ones)")
        return state

    async def sessions_list(agent: str | None = None) -> Any:
        records = {sid: rec for sid, rec in (await registry(host)).items()
                   if rec.get("tenant") == host.tenant or sid == me.id}
        ids = sorted(records, key=lambda s: _int(records[s].get("created")) or 0)
        if agent is not None:
            ids = [s for s in ids if records[s].get("agent") == agent]
        states = await _states(host, ids)
        now = now_ms()
        out = []
        for sid in ids:
            record, state = records[sid], states[sid]
            out.append({
                "id": sid,
                "agent": record.get("agent") or state.get("agent"),
                "parent": record.get("parent") or None,
                "status": state.get("status", "starting"),
                "container": state.get("container") or None,
                "age_s": age_s(record.get("created"), now),
                "last_activity_s_ago": age_s(_last_activity(state, record), now),
                "turns": _int(state.get("turns")) or 0,
                "cost_usd": _float(state.get("cost_usd")) or 0.0,
                "this_session": sid == me.id,
                "this_process": record.get("owner") == host.owner,
            })
        return to_json({"count": len(out), "sessions": out})

    async def sessions_history(session_id: str | None = None,
                               offset: Annotated[int, Field(ge=0)] = 0,
                               limit: Annotated[int, Field(ge=1, le=1000)] = 20) -> Any:
        sid = await check_reach(host, me, session_id) if session_id else me.id
        store = ctx.transport.sessions
        total = await store.history_len(sid)
        if total == 0 and not await store.exists(sid):
            raise BuiltinToolError(f"no session {sid!r} in this pool (sessions_list shows "
                                   f"the open ones)")
        limit = min(limit, cfg.history_page_max)
        raw = await store.history(sid, offset, offset + limit - 1) if offset < total else []
        entries = []
        for item in raw:
            entry = loads_record(item, max_bytes=MAX_MESSAGE_BYTES, what="history entry")
            if not entry:
                continue
            if isinstance(entry.get("text"), str):
                entry["text"], cut = clip(entry["text"], HISTORY_TEXT_LIMIT)
                if cut:
                    entry["text_truncated"] = True
            entries.append(entry)
        nxt = offset + len(raw)
        return to_json({"session_id": sid, "total": total, "offset": offset,
                        "next_offset": nxt if nxt < total else None, "entries": entries})

    async def _deliver(target: AsyncSession, prompt: str, wait: bool,
                       timeout_s: float | None) -> dict[str, Any]:
        task = ctx.state.spawn(run_turn(host, target, prompt, TURN_TIMEOUT_S),
                               name=f"dockercc-send-{target.id}", session=target.id)
        if not wait:
            return {"status": "queued"}
        limit = max_wait(timeout_s)
        done, _ = await asyncio.wait({task}, timeout=limit)
        if not done:
            return {"status": "running",
                    "note": f"no reply within {limit:g}s; the turn goes on: read it later with "
                            f"sessions_history or session_status"}
        try:
            result = task.result()
        except Exception as exc:  # noqa: BLE001 - told to the agent
            raise BuiltinToolError(f"the turn in session {target.id!r} failed: {exc}") from None
        return {"status": "done", "result": result_summary(result)}

    async def sessions_send(session_id: str, prompt: Prompt, wait: bool = False,
                            timeout_s: WaitSeconds = None) -> Any:
        sid = await check_reach(host, me, session_id, "no open session {sid!r}")
        if sid == me.id:
            raise BuiltinToolError("a session cannot send a prompt to itself")
        target = host.get(sid)
        if target is None or target.closed:
            record = (await registry(host)).get(sid)
            if record is not None and record.get("owner") != host.owner:
                raise BuiltinToolError(
                    f"session {sid!r} belongs to another process (pool owner "
                    f"{record.get('owner')!r}); sessions_send reaches the sessions of this "
                    f"pool's process only")
            raise BuiltinToolError(f"no open session {sid!r} (sessions_list shows the open "
                                   f"ones)")
        if is_busy(target) and not ctx.state.turn_lock(sid).locked():
            raise BuiltinToolError(
                f"session {sid!r} is in the middle of a turn (its owner is waiting for it, "
                f"perhaps for this very call); send again when it is idle")
        out = {"session_id": sid, "agent": target.agent}
        out.update(await _deliver(target, prompt, wait, timeout_s))
        return to_json(out)

    async def sessions_spawn(prompt: Annotated[str | None, Field(max_length=200_000)] = None,
                             agent: str | None = None, session_id: str | None = None,
                             wait: bool = False, timeout_s: WaitSeconds = None,
                             model: str | None = None, system_prompt: str | None = None,
                             append_system_prompt: str | None = None,
                             max_turns: Annotated[int | None, Field(ge=1)] = None) -> Any:
        agent_name = spawn_agent(me, agent)
        ctx.config.agent(agent_name)  # ConfigError (clean) for an unknown agent
        if system_prompt is not None:
            raise BuiltinToolError("sessions_spawn cannot replace the system prompt: a child "
                                   "gets its agent's (add to it with append_system_prompt)")
        inherit: dict[str, Any] = {}
        if agent_name == me.agent:
            # the caller's own limits (options its code set beyond the agent's config) carry
            # over: a child never has more tools or a freer prompt than its parent
            o = me.options
            inherit = {"allowed_tools": o.allowed_tools, "disallowed_tools": o.disallowed_tools,
                       "permission_mode": o.permission_mode, "system_prompt": o.system_prompt}
            if o.append_system_prompt:
                append_system_prompt = "\n\n".join(
                    p for p in (o.append_system_prompt, append_system_prompt) if p)
        if session_id is not None:
            _check_id(session_id)
        if wait and not (prompt and prompt.strip()):
            raise BuiltinToolError("wait=true needs a prompt")
        async with ctx.state.spawn_lock:
            records = await registry(host)
            depth = depth_of(me.id, records, me.options.parent) + 1
            if depth > cfg.max_depth:
                raise BuiltinToolError(
                    f"spawn refused: a child of {me.id!r} would be at depth {depth}; "
                    f"tools.sessions.maxDepth is {cfg.max_depth}")
            local = {c for c in ctx.state.children.get(me.id, set())
                     if (s := host.get(c)) is not None and not s.closed}
            open_children = local | {s for s, r in records.items() if r.get("parent") == me.id}
            if len(open_children) >= cfg.max_children:
                raise BuiltinToolError(
                    f"spawn refused: session {me.id!r} already has {len(open_children)} open "
                    f"children; tools.sessions.maxChildren is {cfg.max_children}")
            if session_id is not None and (session_id in records or host.get(session_id)):
                raise BuiltinToolError(f"a session {session_id!r} already exists")
            child = host.open_session(agent_name, session_id=session_id, parent=me.id, model=model,
                                 append_system_prompt=append_system_prompt, max_turns=max_turns,
                                 **inherit)
            ctx.state.children.setdefault(me.id, set()).add(child.id)
        try:
            await child.start()
        except BaseException:
            await child.close(forget=True)
            raise
        out: dict[str, Any] = {"session_id": child.id, "agent": child.agent, "parent": me.id,
                               "depth": depth, "status": "started"}
        if prompt and prompt.strip():
            out.update(await _deliver(child, prompt, wait, timeout_s))
        return to_json(out)

    async def session_status(session_id: str | None = None) -> Any:
        sid = await check_reach(host, me, session_id) if session_id else me.id
        state = await known(sid)
        records = {s: r for s, r in (await registry(host)).items()
                   if r.get("tenant") == host.tenant}
        record = records.get(sid, {})
        now = now_ms()
        out: dict[str, Any] = {
            "id": sid,
            "agent": record.get("agent") or state.get("agent"),
            "parent": record.get("parent") or None,
            "children": sorted(s for s, r in records.items() if r.get("parent") == sid),
            "open": sid in records,
            "status": state.get("status"),
            "container": state.get("container") or None,
            "heartbeat_age_s": age_s(state.get("heartbeat"), now),
            "age_s": age_s(record.get("created") or state.get("started"), now),
            "last_activity_s_ago": age_s(_last_activity(state, record), now),
            "turns": _int(state.get("turns")) or 0,
            "cost_usd": _float(state.get("cost_usd")) or 0.0,
            "model": state.get("model") or None,
            "error": state.get("error") or None,
        }
        result = await ctx.transport.result(sid)
        if result is not None:
            raw = result.get("result")
            text, cut = clip(raw if isinstance(raw, str) else "", STATUS_TEXT_LIMIT)
            out["last_result"] = {
                "subtype": result.get("subtype"), "is_error": bool(result.get("is_error")),
                "text": text, "text_truncated": cut, "duration_ms": result.get("duration_ms"),
                "cost_usd": result.get("total_cost_usd"), "num_turns": result.get("num_turns")}
        else:
            out["last_result"] = None
        return to_json(out)

    return [
        builtin(sessions_list, name="sessions_list", description=(
            "List this pool's open sessions: id, agent, parent, status, container, age, "
            "last activity, turns and cost so far. Optionally only one agent's.")),
        builtin(sessions_history, name="sessions_history", description=(
            "Read a session's transcript, oldest turn first: each turn's prompt, assistant "
            "text, tool calls and outcome. Paged with offset/limit; default: this session.")),
        builtin(sessions_send, name="sessions_send", timeout=None, description=(
            "Send a prompt to another open session of this pool. With wait=true, return its "
            "reply (up to timeout_s); otherwise return at once (read the reply later with "
            "sessions_history).")),
        builtin(sessions_spawn, name="sessions_spawn", timeout=None, description=(
            "Start a child session (its own container) for an agent, optionally with a first "
            "prompt, and return its id; with wait=true also its reply. Depth and the number "
            "of open children are limited.")),
        builtin(session_status, name="session_status", description=(
            "A session's state: status, container, heartbeat age, turns, cost, model and last "
            "result. Default: this session.")),
    ]


async def close_children(host: BuiltinHost, parent: str) -> None:
    """``parent`` is closing: stop the turns tools sent it and close the sessions it
    spawned."""
    state = host.state
    await state.cancel_session_tasks(parent)
    for child_id in sorted(state.children.pop(parent, set())):
        child = host.get(child_id)
        if child is not None and not child.closed:
            try:
                await child.close()
            except Exception as exc:  # noqa: BLE001 - best effort, logged
                from ._base import log

                log.warning("closing child session %s of %s: %s", child_id, parent, exc)
    state.turn_locks.pop(parent, None)
