"""Offline testing helpers: a scripted stand-in for the Anthropic Messages API.

Runs the REAL Claude Code CLI without credentials or network::

    from dockercc.testing import ScriptedAPI, text, tool_use

    with ScriptedAPI() as api:
        api.script(tool_use("Bash", {"command": "echo hi"}), text("done"))
        env = {**os.environ, **api.env()}   # ANTHROPIC_BASE_URL etc.
        ...run `claude -p ...` with env...
        assert "hi" in api.message_requests[1].tool_result_text

Unscripted turns answer ``"echo: <last user text>"`` (:func:`echo`). From a shell:
``python -m dockercc.testing --port 0`` prints the URL and the env to export.

:class:`RedisServer` is a private, throwaway ``redis-server`` (free port, temporary
directory, optional AOF, stop/restart/kill) for tests, benchmarks and ``dockercc demo``.
"""

from .redis_server import RedisServer, free_port
from .replies import (
    APIError,
    Block,
    Chunking,
    Reply,
    ReplyLike,
    Responder,
    TextBlock,
    ThinkingBlock,
    ToolUseBlock,
    echo,
    error,
    last_user_text,
    reply,
    text,
    thinking,
    tool_results,
    tool_use,
)
from .server import DEFAULT_API_KEY, Headers, RecordedRequest, ScriptedAPI

__all__ = [
    "ScriptedAPI",
    "RecordedRequest",
    "Headers",
    "DEFAULT_API_KEY",
    "Reply",
    "ReplyLike",
    "Responder",
    "APIError",
    "Block",
    "Chunking",
    "TextBlock",
    "ThinkingBlock",
    "ToolUseBlock",
    "text",
    "tool_use",
    "thinking",
    "error",
    "reply",
    "echo",
    "last_user_text",
    "tool_results",
    "RedisServer",
    "free_port",
]
