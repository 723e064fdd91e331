"""``anthropic/<model>``: the Messages API through the ``anthropic`` SDK (optional extra:
``pip install 'dockercc[anthropic]'``).

The SDK's raw streaming events are exactly the ``stream_event`` payloads the CLI relays, so
each one is wrapped as a CLI line and fed to the same :class:`~dockercc.events.EventMapper`;
the provider adds the ``assistant`` line of each message, the ``user`` line of each round of
tool results and a final ``result`` line, the way the CLI does. So consumers see the same
``TextDelta`` / ``ToolUse`` / ``ToolResult`` / ``Result`` events as from a container.

Host tools are offered as ``mcp__host__<name>`` (the names the model sees in a container
too) and run in this process; the loop goes on while the model asks for tools, up to
``max_turns`` (default :data:`DEFAULT_MAX_TURNS`). There are no built-in Claude Code tools
(Bash, Read, ...) here: this is the plain API.

Unavailable (fallback allowed, before any event): the SDK is not installed, no API key is
configured, the API cannot be reached, or it answers 401/403/404/408/429/5xx/529.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from ..errors import AgentError
from ..events import Event, EventMapper
from ..protocol import control
from ..protocol.cli import MCP_SERVER_NAME
from ..protocol.envelope import Envelope
from ..session import SessionOptions
from .base import ModelRef, Prompt, Provider, ProviderContext, ProviderSession, unavailable

DEFAULT_MAX_TOKENS = 8192
DEFAULT_MAX_TURNS = 25
#: HTTP statuses that mean "this provider cannot serve now" (fallback before output)
UNAVAILABLE_STATUSES = frozenset({401, 403, 404, 408, 429, 500, 502, 503, 504, 529})
TOOL_PREFIX = f"mcp__{MCP_SERVER_NAME}__"

__all__ = ["AnthropicProvider", "AnthropicSession", "DEFAULT_MAX_TOKENS", "DEFAULT_MAX_TURNS",
           "UNAVAILABLE_STATUSES"]


class AnthropicProvider(Provider):
    """Sessions on the Messages API. ``max_tokens`` per request."""

    kind = "anthropic"

    def __init__(self, ref: ModelRef, context: ProviderContext, *,
                 max_tokens: int = DEFAULT_MAX_TOKENS) -> None:
        super().__init__(ref, context)
        self.max_tokens = max_tokens

    def session(self, options: SessionOptions, session_id: str) -> ProviderSession:
        return AnthropicSession(self, options, session_id)


def _mcp_to_api_block(block: dict[str, Any]) -> dict[str, Any]:
    """An MCP content block of a tool result as a Messages API block."""
    if block.get("type") == "image" and isinstance(block.get("data"), str):
        return {"type": "image", "source": {"type": "base64",
                                            "media_type": block.get("mimeType", "image/png"),
                                            "data": block["data"]}}
    if block.get("type") == "text":
        return {"type": "text", "text": str(block.get("text", ""))}
    return {"type": "text", "text": json.dumps(block, ensure_ascii=False, default=str)}


class AnthropicSession(ProviderSession):
    def __init__(self, provider: AnthropicProvider, options: SessionOptions,
                 session_id: str) -> None:
        super().__init__(provider.ref, provider.context, options, session_id)
        self.provider = provider
        self.client: Any = None
        self.sdk: Any = None
        self.mapper = EventMapper(session_id)
        self.claude_session_id = str(uuid.uuid4())
        self.messages: list[dict[str, Any]] = []
        self._tools = self.tool_registry()
        self._seq = 0
        self._interrupt = asyncio.Event()
        self._turn_lock = asyncio.Lock()

    async def start(self) -> None:
        if self.client is not None:
            return
        try:
            import anthropic
        except ImportError as exc:
            raise unavailable(self.ref, "the anthropic SDK is not installed "
                                        "(pip install 'dockercc[anthropic]')") from exc
        creds = self.context.config.credentials
        env = self.context.env
        key = creds.api_key.get_secret_value() if creds.api_key is not None else None
        key = key or env.get("ANTHROPIC_API_KEY")
        if not key:
            raise unavailable(self.ref, "no Anthropic API key (set ANTHROPIC_API_KEY or "
                                        "credentials.apiKey)")
        base_url = creds.base_url or env.get("ANTHROPIC_BASE_URL") or None
        self.sdk = anthropic
        self.client = anthropic.AsyncAnthropic(api_key=key, base_url=base_url, max_retries=1)

    # -- lines for the mapper ----------------------------------------------------------------

    def _map(self, line: dict[str, Any]) -> list[Event]:
        self._seq += 1
        envelope = Envelope(seq=self._seq, ts=int(time.time() * 1000), event=line)
        return [self.stamp(e) for e in self.mapper.map(envelope)]

    def _line(self, kind: str, **fields: Any) -> dict[str, Any]:
        return {"type": kind, **fields, "parent_tool_use_id": None,
                "session_id": self.claude_session_id, "uuid": str(uuid.uuid4())}

    def _system(self) -> str | None:
        o, a = self.options, self.agent_config
        parts = [o.system_prompt if o.system_prompt is not None else a.system_prompt,
                 o.append_system_prompt or a.append_system_prompt]
        text = "\n\n".join(p for p in parts if p)
        return text or None

    def _api_tools(self) -> list[dict[str, Any]]:
        return [{"name": TOOL_PREFIX + t.name, "description": t.description or t.name,
                 "input_schema": t.input_schema} for t in self._tools]

    # -- conversation ----------------------------------------------------------------------

    async def stream(self, prompt: Prompt, *, timeout: float | None = None
                     ) -> AsyncIterator[Event]:
        control.check_prompt(prompt)
        await self.start()
        async with self._turn_lock:
            self._interrupt.clear()
            agen = self._turn(prompt)
            deadline = None if timeout is None else time.monotonic() + timeout
            try:
                while True:
                    remaining = None if deadline is None else max(0.0,
                                                                  deadline - time.monotonic())
                    try:
                        event = await asyncio.wait_for(anext(agen), remaining)
                    except StopAsyncIteration:
                        return
                    except TimeoutError:
                        raise TimeoutError(f"no result from the Messages API for session "
                                           f"{self.id!r} within {timeout}s") from None
                    yield event
            finally:
                await agen.aclose()

    async def _turn(self, prompt: Prompt) -> AsyncGenerator[Event, None]:
        sdk = self.sdk
        t0 = time.monotonic()
        api_ms = 0.0
        history = list(self.messages)
        history.append({"role": "user", "content": prompt})
        max_turns = self.options.max_turns or self.agent_config.max_turns or DEFAULT_MAX_TURNS
        usage = {"input_tokens": 0, "output_tokens": 0}
        began = False
        rounds = 0
        stop_reason: str | None = None
        final_text = ""
        subtype, is_error, terminal = "success", False, "completed"
        error_status: int | None = None
        errors: list[str] = []
        while True:
            rounds += 1
            kwargs: dict[str, Any] = {"model": self.ref.model, "messages": history,
                                      "max_tokens": self.provider.max_tokens, "stream": True}
            system = self._system()
            if system:
                kwargs["system"] = system
            tools = self._api_tools()
            if tools:
                kwargs["tools"] = tools
            blocks: dict[int, dict[str, Any]] = {}
            partial: dict[int, list[str]] = {}
            message: dict[str, Any] = {}
            t_api = time.monotonic()
            aborted = False
            try:
                stream = await self.client.messages.create(**kwargs)
                try:
                    async for raw in stream:
                        ev = raw.model_dump(mode="json", exclude_none=True)
                        self._accumulate(ev, message, blocks, partial)
                        out = []
                        if not began:
                            out += self._map(self._line(
                                "system", subtype="init", model=self.ref.model,
                                tools=[t["name"] for t in tools], mcp_servers=[],
                                permissionMode="default", apiKeySource="dockercc",
                                cwd=self.options.workspace or "", claude_code_version=None))
                        out += self._map(self._line("stream_event", event=ev))
                        for item in out:
                            began = True
                            yield item
                        if self._interrupt.is_set():
                            aborted = True
                            break
                finally:
                    with contextlib.suppress(Exception):
                        await stream.close()
            except (sdk.APIConnectionError, sdk.APIStatusError) as exc:
                status = getattr(exc, "status_code", None)
                detail = _api_error_text(exc)
                if not began:
                    if status is None or status in UNAVAILABLE_STATUSES or status >= 500:
                        where = "cannot reach the Messages API" if status is None \
                            else f"the Messages API answered {status}"
                        raise unavailable(self.ref, f"{where}: {detail}") from exc
                    raise AgentError(f"the Messages API refused the request ({status}): "
                                     f"{detail}") from exc
                subtype, is_error, terminal = "error_during_execution", True, "api_error"
                error_status = status
                errors.append(detail)
                break
            api_ms += (time.monotonic() - t_api) * 1000
            for key in ("input_tokens", "output_tokens"):
                value = (message.get("usage") or {}).get(key)
                if isinstance(value, int):
                    usage[key] += value
            content = [blocks[i] for i in sorted(blocks)]
            stop_reason = message.get("stop_reason")
            assistant = {"id": message.get("id"), "type": "message", "role": "assistant",
                         "model": message.get("model") or self.ref.model, "content": content,
                         "stop_reason": stop_reason, "usage": message.get("usage") or {}}
            for item in self._map(self._line("assistant", message=assistant)):
                yield item
            final_text = "".join(b.get("text", "") for b in content if b.get("type") == "text")
            history.append({"role": "assistant", "content": content or [
                {"type": "text", "text": "[interrupted]"}]})
            if aborted:
                subtype, is_error, terminal = "error_during_execution", True, "aborted_streaming"
                break
            calls = [b for b in content if b.get("type") == "tool_use"]
            if stop_reason != "tool_use" or not calls:
                break
            results = [await self._run_tool(call) for call in calls]
            line = self._line("user", message={"role": "user", "content": results})
            for item in self._map(line):
                yield item
            history.append({"role": "user", "content": results})
            if self._interrupt.is_set():
                subtype, is_error, terminal = "error_during_execution", True, "aborted_tools"
                break
            if rounds >= max_turns:
                subtype, is_error, terminal = "error_max_turns", True, "max_turns"
                break
        self.messages = history
        result = self._line(
            "result", subtype=subtype, is_error=is_error, result=final_text,
            duration_ms=int((time.monotonic() - t0) * 1000), duration_api_ms=int(api_ms),
            num_turns=rounds, stop_reason=stop_reason, terminal_reason=terminal,
            total_cost_usd=None, usage=usage, errors=errors, permission_denials=[],
            api_error_status=error_status)
        for item in self._map(result):
            yield item

    @staticmethod
    def _accumulate(ev: dict[str, Any], message: dict[str, Any],
                    blocks: dict[int, dict[str, Any]], partial: dict[int, list[str]]) -> None:
        kind = ev.get("type")
        index = ev.get("index", 0)
        if kind == "message_start":
            message.update(ev.get("message") or {})
        elif kind == "content_block_start":
            blocks[index] = json.loads(json.dumps(ev.get("content_block") or {}))
            partial[index] = []
        elif kind == "content_block_delta":
            block = blocks.setdefault(index, {"type": "text", "text": ""})
            delta = ev.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                block["text"] = block.get("text", "") + delta.get("text", "")
            elif dtype == "thinking_delta":
                block["thinking"] = block.get("thinking", "") + delta.get("thinking", "")
            elif dtype == "signature_delta":
                block["signature"] = delta.get("signature", "")
            elif dtype == "input_json_delta":
                partial.setdefault(index, []).append(delta.get("partial_json", ""))
        elif kind == "content_block_stop":
            stopped = blocks.get(index)
            text = "".join(partial.get(index, []))
            if stopped is not None and stopped.get("type") == "tool_use" and text.strip():
                try:
                    stopped["input"] = json.loads(text)
                except ValueError:
                    stopped["input"] = {}
        elif kind == "message_delta":
            delta = ev.get("delta") or {}
            if "stop_reason" in delta:
                message["stop_reason"] = delta["stop_reason"]
            if isinstance(ev.get("usage"), dict):
                merged = dict(message.get("usage") or {})
                merged.update({k: v for k, v in ev["usage"].items() if v is not None})
                message["usage"] = merged

    async def _run_tool(self, call: dict[str, Any]) -> dict[str, Any]:
        name = str(call.get("name", ""))
        tool = self._tools.get(name.removeprefix(TOOL_PREFIX)) \
            if name.startswith(TOOL_PREFIX) else None
        content: list[dict[str, Any]]
        if tool is None:
            offered = ", ".join(TOOL_PREFIX + t.name for t in self._tools) or "none"
            content = [{"type": "text", "text": f"unknown tool {name!r} (available: {offered})"}]
            is_error = True
        else:
            output = await tool.call(call.get("input") or {})
            content = [_mcp_to_api_block(b) for b in output.content]
            is_error = output.is_error
        return {"type": "tool_result", "tool_use_id": call.get("id", ""), "content": content,
                "is_error": is_error}

    async def interrupt(self) -> None:
        self._interrupt.set()

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()


def _api_error_text(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:500]
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]

