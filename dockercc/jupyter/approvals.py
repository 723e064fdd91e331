"""Approve / Deny in the notebook: the approver of ``%%dockercc`` sessions that run in a mode
that asks (``--permission-mode default``, ``acceptEdits``, ``plan``) without a callback.

The CLI's request comes (through Redis) to dockercc's background loop; the approver shows
it in the turn's stream widget and waits there for the click, which the kernel handles while
the cell runs (the turn is pumped, not blocked on), so the kernel stays responsive.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..types import PermissionResultAllow, PermissionResultDeny, ToolPermissionContext

ASKING_MODES = frozenset({"default", "acceptEdits", "plan"})


class NotebookApprover:
    """``can_use_tool`` for a notebook session; ``widget`` is the running turn's view."""

    def __init__(self) -> None:
        self.widget: Any = None

    async def __call__(self, tool_name: str, tool_input: dict[str, Any],
                       context: ToolPermissionContext) -> Any:
        widget = self.widget
        if widget is None:
            return PermissionResultDeny(
                message="approval needs the widget display (or a can_use_tool callback)")
        loop = asyncio.get_running_loop()
        decided: asyncio.Future[bool] = loop.create_future()

        def decide(approved: bool) -> None:
            def settle() -> None:
                if not decided.done():
                    decided.set_result(approved)
            loop.call_soon_threadsafe(settle)

        widget.ask_approval(tool_name, tool_input, decide)
        if await decided:
            return PermissionResultAllow()
        return PermissionResultDeny(message="denied in the notebook")
