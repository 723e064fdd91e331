"""The runner's dealings with the session's host: its control channel (interrupt, stop) and
the CLI's requests that only the host can answer, relayed through ``:mcp:requests`` with the
lease token: MCP messages for the host's tools, permission decisions for its approver and
hook callbacks.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from ..protocol import control
from ..protocol.keys import SessionKeys
from .history import Conversation
from .liveness import REDIS_DOWN, RedisLink, now_ms
from .settings import Assignment, RunnerSettings


class HostRelay:
    """The claimed session's host, as the runner reaches it (one per claim)."""

    def __init__(self, r: aioredis.Redis, link: RedisLink, settings: RunnerSettings,
                 keys: SessionKeys, assignment: Assignment,
                 write: Callable[[str], Awaitable[bool]], conversation: Conversation,
                 spawn: Callable[[Awaitable[Any]], asyncio.Task[Any]],
                 on_stop: Callable[[], None], tools_ready: asyncio.Event) -> None:
        self.r = r
        self.link = link
        self.s = settings
        self.keys = keys
        self.assignment = assignment
        self.write = write
        self.conversation = conversation  # (the turn's traceparent)
        self.spawn = spawn
        self.on_stop = on_stop
        self.tools_ready = tools_ready  # set once the CLI listed the session's tools

    # -- the control channel ---------------------------------------------------------------

    async def control_loop(self) -> None:
        while True:
            try:
                pubsub = self.r.pubsub(ignore_subscribe_messages=True)
                await pubsub.subscribe(self.keys.control)
                while True:
                    msg = await pubsub.get_message(timeout=1.0)
                    if msg is None:
                        continue
                    try:
                        cmd = json.loads(msg["data"])
                    except ValueError:
                        continue
                    await self.on_control(cmd if isinstance(cmd, dict) else {})
            except REDIS_DOWN as exc:
                await self.link.failed("control channel", exc, self.r)

    async def on_control(self, cmd: dict[str, Any]) -> None:
        kind = cmd.get("type")
        if kind == "interrupt":
            await self.write(control.interrupt_request(
                str(cmd.get("request_id") or control.new_request_id())))
        elif kind == "stop":
            self.on_stop()

    # -- the CLI's requests ----------------------------------------------------------------

    def on_request(self, obj: dict[str, Any]) -> None:
        """A ``control_request`` line of the claimed CLI: relay what the host answers (MCP,
        permissions with an approver, hooks); refuse a permission prompt nobody can answer."""
        req = obj.get("request") or {}
        if not isinstance(req, dict):
            return
        rid = obj.get("request_id", "")
        subtype = req.get("subtype")
        if subtype == "mcp_message":
            self.spawn(self.relay_mcp(rid, req))
        elif subtype == "can_use_tool":
            if "--permission-prompt-tool" in self.assignment.args:
                # the session has an approver on the host (can_use_tool / notebook)
                self.spawn(self.relay_to_host("permission", rid, {
                    k: req.get(k) for k in ("tool_name", "input", "permission_suggestions",
                                            "tool_use_id", "blocked_path",
                                            "decision_reason")}))
            else:
                # nobody to ask: the session's permission mode rules
                self.spawn(self.write(control.control_error(
                    rid, "no interactive permission prompt in dockercc")))
        elif subtype == "hook_callback":
            self.spawn(self.relay_to_host("hook", rid, {
                k: req.get(k) for k in ("callback_id", "input", "tool_use_id")}))

    async def relay_to_host(self, kind: str, request_id: str, request: dict[str, Any]) -> None:
        """Ask the session's host for a decision (``kind`` ``permission``: its approver;
        ``hook``: a hook callback) through the MCP relay list, with the lease token, and give
        the answer to the CLI. The host answers within ``timeouts.permissionMs`` (a slower
        approver is denied there, with its reason); no answer at all a little after that (the
        host is gone): a permission is denied, a hook lets the CLI go on."""
        wait_s = self.s.permission_timeout_s + 10
        item = await self.ask_host(request_id, {"kind": kind, "request": request},
                                   f"waiting for the host's {kind} answer", wait_s=wait_s)
        answer: dict[str, Any] = {} if kind == "hook" else {
            "behavior": "deny",
            "message": f"no answer from the host's approver in {wait_s:.0f}s: denied"}
        if item is not None:
            try:
                got = json.loads(item[1])
            except ValueError:
                got = None
            if isinstance(got, dict) and (kind == "hook" or got.get("behavior") in (
                    "allow", "deny")):
                answer = got
        await self.write(control.dumps_line(control.control_success_dict(request_id, answer)))

    async def ask_host(self, request_id: str, fields: dict[str, Any], what: str, *,
                       wait_s: float | None = None) -> Any:
        """Put one request on the session's ``:mcp:requests`` (tagged with this container and
        its lease token, so the host answers only the current lease) and wait up to
        ``mcp_timeout_s`` for the host's reply on ``:mcp:reply:<id>``; None without one."""
        keys = self.keys
        payload = json.dumps({"request_id": request_id, **fields, "ts": now_ms(),
                              "container": self.s.container,
                              "lease_token": self.assignment.lease_token},
                             ensure_ascii=False, default=str)
        reply_key = keys.mcp_reply(request_id)
        await self.r.rpush(keys.mcp_requests, payload)
        # short BLPOPs until the deadline: redis-py's default socket timeout (5 s) would
        # otherwise abort one long BLPOP and leave a slow tool's reply unread forever
        deadline = time.monotonic() + (self.s.mcp_timeout_s if wait_s is None else wait_s)
        item = None
        while item is None and (left := deadline - time.monotonic()) > 0:
            try:
                item = await self.r.blpop([reply_key], timeout=min(2.0, max(left, 0.01)))
            except REDIS_DOWN as exc:
                await self.link.failed(what, exc, self.r)
        return item

    async def relay_mcp(self, request_id: str, request: dict[str, Any]) -> None:
        """Hand one MCP message to the host bridge and its reply back to the CLI."""
        message = request.get("message") or {}
        item = await self.ask_host(request_id, {
            "server_name": request.get("server_name"), "message": message,
            "traceparent": self.conversation.traceparent}, "waiting for an MCP reply")
        if item is None:
            reply: dict[str, Any] = {"jsonrpc": "2.0", "id": message.get("id"), "error": {
                "code": -32001, "message": f"host tool bridge did not answer in "
                                           f"{self.s.mcp_timeout_s:.0f}s (is the pool's owner running?)"}}
        else:
            try:
                reply = json.loads(item[1])
            except ValueError:
                reply = {"jsonrpc": "2.0", "id": message.get("id"),
                         "error": {"code": -32603, "message": "bad reply from host bridge"}}
        await self.write(control.mcp_response(request_id, reply))
        if message.get("method") == "tools/list":
            self.tools_ready.set()
