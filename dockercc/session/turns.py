"""AsyncSession: a session's turns (send, receive, stream, ask, interrupt, stop, drain) and
its close, on the parts in :mod:`.container`, :mod:`.relays` and :mod:`.base`."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from .. import budget, logs, metrics, tracing
from ..errors import (
    AgentError,
    BudgetExceeded,
    CLIDied,
    ContainerLost,
    InvalidPrompt,
    SessionClosed,
    StructuredOutputError,
)
from ..events import (
    ApiRetry,
    ApiUnreachable,
    ErrorEvent,
    Event,
    Result,
    SystemInit,
    SystemStatus,
    TextDelta,
)
from ..pool.core import finished
from ..protocol import control
from ..protocol.envelope import Envelope
from ..storage.connection import redis_errors_as_transport_errors
from ..types import OptionsError
from .container import SessionContainer
from .options import SessionOptions

if TYPE_CHECKING:  # pragma: no cover
    from ..client import AsyncPool

log = logging.getLogger("dockercc.session")


def check_structured_output(schema: dict[str, Any], result: Result) -> None:
    """Raise :class:`StructuredOutputError` unless ``result.structured_output`` matches
    ``schema`` (the CLI asks the model again on a mismatch; this is the host's own check, so
    a caller can rely on the shape)."""
    import jsonschema

    value = result.structured_output
    if value is None:
        raise StructuredOutputError("the turn ended without structured output "
                                    "(output_format is set)", result, ["missing"])
    validator = jsonschema.Draft202012Validator(schema)
    problems = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
                for e in validator.iter_errors(value)]
    if problems:
        raise StructuredOutputError("the structured output does not match output_format: "
                                    + "; ".join(problems[:5]), result, problems)


async def ask_turn(events: AsyncIterator[Event], session_id: str, options: SessionOptions,
                   *, check: bool = True) -> Result:
    """The :class:`Result` of a turn's ``events`` (what every session's ``ask`` returns).

    With ``check`` a failed turn raises :class:`AgentError` (carrying the result), the CLI's
    own ``max_budget_usd`` limit :class:`BudgetExceeded`, and an answer that does not match
    ``json_schema`` :class:`~dockercc.errors.StructuredOutputError`. An interrupted turn
    returns its result, whoever interrupted it (this process, ``dockercc interrupt`` or a
    notebook's button): the CLI ends such a turn with ``error_during_execution`` and
    ``terminal_reason`` ``aborted_*`` and takes the next prompt, and claude-agent-sdk hands
    that ``ResultMessage`` back without raising; an interrupt is asked for, not a failure.
    """
    result: Result | None = None
    async for event in events:
        if isinstance(event, Result):
            result = event
    if result is None:
        raise AgentError(f"session {session_id!r} ended the turn without a result")
    if check and result.subtype == "error_max_budget_usd":
        # the CLI's own per-session limit (max_budget_usd) stopped the turn
        raise BudgetExceeded("session", result.cost_usd or 0.0, options.max_budget_usd or 0.0)
    if check and not result.ok and not result.interrupted:
        result.raise_for_error()
    if check and result.ok and options.json_schema is not None:
        # every provider's answer is checked the same way (StructuredOutputError)
        check_structured_output(options.json_schema, result)
    return result


class AsyncSession(SessionContainer):
    """One agent conversation. Use ``async with pool.session() as s`` or call :meth:`close`."""

    async def send(self, prompt: str | list[dict[str, Any]]) -> str:
        """Queue a prompt (text or content blocks); returns the input id. Read the reply with
        :meth:`receive`: the session's output is subscribed before the prompt goes out, so
        :meth:`receive` gets every event of the turn however late it starts."""
        control.check_prompt(prompt)
        line = control.user_message(prompt)
        if len(line) > self.pool.max_prompt_bytes:
            raise InvalidPrompt(f"the prompt is {len(line)} bytes; the limit is "
                                f"{self.pool.max_prompt_bytes} (max_prompt_bytes)")
        with logs.bound(session=self.id):
            return await self._send_locked(line)

    async def _send_locked(self, line: str) -> str:
        async with self._lock:
            self._turn_t0 = time.perf_counter()
            self._end_trace(outcome="abandoned")  # a turn sent before was never read to its end
            self._trace = tracing.TurnTrace.start(self.id, self.agent)
            with redis_errors_as_transport_errors(self.pool.transport.url):
                gate = self.pool.first_turns
                try:
                    await self._check_budget()
                    if self.lease is None and gate.enabled:
                        # a new session's first turn: in arrival order under a burst
                        await gate.acquire(self.id)
                    input_id = await self._send_line(line)
                except BaseException:
                    gate.release(self.id)
                    self._end_trace(outcome="send_failed")
                    await self._release_hold()
                    raise
                self._turn_open = True
                return input_id

    async def _check_budget(self) -> None:
        """Admit the turn under the pool's and the agent's budgets, or refuse it with
        :class:`BudgetExceeded`: one atomic step across every process sharing the Redis
        (the ledger's spend plus the turns admitted but not settled yet; see
        :mod:`dockercc.budget`). The admitted turn holds its place until its Result settles
        it."""
        cfg = self.pool.config
        if cfg.budget.usd is None and self.agent_config.budget.usd is None:
            return
        await self._release_hold()  # a turn sent before and never read to its end
        hold = f"{self.id}:{uuid.uuid4().hex[:12]}"
        if await budget.admit(self.pool.containers, cfg, self.agent, hold):
            self._hold = hold

    async def _release_hold(self) -> None:
        """The turn ends without a cost to record (lost, never sent, session closed)."""
        hold, self._hold = self._hold, None
        if hold is not None:
            try:
                await budget.settle(self.pool.containers, hold)
            except Exception as exc:  # noqa: BLE001 - it expires with our heartbeat anyway
                log.warning("could not release the budget hold of %s: %s", self.id, exc)

    async def _record_cost(self, result: Result) -> None:
        """Settle the turn under the budgets: its hold goes and its cost enters the shared
        ledger, once (keyed by session and seq), in one step. Only where a budget is
        configured: without one nobody reads the ledger, and a pool without budgets leaves
        no ledger keys behind."""
        hold, self._hold = self._hold, None
        if not budget.configured(self.pool.config):
            return
        try:
            await budget.settle(self.pool.containers, hold or "", self.id, result.seq,
                                self.agent, result.cost_usd)
        except Exception as exc:  # noqa: BLE001 - the turn itself succeeded
            log.warning("could not record the cost of %s: %s", self.id, exc)

    async def _send_line(self, line: str) -> str:
        """Subscribe to the output, queue ``line`` and claim a container, overlapped.

        The prompt goes out only once the subscription (and its replay position) is up: a
        reader that subscribed after sending could find a fast turn's first events already
        pushed out of the 1000-envelope buffer. It goes out *before* the claim has finished:
        the input list is the session's, and the runner reads it as soon as it has taken the
        session, so a warm container's CLI starts on the prompt while the claim is still
        being confirmed here. If the claim fails, the prompt is taken back (no runner has
        it) and the error raised; nothing of it stays queued.
        """
        t = self.pool.transport
        subscribing = (None if self._subscription is not None
                       else asyncio.ensure_future(t.subscribe(self.id, self.last_seq)))
        claiming = asyncio.ensure_future(self._ensure_container())
        sending: asyncio.Future[str] | None = None
        try:
            # each awaited through a shield: a cancel of this task stops here and reaches the
            # subtasks once, from the clean-up below (awaited bare, a second cancel would go
            # on into the claim and cut short its own clean-up)
            if subscribing is not None:
                self._subscription = await asyncio.shield(subscribing)
            sending = asyncio.ensure_future(t.send_input(
                self.id, line, traceparent=self._trace.traceparent if self._trace else ""))
            input_id = await asyncio.shield(sending)
            await asyncio.shield(claiming)
        except BaseException:
            # in a task of its own, awaited to its end however often this one is cancelled
            await finished(asyncio.ensure_future(
                self._undo_send(subscribing, sending, claiming)))
            raise
        return input_id

    async def _undo_send(self, subscribing: asyncio.Future[Any] | None,
                         sending: asyncio.Future[str] | None,
                         claiming: asyncio.Future[None]) -> None:
        """A send that failed or was cancelled: its claim is stopped (the pool gives back a
        container it took), its prompt withdrawn (a prompt queued but never answered would
        be the next container's first input) and its subscription closed."""
        for task in (subscribing, claiming):
            if task is not None and not task.done():
                task.cancel()
        for task in (subscribing, sending, claiming):
            if task is not None:
                with contextlib.suppress(BaseException):
                    await task
        if subscribing is not None and self._subscription is None and subscribing.done() \
                and not subscribing.cancelled() and subscribing.exception() is None:
            with contextlib.suppress(Exception):
                await subscribing.result().aclose()
        if sending is not None and not sending.cancelled() and sending.exception() is None:
            with contextlib.suppress(Exception):
                await self.pool.transport.withdraw_input(self.id, sending.result())
        await self._drop_subscription()

    async def _drop_subscription(self) -> None:
        sub, self._subscription = self._subscription, None
        if sub is not None:
            with contextlib.suppress(Exception):
                await sub.aclose()

    async def receive(self, *, timeout: float | None = None) -> AsyncIterator[Event]:
        """Events of the current turn, up to and including its :class:`Result`.

        Raises :class:`ContainerLost` if the container dies mid-turn (the next prompt
        resumes in a new one) and ``TimeoutError`` after ``timeout`` seconds.
        """
        # the subscription send() made before its prompt went out, else a new one (a reader
        # of a turn it did not send)
        stream = self._subscription or self.pool.transport.events(self.id, self.last_seq)
        self._subscription = None
        # one timer for the whole turn, not one per event: this loop is hot
        deadline = _Deadline(timeout)
        mapper = self.mapper
        waiting = ""  # why the turn waits (the API unreachable, retrying), for the timeout
        # counted here, added to the metrics once per turn: this loop is hot
        deltas = 0
        counts: dict[str, int] = {}
        trace = self._trace
        gate = self.pool.first_turns
        gated = gate.holds(self.id)
        try:
            while True:
                try:
                    envelope = await deadline.next(stream)
                except StopAsyncIteration:
                    return
                except TimeoutError:
                    self._turn_done(None, "timeout")
                    raise TimeoutError(
                        f"no result from session {self.id!r} within {timeout}s"
                        + (f"; it was waiting: {waiting}" if waiting else "")) from None
                seq = envelope.seq
                if seq <= self.last_seq:
                    continue  # (a subscription opened before last_seq moved on)
                self.last_seq = seq
                if trace is not None:
                    trace.envelope(envelope.ts, self.lease.container if self.lease else None)
                callbacks = self.on_event is not None or self.pool.on_event is not None
                for event in mapper.map(envelope):
                    if gated and not isinstance(event, SystemInit | SystemStatus):
                        gated = False  # the model answers: the CLI's start-up work is done
                        gate.release(self.id)
                    if callbacks:
                        await self._dispatch(event)
                    if type(event) is TextDelta:  # most events: nothing else to check
                        deltas += 1
                        if deltas == 1 and self._turn_t0 is not None:
                            metrics.on_first_token(self.agent,
                                                   time.perf_counter() - self._turn_t0)
                        yield event
                        continue
                    if isinstance(event, ApiRetry | ApiUnreachable):
                        waiting = event.message
                    counts[event.type] = counts.get(event.type, 0) + 1
                    if isinstance(event, ErrorEvent) and not event.restart:
                        self._turn_open = False
                        self._turn_done(None, "lost", error=event.error or "container_lost")
                        await self._release_hold()
                        raise ContainerLost(event.message or f"session {self.id}: {event.error}")
                    if (isinstance(event, ErrorEvent) and self._turn_open
                            and event.raw.get("turn_lost") is not False):
                        # (a CLI that died before it took this turn's prompt loses nothing:
                        # the restarted one gets the prompt)
                        self._turn_open = False
                        self._turn_done(None, "cli_died", error=event.error or "cli_exited")
                        await self._release_hold()
                        raise CLIDied(
                            f"the CLI of session {self.id!r} died mid-turn and was restarted; "
                            f"the turn was lost: {event.message}",
                            exit_code=event.exit_code, reason=event.reason)
                    if isinstance(event, Result):
                        # before the yield: a consumer that stops at the Result never
                        # resumes this generator
                        self._turn_open = False
                        if event.session_id:
                            self.claude_session_id = event.session_id
                        self._turn_done(event, "ok" if event.ok else "interrupted"
                                        if event.interrupted else "error")
                        await self._record_cost(event)
                        yield event
                        return
                    yield event
        finally:
            if gated:
                gate.release(self.id)
            deadline.cancel()
            if deltas:
                counts["text_delta"] = deltas
            metrics.on_events(self.agent, counts)
            # (not kept for the next turn: an idle subscription would pile up whatever is
            # published meanwhile, for the next reader to wade through)
            await stream.aclose()

    def _turn_done(self, result: Result | None, outcome: str, *, error: str = "") -> None:
        """The turn ended (a result, a loss, a timeout): its metrics and spans."""
        seconds = None if self._turn_t0 is None else time.perf_counter() - self._turn_t0
        self._turn_t0 = None
        if error:
            metrics.on_error(metrics.runner_error(error))
        elif outcome == "timeout":
            metrics.on_error("timeout")
        elif result is not None and not result.ok and not result.interrupted:
            metrics.on_error(metrics.result_error(result.subtype))
        metrics.on_turn(self.agent, seconds, outcome,
                        cost_usd=result.cost_usd if result is not None else None,
                        usage=result.usage if result is not None else None)
        self._end_trace(result=result, outcome=outcome)

    def _end_trace(self, *, result: Result | None = None, outcome: str = "ok") -> None:
        trace, self._trace = self._trace, None
        if trace is None:
            return
        attrs: dict[str, Any] = {}
        if result is not None:
            attrs = {"dockercc.cost_usd": result.cost_usd, "dockercc.subtype": result.subtype,
                     "dockercc.num_turns": result.num_turns, "dockercc.model": result.model}
        with contextlib.suppress(Exception):  # tracing never breaks a turn
            trace.end(result_ts_ms=result.ts if result is not None else 0, outcome=outcome,
                      attributes=attrs)

    async def _dispatch(self, event: Event) -> None:
        for cb in (self.on_event, self.pool.on_event):
            if cb is None:
                continue
            try:
                res = cb(event)
                if asyncio.iscoroutine(res):
                    await res
            except Exception:
                log.exception("on_event callback failed", extra={"session": self.id})

    async def stream(self, prompt: str | list[dict[str, Any]], *,
                     timeout: float | None = None) -> AsyncIterator[Event]:
        """Send ``prompt`` and yield the turn's events, ending with its :class:`Result`."""
        await self.send(prompt)
        async for event in self.receive(timeout=timeout):
            yield event

    async def ask(self, prompt: str | list[dict[str, Any]], *, timeout: float | None = None,
                  check: bool = True) -> Result:
        """Send ``prompt`` and return the turn's :class:`Result` (see :func:`ask_turn`)."""
        return await ask_turn(self.stream(prompt, timeout=timeout), self.id, self.options,
                              check=check)

    async def interrupt(self) -> None:
        """Stop the current turn; the session stays usable."""
        if self.lease is not None:
            await self.pool.transport.send_control(self.id, "interrupt",
                                                   request_id=control.new_request_id())

    async def set_model(self, model: str | None) -> None:
        """Change the model from the next turn on (``None``: the agent's / CLI's default);
        queued after any prompt already sent, so it applies in order."""
        if model is not None and (not isinstance(model, str) or not model):
            raise OptionsError("model", f"expected a non-empty string or None, got {model!r}")
        await self._control_line("set_model", model=model)
        self.options.model = model  # a new container's CLI starts with it

    async def set_permission_mode(self, mode: str) -> None:
        """Change the CLI's permission mode from the next tool call on."""
        from ..types import PERMISSION_MODES

        if mode not in PERMISSION_MODES:
            raise OptionsError("permission_mode", f"unknown mode {mode!r}", mode)
        await self._control_line("set_permission_mode", mode=mode)
        self.options.permission_mode = mode

    async def _control_line(self, subtype: str, **fields: Any) -> None:
        # through the input list, not the control channel: it must reach the CLI after the
        # prompts sent before it and before those sent after it
        if self.closed:
            raise SessionClosed(f"session {self.id!r} is closed")
        if self.lease is None:
            return  # no CLI yet: the options are its arguments when it starts
        with redis_errors_as_transport_errors(self.pool.transport.url):
            await self.pool.transport.send_input(
                self.id, control.control_request(control.new_request_id(), subtype, **fields))

    async def stop(self, timeout: float = 15, *,
                   on_event: Callable[[Event], object] | None = None) -> Result | None:
        """Interrupt the turn in flight and read it to its end, passing each of its remaining
        events (its :class:`Result` too) to ``on_event`` (which may be async); the session
        stays usable. Returns the turn's Result, or None if no turn was open or it did not
        end (``timeout`` s, a lost container, a failing ``on_event``): what Ctrl-C does in
        the sync facade and in notebooks."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.interrupt(), 10)
        if not self._turn_open:
            return None
        result = None
        with contextlib.suppress(Exception):
            async for event in self.receive(timeout=timeout):
                if on_event is not None:
                    done = on_event(event)
                    if inspect.isawaitable(done):
                        await done
                if isinstance(event, Result):
                    result = event
        return result

    async def drain(self, timeout: float = 10) -> Result | None:
        """Read the current turn to its end (after an interrupt); None if it did not end."""
        if not self._turn_open:
            return None
        result = None
        with contextlib.suppress(TimeoutError, ContainerLost):
            async for event in self.receive(timeout=timeout):
                if isinstance(event, Result):
                    result = event
        return result

    async def close(self, *, forget: bool = False) -> None:
        """Stop the agent and remove its container. The conversation stays resumable
        (``pool.session(resume=id)``) for 7 days unless ``forget``."""
        if self.closed:
            return
        self.closed = True
        self.pool.first_turns.release(self.id)
        self._end_trace(outcome="closed")
        await self._release_hold()
        with contextlib.suppress(Exception):
            await self.pool.builtins.on_session_close(self)  # closes the sessions it spawned
        t = self.pool.transport
        await self._drop_subscription()
        if self._relay is not None:
            self._relay.cancel()
            with contextlib.suppress(BaseException):
                await self._relay
        if self._bridge is not None:
            with contextlib.suppress(Exception):
                await self._bridge.aclose()
        try:
            if self.lease is not None:
                with contextlib.suppress(Exception):
                    # stopping it on purpose: the health monitor must not report a loss (it
                    # would write an error event after the keys below are gone)
                    await self.pool.containers.retiring(self.lease.container)
                    await t.send_control(self.id, "stop")
                    await self._wait_stopped(3.0)
                await self.pool.containers.release(self.lease.container)
                self.lease = None
            await self._refresh_claude_id()
            await t.sessions.unregister(self.id)
            self._check_workspace()
            if forget:
                await self._drop_scratch()
                await t.delete_session(self.id)
                if self.claude_session_id:
                    await t.sessions.forget_claude_id(self.claude_session_id)
                return
            await self.pool.containers.end_session(self.id, self.claude_session_id or "")
        finally:
            self.pool._forget(self)

    async def _drop_scratch(self) -> None:
        """A deleted session's scratch volume goes with it."""
        m = self.workspace_mount
        if m is None or m.kind != "volume" or not m.source.startswith("dockercc-ws-"):
            return
        with contextlib.suppress(Exception):
            await self.pool.containers.backend.remove_volume(m.source)
            await self.pool.transport.sessions.drop_scratch(m.source)

    async def _wait_stopped(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = await self.pool.transport.sessions.state_field(self.id, "status")
            if status in ("stopped", "failed", "lost"):
                return
            await asyncio.sleep(0.02)

    async def __aenter__(self) -> AsyncSession:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def default_prestart(pool: AsyncPool, agent: str = "main") -> dict[str, Any]:
    """The pre-start of ``agent``'s warm containers: a default session's arguments and tools
    (the session object is only built, never started)."""
    return AsyncSession(pool, SessionOptions(agent=agent)).prestart()


class _Deadline:
    """A receive()'s timeout: one timer, which cancels the task only while it waits for the
    next envelope (``asyncio.timeout`` per event costs a timer each, at thousands a second)."""

    def __init__(self, timeout: float | None) -> None:
        self.fired = False
        self._waiting: asyncio.Task[Any] | None = None
        self._timer = (None if timeout is None else
                       asyncio.get_running_loop().call_later(max(0.0, timeout), self._expire))

    def _expire(self) -> None:
        self.fired = True
        if self._waiting is not None:
            self._waiting.cancel()

    async def next(self, stream: AsyncIterator[Envelope]) -> Envelope:
        if self.fired:
            raise TimeoutError
        task = asyncio.current_task()
        self._waiting = task
        try:
            return await anext(stream)
        except asyncio.CancelledError:
            if self.fired and task is not None and task.uncancel() == 0:
                raise TimeoutError from None
            raise
        finally:
            self._waiting = None

    def cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
