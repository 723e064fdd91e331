"""The host's answers to the CLI's requests: host tools over MCP, permission requests
(``can_use_tool``) and hooks; the pure pieces are shared with the local-CLI provider."""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import secrets
import time
from collections.abc import Callable
from typing import Any

from .. import metrics, tracing
from ..errors import (
    BadData,
    TransportError,
)
from ..protocol import bounded
from ..storage.sessions import McpRelay
from .base import SessionBase

log = logging.getLogger("dockercc.session")


_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")

PERMISSION_TIMEOUT_S = 300.0
"""How long an approver (``can_use_tool``) may take before the request is denied, unless the
config says otherwise (``timeouts.permissionMs``)."""




async def run_hook(fns: dict[str, Callable[..., Any]], request: dict[str, Any],
                   where: str = "", *, timeout_s: float = PERMISSION_TIMEOUT_S
                   ) -> dict[str, Any]:
    """One hook callback on the CLI's ``hook_callback`` request; its output as the CLI reads
    it (``continue_`` / ``async_`` spelled as the CLI's keys)."""
    fn = fns.get(str(request.get("callback_id")))
    if fn is None:
        return {}
    data = request.get("input")
    try:
        async with asyncio.timeout(timeout_s):
            out = fn(data if isinstance(data, dict) else {}, request.get("tool_use_id"),
                     {"signal": None})
            if inspect.isawaitable(out):
                out = await out
    except TimeoutError:
        log.warning("hook %s of %s took longer than %gs (timeouts.permissionMs): skipped",
                    request.get("callback_id"), where, timeout_s)
        return {}
    except Exception as exc:  # noqa: BLE001 - a failing hook must not end the session
        log.warning("hook %s of %s raised %s", request.get("callback_id"), where,
                    type(exc).__name__)
        return {}
    if not isinstance(out, dict):
        return {}
    renamed = {"async_": "async", "continue_": "continue"}
    return {renamed.get(str(k), str(k)): v for k, v in out.items()}


async def decide_permission(approver: Any, request: dict[str, Any],
                            where: str = "", *, timeout_s: float = PERMISSION_TIMEOUT_S
                            ) -> dict[str, Any]:
    """An approver (``can_use_tool``) on one of the CLI's permission requests, as the CLI's
    decision (an error, a bad answer or no answer in time denies)."""
    from ..types import PermissionResultAllow, PermissionResultDeny, ToolPermissionContext

    name = request.get("tool_name")
    tool_input = request.get("input")
    if not isinstance(name, str) or not isinstance(tool_input, dict):
        return {"behavior": "deny", "message": "malformed permission request"}
    if approver is None:
        return {"behavior": "deny", "message": "no approver for this session"}
    suggestions = request.get("permission_suggestions")
    ctx = ToolPermissionContext(suggestions=suggestions if isinstance(suggestions, list) else [])
    try:
        async with asyncio.timeout(timeout_s):
            answer = approver(name, dict(tool_input), ctx)
            if inspect.isawaitable(answer):
                answer = await answer
    except TimeoutError:
        return {"behavior": "deny",
                "message": f"the approver (can_use_tool) did not answer within {timeout_s:g}s "
                           "(timeouts.permissionMs): denied"}
    except Exception as exc:  # noqa: BLE001 - a failing approver denies, the turn goes on
        log.warning("can_use_tool for %s raised %s", where, type(exc).__name__)
        return {"behavior": "deny", "message": f"approver failed: {type(exc).__name__}"}
    if isinstance(answer, PermissionResultAllow):
        return {"behavior": "allow", "updatedInput": answer.updated_input
                if answer.updated_input is not None else tool_input}
    if isinstance(answer, PermissionResultDeny):
        out: dict[str, Any] = {"behavior": "deny", "message": answer.message or "denied"}
        if answer.interrupt:
            out["interrupt"] = True
        return out
    return {"behavior": "deny", "message": "the approver returned neither "
                                           "PermissionResultAllow nor PermissionResultDeny"}


class SessionRelays(SessionBase):
    """The part of a session that answers its CLI's MCP, permission and hook requests."""

    async def _relay_loop(self) -> None:
        """Answer the CLI's MCP messages (relayed by the runner) with the host bridge."""
        relay = self.pool.transport.sessions.mcp_relay(self.id)
        pending: set[asyncio.Task[None]] = set()
        try:
            while True:
                try:
                    item = await relay.next_request(timeout=1)
                except (OSError, ConnectionError, TransportError) as exc:
                    log.warning("MCP relay for %s: %s", self.id, exc)
                    await asyncio.sleep(0.5)
                    continue
                except Exception as exc:  # redis errors
                    log.warning("MCP relay for %s: %s", self.id, exc)
                    await asyncio.sleep(0.5)
                    continue
                if item is None:
                    continue
                task = asyncio.create_task(self._answer(relay, item))
                pending.add(task)
                task.add_done_callback(pending.discard)
        finally:
            for task in pending:
                task.cancel()
            await relay.aclose()

    async def _answer(self, relay: McpRelay, raw: Any) -> None:
        try:
            req = bounded.loads_object(raw, max_bytes=bounded.MAX_MESSAGE_BYTES,
                                       what="MCP request")
            request_id = req["request_id"]
            message = req.get("message") or {}
            if not isinstance(request_id, str) or not _REQUEST_ID_RE.fullmatch(request_id) \
                    or not isinstance(message, dict):
                raise BadData("MCP request: bad request_id or message")
        except (BadData, KeyError) as exc:
            log.warning("MCP request for %s dropped: %s", self.id, exc)
            return
        # host tools run with the host's power: answer only the container holding this
        # session's current lease (it alone got the lease token, through its own assignment)
        token, container = req.get("lease_token"), req.get("container")
        lease = self.lease
        if (not self._lease_token or not isinstance(token, str)
                or not secrets.compare_digest(token, self._lease_token)
                or (lease is not None and container != lease.container)):
            log.warning("MCP request for %s dropped: not from the session's current container",
                        self.id)
            return
        request = req.get("request")
        if req.get("kind") == "permission":
            reply: Any = await self._decide(request if isinstance(request, dict) else {})
        elif req.get("kind") == "hook":
            reply = await self._run_hook(request if isinstance(request, dict) else {})
        else:
            assert self._bridge is not None
            call = message.get("method") == "tools/call"
            t0 = time.perf_counter()
            with tracing.tool_span(self._trace, req, self.id) as span:
                reply = await self._bridge.handle(message)
                outcome = reply.get("result")
                failed = "error" in reply or (isinstance(outcome, dict)
                                              and bool(outcome.get("isError")))
                if span is not None and failed:
                    span.set_status(
                        tracing.otel_trace.Status(tracing.otel_trace.StatusCode.ERROR))
            if call:
                params = message.get("params")
                name = params.get("name") if isinstance(params, dict) else None
                # the name comes from the container: only the session's own tools become
                # labels (any other string would grow the metric without bound)
                metrics.on_tool_call(name if isinstance(name, str) and name in self._tools
                                     else "unknown", time.perf_counter() - t0, not failed)
        await relay.reply(request_id, reply)

    async def _run_hook(self, request: dict[str, Any]) -> dict[str, Any]:
        return await run_hook(self._hook_fns, request, self.id,
                              timeout_s=self.pool.config.timeouts.permission_ms / 1000)

    async def _decide(self, request: dict[str, Any]) -> dict[str, Any]:
        return await decide_permission(self.options.can_use_tool, request, self.id,
                                       timeout_s=self.pool.config.timeouts.permission_ms / 1000)

    # -- conversation ----------------------------------------------------------------------
