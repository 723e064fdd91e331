"""The ``message`` tool and the channels it delivers to.

A channel is a name the agent writes to. Two kinds:

* **Python channels**: a callback registered in the pool's process, ``pool.channel("alerts",
  handler)``; the handler gets a :class:`ChannelMessage` (sync handlers run on the event
  loop's thread: keep them quick; async handlers are awaited). The notebook display is such a
  callback.
* **Redis channels**: ``tools.message.redisChannels`` in the config, or
  ``pool.channel("events", redis=True)``; the message is PUBLISHed as JSON on
  ``{keyPrefix}channel:<name>`` for any process to SUBSCRIBE to.

An unknown channel is an error result that lists the known ones.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, Field

from ..bridge import Tool
from ..errors import InvalidSessionId
from ..protocol.keys import validate_id
from ._base import BuiltinToolError, ToolContext, builtin, now_ms, to_json

if TYPE_CHECKING:  # pragma: no cover
    from ..storage.connection import RedisTransport

log = logging.getLogger("dockercc.builtins")

__all__ = ["ChannelHandler", "ChannelMessage", "ChannelRegistry", "message_tools"]


class ChannelMessage(BaseModel):
    """One message an agent sent to a channel."""

    channel: str
    text: str
    data: dict[str, Any] | None = None
    session: str | None = Field(None, description="The sending session's id")
    agent: str | None = Field(None, description="The sending session's agent")
    tenant: str | None = Field(None, description="The sending session's tenant (`pool.tenant`): "
                               "a Redis channel's subscribers filter on it")
    ts: int = Field(default_factory=now_ms, description="When it was sent (ms since epoch)")


ChannelHandler = Callable[[ChannelMessage], Awaitable[Any] | Any]


@dataclass
class _Channel:
    name: str
    kind: Literal["python", "redis"]
    handler: ChannelHandler | None = None
    description: str | None = None


class ChannelRegistry:
    """The named channels of one pool: Python callbacks and Redis pub/sub channels."""

    def __init__(self, transport: RedisTransport, redis_channels: Iterable[str] = ()) -> None:
        self.transport = transport
        self._channels: dict[str, _Channel] = {}
        for name in redis_channels:
            self.add(name, redis=True)

    def redis_key(self, name: str) -> str:
        """The Redis pub/sub channel a Redis channel publishes on."""
        return self.transport.channels.name(name)

    def add(self, name: str, handler: ChannelHandler | None = None, *, redis: bool = False,
            description: str | None = None, replace: bool = False) -> None:
        """Register a channel: a Python ``handler``, or (``redis=True``) a Redis channel."""
        try:
            validate_id(name, "channel name")
        except InvalidSessionId as exc:
            raise ValueError(str(exc)) from None
        if (handler is None) == (not redis):
            raise ValueError("a channel is either a Python handler or redis=True (not both)")
        if handler is not None and not callable(handler):
            raise TypeError(f"channel handler must be callable, got {handler!r}")
        if name in self._channels and not replace:
            raise ValueError(f"channel {name!r} is already registered (pass replace=True)")
        self._channels[name] = _Channel(name, "redis" if redis else "python", handler,
                                        description)

    def remove(self, name: str) -> None:
        """Unregister a channel (``KeyError`` if unknown)."""
        del self._channels[name]

    def names(self) -> list[str]:
        return sorted(self._channels)

    def __contains__(self, name: object) -> bool:
        return name in self._channels

    def describe(self) -> list[dict[str, Any]]:
        return [{"name": c.name, "kind": c.kind, "description": c.description}
                for c in sorted(self._channels.values(), key=lambda c: c.name)]

    async def deliver(self, message: ChannelMessage) -> dict[str, Any]:
        """Hand ``message`` to its channel; ``KeyError`` for an unknown channel. What a
        handler raises propagates."""
        channel = self._channels[message.channel]
        if channel.kind == "redis":
            payload = message.model_dump_json()
            receivers = await self.transport.channels.publish(channel.name, payload)
            return {"kind": "redis", "redis_channel": self.redis_key(channel.name),
                    "receivers": int(receivers)}
        assert channel.handler is not None
        result = channel.handler(message)
        if inspect.isawaitable(result):
            result = await result
        out: dict[str, Any] = {"kind": "python"}
        if result is not None:
            try:
                json.dumps(result)
                out["reply"] = result
            except (TypeError, ValueError):
                out["reply"] = str(result)
        return out


def message_tools(ctx: ToolContext) -> list[Tool[..., Any]]:
    me = ctx.session

    async def message(channel: Annotated[str, Field(min_length=1, max_length=128)],
                      text: Annotated[str, Field(min_length=1, max_length=100_000)],
                      data: dict[str, Any] | None = None) -> Any:
        channels: ChannelRegistry = ctx.host.channels
        if channel not in channels:
            known = ", ".join(channels.names()) or "none are registered"
            raise BuiltinToolError(f"unknown channel {channel!r} (known channels: {known})")
        msg = ChannelMessage(channel=channel, text=text, data=data, session=me.id,
                             agent=me.agent, tenant=ctx.host.tenant)
        try:
            out = await channels.deliver(msg)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.info("channel %s failed", channel, exc_info=True)
            raise BuiltinToolError(f"channel {channel!r} could not take the message: "
                                   f"{type(exc).__name__}: {exc}") from None
        return to_json({"delivered": True, "channel": channel, **out})

    names = ctx.host.channels.names()
    known = f" Channels: {', '.join(names)}." if names else ""
    return [builtin(message, name="message", description=(
        "Send a message (text, optional JSON data) to a named channel the user set up: a "
        "Python callback, the notebook display or a Redis pub/sub channel. An unknown channel "
        "is an error that lists the known ones." + known))]
