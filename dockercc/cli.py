"""The ``dockercc`` command (click + rich).

One click application on purpose (~950 lines): the commands share their options, the config
loading and the output helpers (``_run_async``, ``_print_event``, ``_fail``).

``status`` (health; non-zero when unhealthy), ``run PROMPT`` (through the fallback chain),
``batch INPUT.jsonl --out OUTPUT.jsonl`` (``pool.map`` from a shell, resumable),
``sessions``, ``logs SESSION``, ``interrupt SESSION``, ``gc``, ``serve`` (the gateway with the
health endpoint), ``image build|base`` and ``demo``. ``--config FILE`` (before the command)
picks a configuration file; otherwise the usual discovery and ``DOCKERCC_*`` variables apply.

Exit codes: 0 success, 1 a failure or an unhealthy deployment, 2 bad usage or configuration.
Human output goes to stderr except what a command produces (``run``'s answer, ``--json``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from typing import Any

import click

from . import __version__
from .redaction import terminal_safe
from .storage.values import as_int


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="dockercc")
@click.option("-c", "--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="Configuration file (seed-shaped or standalone dockercc.yaml) "
                   "[default: discovery, see docs/configuration.md]")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """Run Claude Code agents in hardened, pooled Docker containers."""
    ctx.ensure_object(dict)
    ctx.obj["config_path"] = config_path


# -- image ---------------------------------------------------------------------------------


@main.group()
def image() -> None:
    """Build the agent image (and an offline base image)."""


@image.command("build")
@click.option("--tag", default="clawdbot/docker-cc:latest", show_default=True)
@click.option("--base", "base_image", default=None,
              help="Base image [default: $DOCKERCC_BASE_IMAGE, else the one the existing "
              "image was built from, else node:22-bookworm-slim]")
@click.option("--ca-bundle", type=click.Path(exists=True, dir_okay=False), default=None,
              help="PEM bundle for TLS-intercepting proxies [default: $DOCKERCC_CA_BUNDLE, "
              "else the one the existing image was built with]")
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
    from .errors import RedisServerError
    from .events import Result, TextDelta, ToolResult, ToolUse
    from .testing import RedisServer, ScriptedAPI, text, tool_use

    out = Console()
    offline = not (os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("CLAUDE_CODE_OAUTH_TOKEN"))
    notes: list[str] = []

    @tool
    def host_time() -> str:
        """The host's current time (a Python function the agent calls over MCP)."""
        return time.strftime("%Y-%m-%d %H:%M:%S")

    async def run(redis_url: str, api: ScriptedAPI | None) -> None:
        # the product's default: no network, the API through the host's egress proxy
        overrides: dict[str, Any] = {"redis": {"url": redis_url}}
        if image_tag:
            overrides["image"] = image_tag
        if api is not None:
            overrides["credentials"] = {"baseUrl": api.url, "apiKey": "sk-ant-offline-demo"}
        # a throwaway session: its scratch workspace is a tmpfs, nothing outlives the demo
        overrides["docker"] = {"scratchVolumes": False}
        async with AsyncPool(overrides, tools=[host_time]) as pool:
            t0 = time.monotonic()
            async with pool.session(permission_mode="bypassPermissions") as s:
                out.print(f"[dim]session {s.id} in container {s.lease.name if s.lease else '?'}"
                          f" ({time.monotonic() - t0:.2f}s)[/dim]")
                question = prompt or "What time is it on the host, and who am I in here?"
                out.print(f"[bold]> {question}[/bold]")
                async for ev in s.stream(question, timeout=180):
                    if isinstance(ev, TextDelta):
                        out.print(terminal_safe(ev.text), end="", soft_wrap=True,
                                  highlight=False, markup=False)
                    elif isinstance(ev, ToolUse):
                        out.print(f"\n[cyan]tool[/cyan] {_esc(ev.name)} "
                                  f"{_esc(json.dumps(ev.input))}")
                    elif isinstance(ev, ToolResult):
                        out.print(f"[cyan]  ->[/cyan] {_esc(repr(ev.text[:200]))}")
                    elif isinstance(ev, Result):
                        cost = f"${ev.cost_usd:.5f}" if ev.cost_usd is not None else "-"
                        out.print(f"\n[green]done[/green] {ev.subtype}, {ev.duration_ms} ms, "
                                  f"cost {cost}, {ev.num_turns} turns")
                await s.close(forget=True)
        for note in notes:
            out.print(f"[dim]{note}[/dim]")

    with contextlib.ExitStack() as stack:
        redis_url = os.environ.get("REDIS_URL")
        if not redis_url:
            try:
                redis_url = stack.enter_context(RedisServer()).url
            except RedisServerError as exc:
                raise click.ClickException(str(exc)) from None
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


# -- shared helpers ----------------------------------------------------------------------


def _load_config(ctx: click.Context, **overrides: Any) -> Any:
    """The configuration (``--config`` or discovery); exit 2 with every problem if invalid."""
    from .config import load_config
    from .errors import ConfigError

    path = (ctx.find_root().obj or {}).get("config_path")
    try:
        return load_config(path, **overrides)
    except ConfigError as exc:
        _console().print(f"[red]configuration error:[/red] {_esc(exc)}", highlight=False)
        sys.exit(2)
    except OSError as exc:
        _console().print(f"[red]configuration error:[/red] {_esc(exc)}", highlight=False)
        sys.exit(2)


def _float(value: object) -> float:
    try:
        number = float(str(value or 0))
    except ValueError:
        return 0.0
    return number if number == number and abs(number) < 1e12 else 0.0


def _esc(value: object) -> str:
    """``value`` as text that rich prints literally: no markup, and no control characters
    (data from Redis or a container must not drive the terminal: OSC 52, screen clears)."""
    from rich.markup import escape

    return escape(terminal_safe(str(value)))


def _echo_json(text: str) -> None:
    """JSON output, with any control characters in its strings escaped."""
    click.echo(terminal_safe(text, json=True))


def _fail(message: str, code: int = 1) -> None:
    _console().print(f"[red]error:[/red] {_esc(message)}", highlight=False)
    sys.exit(code)


def _session_id(value: str) -> str:
    from .errors import InvalidSessionId
    from .protocol.keys import validate_id

    try:
        return validate_id(value)
    except InvalidSessionId as exc:
        raise click.BadParameter(str(exc)) from None


def _age(ms: int | float | None) -> str:
    if ms is None:
        return "-"
    seconds = ms / 1000
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def _run_async(coro: Any) -> Any:
    """Run a coroutine; dockercc errors become a clean message and exit 1."""
    from .errors import ConfigError, DockerCCError

    try:
        return asyncio.run(coro)
    except ConfigError as exc:
        _fail(str(exc), 2)
    except DockerCCError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        sys.exit(130)


def _print_event(event: Any, out: Any, err: Any) -> None:
    """Render one event: answer text to ``out``, everything else (dim) to ``err``."""
    from .events import (
        ApiRetry,
        ApiUnreachable,
        EgressDenied,
        ErrorEvent,
        Result,
        TextDelta,
        ToolResult,
        ToolUse,
    )

    if isinstance(event, TextDelta):
        if event.parent_tool_use_id is None:
            out.write(terminal_safe(event.text))
            out.flush()
    elif isinstance(event, ToolUse):
        err.print(f"\n[cyan]tool[/cyan] {_esc(event.name)} {_esc(json.dumps(event.input)[:300])}",
                  highlight=False, markup=True)
    elif isinstance(event, ToolResult):
        mark = "[red]error[/red]" if event.is_error else "[cyan]->[/cyan]"
        err.print(f"{mark} {_esc(repr(event.text[:300]))}", highlight=False)
    elif isinstance(event, ErrorEvent):
        err.print(f"[red]{_esc(event.error)}[/red] {_esc(event.message)}", highlight=False)
    elif isinstance(event, ApiRetry | ApiUnreachable):
        err.print(f"[yellow]waiting[/yellow] {_esc(event.message)}", highlight=False)
    elif isinstance(event, EgressDenied):
        err.print(f"[yellow]egress denied[/yellow] {_esc(event.host)}:{event.port} "
                  f"{_esc(event.reason)}", highlight=False)
    elif isinstance(event, Result):
        if not event.text.endswith("\n"):
            out.write("\n")
            out.flush()


# -- status --------------------------------------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the health report as JSON")
@click.option("--timeout", default=5.0, show_default=True, type=click.FloatRange(0.1, 120),
              help="Seconds to wait for Redis and Docker")
@click.pass_context
def status(ctx: click.Context, as_json: bool, timeout: float) -> None:
    """Health: Redis ping, Docker, pool counts, each container's state and heartbeat age.

    Exits 1 when the deployment is not healthy (Redis or Docker down, a stopped container,
    a stale heartbeat, an orphan, ...)."""
    from .health import collect_health

    config = _load_config(ctx)
    report = asyncio.run(collect_health(config, timeout=timeout))
    if as_json:
        _echo_json(report.model_dump_json(indent=2))
    else:
        _print_report(report)
    sys.exit(0 if report.healthy else 1)


def _print_report(report: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console()
    colour = {"ok": "green", "degraded": "yellow", "down": "red"}[report.status]
    out.print(f"dockercc {report.version}: [bold {colour}]{report.status}[/bold {colour}]")

    def line(name: str, check: Any) -> None:
        mark = "[green]ok[/green]" if check.ok else "[red]down[/red]"
        took = f" ({check.latency_ms:.1f} ms)" if check.latency_ms is not None else ""
        out.print(f"  {name:<7}{mark} {_esc(check.detail)}{took}", highlight=False)

    line("redis", report.redis)
    out.print(_esc(f"         {report.redis.url} prefix {report.redis.key_prefix}"),
              highlight=False)
    line("docker", report.docker)
    if report.backend == "local":
        from .pool.local import NOT_ISOLATED

        out.print(f"  backend [red]{_esc(NOT_ISOLATED)}[/red]", highlight=False)
    if report.egress is not None:
        e = report.egress
        what = (f"isolated (network none; proxy allows the API and {len(e.allow)} "
                "egress.allow entries)" if e.isolated else
                f"[yellow]not isolated[/yellow] (network {_esc(e.network)}: open egress, "
                "credentials in the containers)")
        out.print(f"  egress {what}", highlight=False)
    if report.pool is not None:
        p = report.pool
        out.print(f"  pool   {p.total} containers ({p.warm} warm, {p.busy} busy, {p.creating} "
                  f"starting, {p.stopping} stopping), {p.sessions} sessions, {p.waiting} "
                  f"waiting, {p.owners} owner processes; limits {p.limits}"
                  + (f", {p.quarantined} quarantined record(s)" if p.quarantined else ""),
                  highlight=False)
    for b in report.budgets:
        over = b["spent_usd"] >= b["limit_usd"]
        mark = "[red]exceeded[/red]" if over else "[green]ok[/green]"
        out.print(f"  budget {_esc(b['scope'])}: ${b['spent_usd']:.4f} of ${b['limit_usd']:.4f} "
                  f"in {b['window_s']} s {mark}", highlight=False)
    if report.isolation is not None:
        iso = report.isolation
        mark = {True: "[green]isolated[/green]", False: "[red]not isolated[/red]",
                None: "[yellow]unknown[/yellow]"}[iso.isolated]
        out.print(f"  redis  {mark}: {_esc(iso.reason)}", highlight=False)
    if report.containers:
        table = Table(show_edge=False, pad_edge=False)
        for col in ("container", "status", "docker", "agent", "session", "heartbeat", "age",
                    "problem"):
            table.add_column(col, overflow="fold")  # names in full, even when narrow
        for c in report.containers:
            table.add_row(_esc(c.name), _esc(c.status), _esc(c.docker_state or "?"),
                          _esc(c.agent or "-"),
                          _esc(c.session or "-"), _age(c.heartbeat_age_ms), _age(c.age_ms),
                          f"[red]{_esc(c.problem)}[/red]" if c.problem else "")
        out.print(table)
    for problem in report.problems:
        out.print(f"  [red]problem:[/red] {_esc(problem)}", highlight=False)


# -- run -----------------------------------------------------------------------------------


@main.command()
@click.argument("prompt")
@click.option("--agent", default="main", show_default=True, help="Configured agent to run as")
@click.option("--provider", "providers", multiple=True, metavar="PROVIDER/MODEL",
              help="Chain entry to use instead of model.primary/fallbacks (repeat for a chain)")
@click.option("--permission-mode", default=None, help="CLI permission mode for this run")
@click.option("--system-prompt", default=None)
@click.option("--workspace", type=click.Path(file_okay=False, exists=True), default=None,
              help="Directory mounted as /workspace (the local CLI's working directory)")
@click.option("--timeout", type=click.FloatRange(min=1), default=None,
              help="Seconds to wait for the answer")
@click.option("--json", "as_json", is_flag=True, help="Print every event as a JSON line")
@click.pass_context
def run(ctx: click.Context, prompt: str, agent: str, providers: tuple[str, ...],
        permission_mode: str | None, system_prompt: str | None, workspace: str | None,
        timeout: float | None, as_json: bool) -> None:
    """Ask PROMPT ('-' reads stdin) and stream the answer to the terminal.

    Goes through the fallback chain (model.primary, then model.fallbacks): the footer says
    which provider answered and why others were passed over. Exits 1 if the turn failed."""
    from .config import PERMISSION_MODES
    from .events import Result

    if prompt == "-":
        prompt = sys.stdin.read()
    if not prompt.strip():
        raise click.BadParameter("the prompt is empty", param_hint="PROMPT")
    if permission_mode is not None and permission_mode not in PERMISSION_MODES:
        raise click.BadParameter(f"use one of {', '.join(PERMISSION_MODES)}",
                                 param_hint="--permission-mode")
    config = _load_config(ctx)
    err = _console()
    # the footer reports every provider passed over; no log lines for the same
    logging.getLogger("dockercc.providers").setLevel(logging.ERROR)

    async def go() -> Result | None:
        from .providers import ProviderChain

        result: Result | None = None
        async with ProviderChain(config, refs=list(providers) or None) as chain:
            async with chain.session(agent, permission_mode=permission_mode,
                                     system_prompt=system_prompt,
                                     workspace=str(workspace) if workspace else None) as s:
                async for event in s.stream(prompt, timeout=timeout):
                    if as_json:
                        _echo_json(event.model_dump_json())
                    else:
                        _print_event(event, sys.stdout, err)
                    if isinstance(event, Result):
                        result = event
        return result

    result = _run_async(go())
    if result is None:
        _fail("the turn ended without a result")
        return
    for name, why in result.fallback_reasons.items():
        err.print(f"[yellow]passed over[/yellow] {_esc(name)}: {_esc(why)}", highlight=False)
    cost = f", ${result.cost_usd:.5f}" if result.cost_usd is not None else ""
    err.print(f"[dim]{_esc(result.provider)}: {_esc(result.subtype)}, {result.duration_ms} ms"
              f"{cost}[/dim]",
              highlight=False)
    sys.exit(0 if result.ok else 1)


# -- batch ---------------------------------------------------------------------------------


def _read_batch_input(path: str, template: str | None) -> tuple[list[Any], list[Any]]:
    """The items of a JSONL input (and each line's ``id``); exit 2 naming a bad line."""
    items: list[Any] = []
    ids: list[Any] = []
    opener = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    with opener as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except ValueError as exc:
                _fail(f"{path} line {n}: not JSON ({exc})", 2)
            if isinstance(value, str):
                items.append(value)
                ids.append(None)
                continue
            if not isinstance(value, dict):
                _fail(f"{path} line {n}: expected a JSON string or object, got "
                      f"{type(value).__name__}", 2)
            ids.append(value.get("id"))
            options = value.get("options")
            if "prompt" in value:
                prompt: Any = value["prompt"]
            elif template is not None:
                prompt = value.get("fields", {k: v for k, v in value.items()
                                              if k not in ("id", "options")})
            else:
                _fail(f"{path} line {n}: an object needs \"prompt\" (or pass --template to "
                      "fill from its fields)", 2)
            items.append((prompt, options) if options is not None else prompt)
    return items, ids


def _done_in_output(path: str) -> dict[int, str]:
    """Items an earlier run already wrote to OUTPUT with status ok: index -> item hash."""
    done: dict[int, str] = {}
    if not os.path.exists(path):
        return done
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # (a line cut by a crash: that item runs again)
            if isinstance(rec, dict) and isinstance(rec.get("index"), int):
                if rec.get("status") == "ok":
                    done[rec["index"]] = str(rec.get("item_hash") or "")
                else:
                    done.pop(rec["index"], None)
    return done


@main.command()
@click.argument("input_path", metavar="INPUT.jsonl")
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="JSONL file the results are appended to as they finish (resumable)")
@click.option("--agent", default="main", show_default=True, help="Configured agent to run as")
@click.option("--template", default=None,
              help="Prompt template filled from each object's fields, e.g. 'Classify: {text}'")
@click.option("--concurrency", type=int, default=None,
              help="Items at once [default: min(pool.maxTotal, pool.maxPerAgent)]")
@click.option("--retries", type=int, default=2, show_default=True,
              help="More tries of an item after a transient failure")
@click.option("--budget-usd", type=float, default=None, help="Stop new items past this cost")
@click.option("--name", default=None,
              help="Also keep finished items in Redis under this run name (docs/experiments.md)")
@click.option("--timeout", type=click.FloatRange(min=1), default=600, show_default=True,
              help="Seconds per try of one item")
@click.option("--json-schema", "schema_path", type=click.Path(exists=True, dir_okay=False),
              default=None, help="JSON schema file: structured output for every item")
@click.option("--progress/--no-progress", default=True, help="A progress bar on stderr")
@click.option("--reuse/--no-reuse", default=True, show_default=True,
              help="A session per worker, a new conversation per item (--no-reuse: a new "
              "session, i.e. container, per item)")
@click.pass_context
def batch(ctx: click.Context, input_path: str, out_path: str, agent: str,
          template: str | None, concurrency: int | None, retries: int,
          budget_usd: float | None, name: str | None, timeout: float,
          schema_path: str | None, progress: bool, reuse: bool) -> None:
    """Run every item of INPUT.jsonl ('-' for stdin), each in a fresh conversation.

    A line is a JSON string (the prompt) or an object: {"prompt": ..., "id": ...,
    "options": {ClaudeAgentOptions fields}}, or with --template its fields. Each result is
    appended to --out as one JSON line when it finishes (index, id, status, text,
    structured_output, cost_usd, tokens, duration_ms, session_id, error, ...). Run the same
    command again after a crash: items already in --out with status "ok" (and the same
    input) are not run again. Exits 0 when every item is ok, 1 otherwise, 2 on bad input."""
    from .batch import start_map
    from .client import AsyncPool
    from .errors import ConfigError, InvalidPrompt, InvalidSessionId
    from .types import ClaudeAgentOptions

    items, ids = _read_batch_input(input_path, template)
    options: Any = None
    if schema_path is not None:
        try:
            schema = json.loads(open(schema_path, encoding="utf-8").read())  # noqa: SIM115
        except ValueError as exc:
            _fail(f"{schema_path}: not JSON ({exc})", 2)
        options = ClaudeAgentOptions(output_format={"type": "json_schema", "schema": schema})
    config = _load_config(ctx)
    done = _done_in_output(out_path)
    err = _console()

    async def go(out: Any) -> tuple[int, int, str | None]:
        pool = AsyncPool(config)
        try:
            run = start_map(pool, items, options=options, agent=agent, template=template,
                            concurrency=concurrency, retries=retries, budget_usd=budget_usd,
                            name=name, timeout=timeout,
                            progress="rich" if progress and sys.stderr.isatty() else False,
                            done=done, reuse=reuse)
        except (ConfigError, InvalidPrompt, InvalidSessionId) as exc:
            await pool.close()
            _fail(str(exc), 2)
            raise
        kept = len(items) - len(run.items)
        if kept:
            err.print(f"[dim]{kept} item(s) already in {_esc(out_path)}: not run again[/dim]",
                      highlight=False)
        bad = 0
        try:
            async for r in run:
                rec = {"id": ids[r.index], **r.to_record()}
                out.write(json.dumps(rec, ensure_ascii=False, default=str) + "\n")
                out.flush()
                bad += not r.ok
        finally:
            await pool.close()
        return len(run.items), bad, run.progress.stopped

    with open(out_path, "a", encoding="utf-8") as out_file:
        ran, bad, stopped = _run_async(go(out_file))
    if stopped:
        err.print(f"[yellow]stopped:[/yellow] {_esc(stopped)}", highlight=False)
    err.print(f"[dim]{ran} item(s) run, {bad} not ok; results in {_esc(out_path)}[/dim]",
              highlight=False)
    sys.exit(1 if bad else 0)


# -- sessions / logs / interrupt ---------------------------------------------------------


@main.command()
@click.option("--json", "as_json", is_flag=True)
@click.pass_context
def sessions(ctx: click.Context, as_json: bool) -> None:
    """Open sessions of every process sharing this pool (the Redis registry)."""
    from .storage.connection import RedisTransport
    from .storage.values import now_ms

    config = _load_config(ctx)

    async def go() -> list[dict[str, Any]]:
        t = RedisTransport(config.redis.url_secret(), config.redis.key_prefix)
        try:
            await t.ping()
            out = []
            for sid, record in (await t.session_records()).items():
                state = await t.state(sid)
                hb = state.get("heartbeat")
                out.append({
                    "id": sid, "agent": record.get("agent", ""), "owner": record.get("owner", ""),
                    "parent": record.get("parent") or None, "created": record.get("created"),
                    "status": state.get("status", "?"), "container": state.get("container"),
                    "heartbeat_age_ms": now_ms() - int(hb) if hb and hb.isdigit()
                    and len(hb) < 20 else None,
                    "turns": as_int(state.get("turns")),
                    "cost_usd": _float(state.get("cost_usd")),
                    "model": state.get("model") or None,
                })
            return out
        finally:
            await t.close()

    rows: list[dict[str, Any]] = _run_async(go())
    if as_json:
        _echo_json(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    if not rows:
        _console().print("no open sessions")
        return
    table = Table(show_edge=False, pad_edge=False)
    for col in ("session", "agent", "status", "heartbeat", "turns", "cost", "owner"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(_esc(r["id"]), _esc(r["agent"]), _esc(r["status"]),
                      _age(r["heartbeat_age_ms"]), str(r["turns"]), f"${r['cost_usd']:.4f}",
                      _esc(r["owner"]))
    Console().print(table)


@main.command()
@click.argument("session")
@click.option("--raw", is_flag=True, help="Print the envelopes as stored (JSON lines)")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new output (Ctrl-C stops)")
@click.option("--container", "container_logs", is_flag=True,
              help="Print the session container's own log (docker logs) instead")
@click.option("--tail", default=200, show_default=True, type=click.IntRange(1),
              help="Lines of the container log (with --container)")
@click.pass_context
def logs(ctx: click.Context, session: str, raw: bool, follow: bool, container_logs: bool,
         tail: int) -> None:
    """A session's output: its buffered events (the seed's output_buffer), rendered."""
    from ._mapper import EventMapper
    from .storage.connection import RedisTransport

    session = _session_id(session)
    config = _load_config(ctx)
    err = _console()

    async def from_docker() -> None:
        from .pool.backend import LABEL, DockerBackend

        t = RedisTransport(config.redis.url_secret(), config.redis.key_prefix)
        backend = DockerBackend(config.docker.base_url)
        try:
            names = [f"{config.docker.container_prefix}{session}"]
            with contextlib.suppress(Exception):
                container = (await t.state(session)).get("container")
                if container:
                    rec, _ = await t.registry.record(container, quarantine=False)
                    if rec is not None:
                        names.insert(0, rec.name)
            for name in names:
                info = await backend.inspect(name)
                # only a container of this pool (by its labels): a name read from Redis may
                # point at any container on the engine
                if info is not None and info.labels.get(f"{LABEL}.prefix") == t.prefix:
                    sys.stdout.write(terminal_safe(await backend.logs(name, tail)))
                    sys.stdout.flush()
                    return
            _fail(f"no container for session {session!r} (looked for {', '.join(names)}); "
                  "a container removes itself when it exits, its log with it: the session's "
                  f"events, a loss and its reason included, are in `dockercc logs {session}`")
        finally:
            await backend.close()
            await t.close()

    async def from_redis() -> None:
        t = RedisTransport(config.redis.url_secret(), config.redis.key_prefix)
        mapper = EventMapper(session)
        try:
            await t.ping()
            buffered = await t.buffered(session)
            state = await t.state(session)
            if not buffered and not state:
                _fail(f"no session {session!r} under the key prefix {t.prefix!r}")
            last = 0
            for env in buffered:
                last = env.seq
                _emit(env, mapper)
            if follow:
                async for env in t.events(session, last):
                    _emit(env, mapper)
        finally:
            await t.close()

    def _emit(env: Any, mapper: EventMapper) -> None:
        if raw:
            _echo_json(json.dumps({"seq": env.seq, "ts": env.ts, "event": env.event},
                                  ensure_ascii=False))
            return
        for event in mapper.map(env):
            _print_event(event, sys.stdout, err)

    _run_async(from_docker() if container_logs else from_redis())


@main.command()
@click.argument("session")
@click.pass_context
def interrupt(ctx: click.Context, session: str) -> None:
    """Stop SESSION's running turn (the session stays usable)."""
    from .protocol import control
    from .storage.connection import RedisTransport

    session = _session_id(session)
    config = _load_config(ctx)

    async def go() -> int:
        t = RedisTransport(config.redis.url_secret(), config.redis.key_prefix)
        try:
            return await t.send_control(session, "interrupt",
                                        request_id=control.new_request_id())
        finally:
            await t.close()

    heard = _run_async(go())
    if not heard:
        _fail(f"no runner is listening for session {session!r} (not running, or another "
              "key prefix?)")
    _console().print(f"interrupt sent to {session} ({heard} runner{'s' if heard != 1 else ''})")


# -- the workspace of a running session: exec, cp ----------------------------------------


def _session_workspace(config: Any, session: str) -> Any:
    """The running container of ``session`` (named ``<containerPrefix><session>``, carrying
    this pool's labels) as a :class:`~dockercc.files.ContainerWorkspace`."""
    import docker

    from .files import ContainerWorkspace
    from .pool.backend import LABEL

    client = docker.from_env(timeout=60)
    found = client.api.containers(filters={
        "name": f"^/{config.docker.container_prefix}{session}$",
        "label": [f"{LABEL}=1", f"{LABEL}.prefix={config.redis.key_prefix}"]})
    if not found:
        _fail(f"no running container for session {session!r} (it has none between a loss "
              "and its next turn; `dockercc sessions` lists them)")
    return ContainerWorkspace(client, found[0]["Id"], user=config.docker.user)


@main.command("exec", context_settings={"ignore_unknown_options": True})
@click.argument("session")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("--timeout", type=click.FloatRange(min=0.1), default=600, show_default=True)
@click.pass_context
def exec_(ctx: click.Context, session: str, command: tuple[str, ...], timeout: float) -> None:
    """Run COMMAND in SESSION's container as the agent, in /workspace:
    `dockercc exec SESSION -- git diff`. Exits with the command's exit code."""
    from .errors import CommandTimeout
    from .files import run_command

    session = _session_id(session)
    config = _load_config(ctx)
    ws = _session_workspace(config, session)

    def show(kind: str, data: bytes) -> None:
        stream = sys.stderr if kind == "stderr" else sys.stdout
        stream.buffer.write(data)
        stream.flush()

    async def go() -> int:
        try:
            res = await run_command(ws, list(command), timeout=timeout, cwd="", env=None,
                                    on_output=show)
        except CommandTimeout as exc:
            _fail(str(exc), 124)
        return res.exit_code

    sys.exit(_run_async(go()))


@main.command()
@click.argument("source")
@click.argument("dest")
@click.pass_context
def cp(ctx: click.Context, source: str, dest: str) -> None:
    """Copy between the host and a session's workspace (files or folders, streamed):
    `dockercc cp SESSION:report.md ./` or `dockercc cp ./data SESSION:data`."""
    from pathlib import Path

    config = _load_config(ctx)
    remote_src = ":" in source and not source.startswith(("/", "."))
    remote_dst = ":" in dest and not dest.startswith(("/", "."))
    if remote_src == remote_dst:
        raise click.UsageError("one side must be SESSION:PATH, the other a host path")
    remote = source if remote_src else dest
    session, _, path = remote.partition(":")
    session = _session_id(session)
    ws = _session_workspace(config, session)

    local = Path(dest)
    if remote_src and local.is_dir():
        local = local / (Path(path).name or "workspace")

    async def go() -> int:
        if remote_src:
            return int(await ws.files.download(path, local))
        return int(await ws.files.upload(source, path or Path(source).name))

    n = _run_async(go())
    _console().print(f"copied {n} bytes", highlight=False)


# -- gc ------------------------------------------------------------------------------------


@main.command()
@click.pass_context
def gc(ctx: click.Context) -> None:
    """Remove what dead processes left: their containers, registry entries and sessions.

    A process that heartbeats the pool is alive; everything of owners that stopped
    heartbeating (killed processes) is removed. Live pools are not touched."""
    from .files import sweep_scratch_volumes
    from .pool.manager import ContainerPool
    from .storage.connection import RedisTransport
    from .storage.values import now_ms

    config = _load_config(ctx)

    async def go() -> tuple[int, int, int, int]:
        t = RedisTransport(config.redis.url_secret(), config.redis.key_prefix)
        pool = ContainerPool(config, t, owner=f"gc-{os.getpid()}")
        try:
            await t.ping()
            await pool.backend.ping()
            before = len(await pool.records())
            removed = await pool.reconcile()
            entries = before - len(await pool.records())
            stale = pool.stale_ms
            owners = await t.registry.owners()
            alive = {o for o, hb in owners.items() if now_ms() - hb <= max(stale, 1000)}
            dropped = 0
            for sid, record in (await t.session_records()).items():
                if record.get("owner", "") not in alive:
                    await t.sessions.unregister(sid)
                    if await t.sessions.exists(sid):
                        await t.sessions.set_state(sid, status="lost")
                    dropped += 1
            volumes = await sweep_scratch_volumes(pool)
            return removed, entries, dropped, volumes
        finally:
            with contextlib.suppress(Exception):
                await pool.backend.close()
            await t.close()

    removed, entries, dropped, volumes = _run_async(go())
    _console().print(f"removed {removed} container{'s' if removed != 1 else ''}, {entries} "
                     f"registry entr{'ies' if entries != 1 else 'y'}, {dropped} session"
                     f"{'s' if dropped != 1 else ''} of dead processes")
    if volumes:
        _console().print(f"removed {volumes} scratch workspace volume"
                         f"{'s' if volumes != 1 else ''} of deleted or expired sessions")


# -- serve ---------------------------------------------------------------------------------


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, envvar="DOCKERCC_GATEWAY_HOST",
              help="Address of the health endpoint [env: DOCKERCC_GATEWAY_HOST]")
@click.option("--port", default=18789, show_default=True, type=click.IntRange(0, 65535),
              envvar="DOCKERCC_GATEWAY_PORT", help="Port [env: DOCKERCC_GATEWAY_PORT]")
@click.option("--warm", type=click.IntRange(0), default=None,
              help="Warm containers to keep (overrides pool.minWarm)")
@click.option("--token", default=None, envvar="DOCKERCC_GATEWAY_TOKEN", show_envvar=True,
              help="Bearer token for the full health report (overrides gateway.token; "
                   "required for a non-loopback --host)")
@click.pass_context
def serve(ctx: click.Context, host: str, port: int, warm: int | None,
          token: str | None) -> None:
    """The gateway: own a pool (warm containers, health checks, scheduled jobs) and serve
    GET /api/docker-cc/health until SIGTERM / Ctrl-C; then remove the pool's containers."""
    from .gateway import HEALTH_PATH, Gateway

    overrides = {"pool": {"minWarm": warm}} if warm is not None else {}
    config = _load_config(ctx, **overrides)
    from .logs import FORMAT_ENV, configure

    # logging.format (or DOCKERCC_LOG_FORMAT, which wins): the gateway's lines, redacted
    configure(os.environ.get(FORMAT_ENV) or config.logging.format, level=config.logging.level,
              process="gateway")
    console = _console()
    status_ctx = console.status(
        f"starting the pool (warming {config.pool.min_warm} container"
        f"{'s' if config.pool.min_warm != 1 else ''})...")

    def started(gw: Gateway) -> None:
        status_ctx.stop()
        console.print(f"dockercc gateway: http://{gw.host}:{gw.port}{HEALTH_PATH} "
                      f"(pool {gw.pool.transport.url}, prefix {config.redis.key_prefix}, "
                      f"minWarm {config.pool.min_warm})", highlight=False)

    async def go() -> None:
        gateway = Gateway(config, host=host, port=port, token=token)
        await gateway.run(on_started=started)

    status_ctx.start()
    try:
        _run_async(go())
    finally:
        status_ctx.stop()
    console.print("dockercc gateway stopped")



if __name__ == "__main__":  # pragma: no cover
    main()
