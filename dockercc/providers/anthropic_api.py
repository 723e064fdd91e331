"""``anthropic/<model>``: the Messages API through the ``anthropic`` SDK (optional extra:
``pip install 'dockercc[anthropic]'``).

The SDK's raw streaming events are exactly the ``stream_event`` payloads the CLI relays, so
each one is wrapped as a CLI line and fed to the same :class:`~dockercc._mapper.EventMapper`;
the provider adds the ``assistant`` line of each message, the ``user`` line of each round of
tool results and a final ``result`` line, the way the CLI does. So consumers see the same
``TextDelta`` / ``ToolUse`` / ``ToolResult`` / ``Result`` events as from a container.

Host tools are offered as ``mcp__host__<name>`` (the names the model sees in a container
too) and run in this process; the loop goes on while the model asks for tools, up to
``max_turns`` (default :data:`DEFAULT_MAX_TURNS`). There are no built-in Claude Code tools
(Bash, Read, ...) here: this is the plain API.

The session's options act here as the CLI applies them (this process runs the tools, so it
applies them itself): ``disallowed_tools`` refuses a tool; ``can_use_tool`` is asked before
every other tool call not in ``allowed_tools`` (unless the permission mode is
``bypassPermissions``) and may deny it or change its input; hooks run for
:data:`SUPPORTED_HOOKS` (PreToolUse can deny / change the input, PostToolUse can add to the
result, UserPromptSubmit can block the prompt or add context, Stop can make the model go on),
with the CLI's inputs and outputs; ``output_format`` offers the CLI's ``StructuredOutput``
tool, checks the model's answer against the schema (a mismatch goes back to the model, as the
CLI does) and puts it in ``Result.structured_output``. Other hook events cannot happen here:
a session with them is refused when it is created (:class:`~dockercc.OptionsError`).

Unavailable (fallback allowed, before any event): the SDK is not installed, no API key is
configured, the API cannot be reached, or it answers 401/403/404/408/429/5xx/529.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from .._mapper import EventMapper
from ..errors import AgentError
from ..events import Event
from ..protocol import control
from ..protocol.cli import MCP_SERVER_NAME
from ..protocol.envelope import Envelope
from ..session import SessionOptions, decide_permission, hooks_wire, run_hook
from .base import ModelRef, Prompt, Provider, ProviderContext, ProviderSession, unavailable

DEFAULT_MAX_TOKENS = 8192
DEFAULT_MAX_TURNS = 25
#: HTTP statuses that mean "this provider cannot serve now" (fallback before output)
UNAVAILABLE_STATUSES = frozenset({401, 403, 404, 408, 429, 500, 502, 503, 504, 529})
TOOL_PREFIX = f"mcp__{MCP_SERVER_NAME}__"
STRUCTURED_OUTPUT_TOOL = "StructuredOutput"
"""The CLI's tool for ``output_format`` (the model answers by calling it)."""
SUPPORTED_HOOKS = frozenset({"PreToolUse", "PostToolUse", "UserPromptSubmit", "Stop"})
"""The hook events of a plain-API session (no subagents, compaction or notifications)."""

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

    def unsupported(self, options: SessionOptions) -> tuple[str, str] | None:
        other = sorted(set(options.hooks or {}) - SUPPORTED_HOOKS)
        if other:
            return (f"hooks.{other[0]}",
                    f"{self.name} (the Messages API) has no {', '.join(other)} events; it runs "
                    f"{', '.join(sorted(SUPPORTED_HOOKS))} hooks only: drop the others or "
                    "leave anthropic/ out of the chain (model.fallbacks)")
        return None


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
        self._hooks_config, self._hook_fns = hooks_wire(options.hooks)
        self._denials: list[dict[str, Any]] = []  # this turn's refused tool calls
        self._structured: Any = None  # this turn's StructuredOutput answer
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
        tools = [{"name": TOOL_PREFIX + t.name, "description": t.description or t.name,
                  "input_schema": t.input_schema} for t in self._tools]
        if self.options.json_schema is not None:
            tools.append({"name": STRUCTURED_OUTPUT_TOOL,
                          "description": "Use this tool to return your final response in the "
                                         "requested structured format.",
                          "input_schema": self.options.json_schema})
        return tools

    # -- hooks and approvals (the CLI's rules, applied here: this process runs the tools) --

    async def _hooks(self, event: str, data: dict[str, Any], tool_name: str | None = None,
                     tool_use_id: str | None = None) -> list[dict[str, Any]]:
        """Run the ``event`` hooks (those whose matcher matches ``tool_name``); their
        outputs in the CLI's spelling."""
        outputs = []
        data = {"hook_event_name": event, "session_id": self.claude_session_id,
                "cwd": self.options.workspace or "", **data}
        for entry in self._hooks_config.get(event, []):
            if tool_name is not None and not _matches(entry.get("matcher"), tool_name):
                continue
            for hid in entry["hookCallbackIds"]:
                out = await run_hook(self._hook_fns, {"callback_id": hid, "input": data,
                                                      "tool_use_id": tool_use_id},
                                     self.id, timeout_s=self.permission_timeout_s)
                if out:
                    outputs.append(out)
        return outputs

    def _allowed_without_asking(self, name: str) -> bool:
        o, a = self.options, self.agent_config
        allowed = o.allowed_tools if o.allowed_tools is not None else a.allowed_tools
        mode = o.permission_mode or a.permission_mode
        return mode == "bypassPermissions" or any(
            _matches(pattern, name) for pattern in allowed or [])

    def _disallowed(self, name: str) -> bool:
        o, a = self.options, self.agent_config
        denied = o.disallowed_tools if o.disallowed_tools is not None else a.disallowed_tools
        return any(_matches(pattern, name) for pattern in denied or [])

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
        self._denials, self._structured = [], None
        user_content: list[dict[str, Any]] = (
            [{"type": "text", "text": prompt}] if isinstance(prompt, str) else list(prompt))
        text_prompt = "\n".join(str(b.get("text", "")) for b in user_content
                                if isinstance(b, dict) and b.get("type") == "text")
        for out in await self._hooks("UserPromptSubmit", {"prompt": text_prompt}):
            specific = out.get("hookSpecificOutput") or {}
            if out.get("decision") == "block" or out.get("continue") is False:
                reason = str(out.get("reason") or out.get("stopReason")
                             or "the prompt was blocked by a UserPromptSubmit hook")
                for item in self._map(self._line(
                        "result", subtype="error_during_execution", is_error=True,
                        result=reason, duration_ms=int((time.monotonic() - t0) * 1000),
                        duration_api_ms=0, num_turns=0, stop_reason=None,
                        terminal_reason="hook_blocked", total_cost_usd=None,
                        usage={"input_tokens": 0, "output_tokens": 0}, errors=[reason],
                        permission_denials=[])):
                    yield item
                return
            if specific.get("additionalContext"):
                user_content.append({"type": "text",
                                     "text": str(specific["additionalContext"])})
        history.append({"role": "user", "content": prompt if isinstance(prompt, str)
                        and len(user_content) == 1 else user_content})
        stop_hook_active = False
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
                        mapped: list[Event] = []
                        if not began:
                            mapped += self._map(self._line(
                                "system", subtype="init", model=self.ref.model,
                                tools=[t["name"] for t in tools], mcp_servers=[],
                                permissionMode="default", apiKeySource="dockercc",
                                cwd=self.options.workspace or "", claude_code_version=None))
                        mapped += self._map(self._line("stream_event", event=ev))
                        for item in mapped:
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
                # Stop hooks may make the model go on (their reason is its next prompt)
                go_on = [str(out.get("reason") or "") for out in await self._hooks(
                    "Stop", {"stop_hook_active": stop_hook_active})
                    if out.get("decision") == "block"]
                if not go_on or rounds >= max_turns:
                    break
                stop_hook_active = True
                history.append({"role": "user", "content": [
                    {"type": "text", "text": "\n".join(r for r in go_on if r)
                     or "A Stop hook asked to continue."}]})
                continue
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
            total_cost_usd=None, usage=usage, errors=errors, permission_denials=self._denials,
            api_error_status=error_status,
            **({"structured_output": self._structured} if self._structured is not None else {}))
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
        """One tool call, as the CLI would make it: the structured output, the disallowed
        list, PreToolUse hooks, the approver, the tool, PostToolUse hooks."""
        name = str(call.get("name", ""))
        use_id = str(call.get("id", ""))
        tool_input = call.get("input") if isinstance(call.get("input"), dict) else {}
        assert isinstance(tool_input, dict)

        def refused(message: str) -> dict[str, Any]:
            self._denials.append({"tool_name": name, "tool_use_id": use_id,
                                  "tool_input": tool_input})
            return _tool_result(use_id, [{"type": "text", "text": message}], True)

        if name == STRUCTURED_OUTPUT_TOOL and self.options.json_schema is not None:
            return self._structured_answer(use_id, tool_input)
        if self._disallowed(name):
            return refused(f"{name} is a disallowed tool (disallowed_tools)")
        decided = False
        for out in await self._hooks("PreToolUse", {"tool_name": name,
                                                    "tool_input": tool_input,
                                                    "tool_use_id": use_id}, name, use_id):
            specific = out.get("hookSpecificOutput") or {}
            decision = specific.get("permissionDecision")
            reason = specific.get("permissionDecisionReason") or out.get("reason") or ""
            if out.get("continue") is False:
                self._interrupt.set()
                return refused(out.get("stopReason") or reason or "stopped by a hook")
            if decision == "deny" or out.get("decision") == "block":
                return refused(reason or f"{name} was blocked by a PreToolUse hook")
            if isinstance(specific.get("updatedInput"), dict):
                tool_input = specific["updatedInput"]
            if decision == "allow" or out.get("decision") == "approve":
                decided = True
        if (not decided and self.options.can_use_tool is not None
                and not self._allowed_without_asking(name)):
            answer = await decide_permission(
                self.options.can_use_tool, {"tool_name": name, "input": tool_input,
                                            "tool_use_id": use_id}, self.id,
                timeout_s=self.permission_timeout_s)
            if answer.get("behavior") != "allow":
                if answer.get("interrupt"):
                    self._interrupt.set()
                return refused(str(answer.get("message") or "denied"))
            if isinstance(answer.get("updatedInput"), dict):
                tool_input = answer["updatedInput"]
        tool = self._tools.get(name.removeprefix(TOOL_PREFIX)) \
            if name.startswith(TOOL_PREFIX) else None
        content: list[dict[str, Any]]
        if tool is None:
            offered = ", ".join(TOOL_PREFIX + t.name for t in self._tools) or "none"
            content = [{"type": "text", "text": f"unknown tool {name!r} (available: {offered})"}]
            is_error = True
        else:
            output = await tool.call(tool_input)
            content = [_mcp_to_api_block(b) for b in output.content]
            is_error = output.is_error
        for out in await self._hooks("PostToolUse", {
                "tool_name": name, "tool_input": tool_input, "tool_use_id": use_id,
                "tool_response": content}, name, use_id):
            specific = out.get("hookSpecificOutput") or {}
            extra = [out.get("reason") if out.get("decision") == "block" else None,
                     specific.get("additionalContext")]
            content += [{"type": "text", "text": str(x)} for x in extra if x]
            if out.get("continue") is False:
                self._interrupt.set()
        return _tool_result(use_id, content, is_error)

    def _structured_answer(self, use_id: str, value: dict[str, Any]) -> dict[str, Any]:
        """The model's call of the StructuredOutput tool: kept when it matches the schema,
        else the problems go back to the model (as the CLI does)."""
        import jsonschema

        assert self.options.json_schema is not None
        validator = jsonschema.Draft202012Validator(self.options.json_schema)
        problems = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                    for e in validator.iter_errors(value)]
        if problems:
            return _tool_result(use_id, [{"type": "text", "text": "Output does not match the "
                                          "required schema: " + "; ".join(problems[:5])}], True)
        self._structured = value
        return _tool_result(use_id, [{"type": "text",
                                      "text": "Structured output provided successfully"}], False)

    async def interrupt(self) -> None:
        self._interrupt.set()

    async def close(self) -> None:
        client, self.client = self.client, None
        if client is not None:
            with contextlib.suppress(Exception):
                await client.close()


def _matches(pattern: str | None, name: str) -> bool:
    """A hook matcher or a tool rule against a tool name, as the CLI reads them: none or
    ``*`` is every tool, ``A|B`` either, else a regular expression over the whole name
    (``mcp__host__*`` included)."""
    if not pattern or pattern == "*":
        return True
    if name in pattern.split("|") or name == pattern:
        return True
    if pattern.endswith("*") and "(" not in pattern and name.startswith(pattern[:-1]):
        return True
    try:
        return re.fullmatch(pattern, name) is not None
    except re.error:
        return False


def _tool_result(use_id: str, content: list[dict[str, Any]], is_error: bool) -> dict[str, Any]:
    return {"type": "tool_result", "tool_use_id": use_id, "content": content,
            "is_error": is_error}


def _api_error_text(exc: BaseException) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])[:500]
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]

