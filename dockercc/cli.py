"""The ``dockercc`` command (click + rich): image builds, the offline demo, status, gc."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

import click

from . import __version__


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dockercc")
def main() -> None:
    """Run Claude Code agents in hardened, pooled Docker containers."""


# -- image ---------------------------------------------------------------------------------


@main.group()
def image() -> None:
    """Build the agent image (and an offline base image)."""


@image.command("build")
@click.option("--tag", default="clawdbot/docker-cc:latest", show_default=True)
@click.option("--base", "base_image", default=None,
              help="Base image [default: $DOCKERCC_BASE_IMAGE or node:22-bookworm-slim]")
@click.option("--ca-bundle", type=click.Path(exists=True, dir_okay=False), default=None,
              help="PEM bundle for TLS-intercepting proxies [default: $DOCKERCC_CA_BUNDLE]")
@click.option("--claude-version", default=None, help="Claude Code CLI version to pin")
@click.option("--force", is_flag=True, help="Rebuild even if the content hash matches")
def image_build(tag: str, base_image: str | None, ca_bundle: str | None,
                claude_version: str | None, force: bool) -> None:
    """Build the agent image; skipped when an identical one exists (content hash)."""
    from .errors import ImageError
    from .image import CLAUDE_CODE_VERSION, build_image

    console = _console()
    with console.status("building the agent image...") as status:
        def progress(msg: str) -> None:
            status.update(msg[:100])
            if msg.startswith(("Step ", "built", "building", "downloading")) or "up to date" in msg:
                console.print(f"[dim]{msg}[/dim]")
        try:
            digest = build_image(tag, base_image=base_image, ca_bundle=ca_bundle,
                                 claude_version=claude_version or CLAUDE_CODE_VERSION,
                                 force=force, progress=progress)
        except ImageError as exc:
            console.print(f"[red]error:[/red] {exc}")
            sys.exit(1)
    console.print(f"[green]{tag}[/green] {digest[:12]}")


@image.command("base")
@click.option("--tag", default="dockercc/debian-base:bookworm", show_default=True)
@click.option("--suite", default="bookworm", show_default=True)
@click.option("--mirror", default=None, help="Debian mirror [default: apt's own]")
@click.option("--force", is_flag=True)
def image_base(tag: str, suite: str, mirror: str | None, force: bool) -> None:
    """Build an offline Debian base image (debootstrap + docker import; needs root)."""
    from .errors import ImageError
    from .image import build_base_image

    console = _console()
    with console.status("debootstrap...") as status:
        try:
            build_base_image(tag, suite=suite, mirror=mirror, force=force,
                             progress=lambda m: status.update(m[:100]))
        except ImageError as exc:
            console.print(f"[red]error:[/red] {exc}")
            sys.exit(1)
    console.print(f"[green]{tag}[/green]")


# -- demo ----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def embedded_redis() -> Iterator[str]:
    """A throwaway redis-server on a random loopback port."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise click.ClickException("redis-server is not installed (apt-get install redis-server)"
                                   " and REDIS_URL is not set")
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="dockercc-redis-") as tmp:
        proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                 "--appendonly", "no", "--dir", tmp],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                    break
                time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(10)


@main.command()
@click.option("--prompt", default=None, help="What to ask (default: a scripted tour)")
@click.option("--image", "image_tag", default=None, help="Agent image")
def demo(prompt: str | None, image_tag: str | None) -> None:
    """Stream a reply from an agent in a container, with a host tool call.

    Starts its own Redis (unless REDIS_URL is set) and, without Anthropic credentials, the
    offline scripted Messages API, so it works on a fresh machine with only Docker.
    """
    from rich.console import Console

    from .bridge import tool
    from .client import AsyncPool
    from .events import Result, TextDelta, ToolResult, ToolUse
    from .testing import ScriptedAPI, text, tool_use

    out = Console()
    offline = not (os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("CLAUDE_CODE_OAUTH_TOKEN"))
    notes: list[str] = []

    @tool
    def host_time() -> str:
        """The host's current time (a Python function the agent calls over MCP)."""
        return time.strftime("%Y-%m-%d %H:%M:%S")

    async def run(redis_url: str, api: ScriptedAPI | None) -> None:
        overrides: dict[str, Any] = {"redis": {"url": redis_url}, "docker": {"network": "host"}}
        if image_tag:
            overrides["image"] = image_tag
        if api is not None:
            overrides["credentials"] = {"baseUrl": api.url, "apiKey": "sk-ant-offline-demo"}
        async with AsyncPool(overrides, tools=[host_time]) as pool:
            t0 = time.monotonic()
            async with pool.session(permission_mode="bypassPermissions") as s:
                out.print(f"[dim]session {s.id} in container {s.lease.name if s.lease else '?'}"
                          f" ({time.monotonic() - t0:.2f}s)[/dim]")
                question = prompt or "What time is it on the host, and who am I in here?"
                out.print(f"[bold]> {question}[/bold]")
                async for ev in s.stream(question, timeout=180):
                    if isinstance(ev, TextDelta):
                        out.print(ev.text, end="", soft_wrap=True, highlight=False)
                    elif isinstance(ev, ToolUse):
                        out.print(f"\n[cyan]tool[/cyan] {ev.name} {json.dumps(ev.input)}")
                    elif isinstance(ev, ToolResult):
                        out.print(f"[cyan]  ->[/cyan] {ev.text[:200]!r}")
                    elif isinstance(ev, Result):
                        cost = f"${ev.cost_usd:.5f}" if ev.cost_usd is not None else "-"
                        out.print(f"\n[green]done[/green] {ev.subtype}, {ev.duration_ms} ms, "
                                  f"cost {cost}, {ev.num_turns} turns")
                await s.close(forget=True)
        for note in notes:
            out.print(f"[dim]{note}[/dim]")

    with contextlib.ExitStack() as stack:
        redis_url = os.environ.get("REDIS_URL") or stack.enter_context(embedded_redis())
        api = None
        if offline:
            api = stack.enter_context(ScriptedAPI())
            api.script(
                text("Let me check the host's clock. ") + tool_use("mcp__host__host_time", {}),
                tool_use("Bash", {"command": "id -un; id -u"}),
            )
            api.set_default(lambda body: text(
                "The host tool answered and Bash ran inside the sandbox as a non-root user. "
                "This reply came from the offline scripted API; set ANTHROPIC_API_KEY or "
                "CLAUDE_CODE_OAUTH_TOKEN to talk to Claude."))
            notes.append("offline: replies scripted by dockercc.testing.ScriptedAPI")
        asyncio.run(run(redis_url, api))


if __name__ == "__main__":  # pragma: no cover
    main()
