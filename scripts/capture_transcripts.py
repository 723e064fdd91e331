#!/usr/bin/env python3
"""Capture transcripts of the real, pinned Claude Code CLI for the project's tests.

    python3 scripts/capture_transcripts.py [--out DIR] [--claude PATH] [--only NAME ...]
                                           [--base DIR]

Runs the ``claude`` executable found on PATH (it must report the pinned version) against
:class:`dockercc.testing.ScriptedAPI` on 127.0.0.1 -- offline, no credentials, no traffic
beyond loopback -- in a throwaway HOME and working directory, and writes for each scenario
``X.jsonl`` (the CLI's stdout, byte for byte) and, where the driver wrote to stdin,
``X.stdin.jsonl`` (what it wrote, in order), plus a README, into
``tests/fixtures/claude-code-<version>/``.

What makes the output stable enough to commit: the scripted API answers with fixed message
ids, tool ids, texts and token counts, the driver uses fixed control request ids, and the CLI
runs in a fixed directory (``<tmp>/dockercc-capture/work``) with a fresh config. What stays
volatile, and what tests therefore never compare literally: the CLI's session ids, uuids,
timestamps, durations (``duration_ms``, ``ttft_ms``) and its own control request ids.

Nothing is rewritten except values that would leak the capturing machine (its home
directory, host name, credentials found in its environment: see ``machine_values``), which
become placeholders. The CLI never sees the caller's credentials or config (its environment
is built from scratch), so normally there is nothing to replace.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # this checkout's dockercc, not an installed one

from dockercc.testing import ScriptedAPI  # noqa: E402
from dockercc.testing.replies import Reply, TextBlock, ToolUseBlock, error  # noqa: E402

PINNED = "2.1.328"
STEP_TIMEOUT = 60.0  # seconds for any one expected line; the CLI answers in well under 1 s

MCP_CONFIG = json.dumps({"mcpServers": {"host": {"type": "sdk", "name": "host"}}})
ECHO_TOOL = {
    "name": "echo",
    "description": "Echo text",
    "inputSchema": {
        "type": "object",
        "properties": {"text": {"type": "string"}},
        "required": ["text"],
    },
}
BASH_COMMAND = "echo hi-from-bash && echo $((6 * 7))"


class CaptureError(RuntimeError):
    """A scenario did not go as scripted (the CLI changed, or the machine is not set up)."""


def text_reply(message_id: str, s: str, *, delay: float = 0.0) -> Reply:
    # 12 output tokens, as the real API would report for these short texts; a fixed count
    # keeps the CLI's cost figures identical between captures
    return Reply(blocks=(TextBlock(s),), delay=delay, message_id=message_id, output_tokens=12)


def user_line(content: str) -> dict[str, Any]:
    return {
        "type": "user",
        "message": {"role": "user", "content": content},
        "parent_tool_use_id": None,
        "session_id": "default",
    }


class CLI:
    """One ``claude`` process: stdout read line by line on a thread, stdin recorded."""

    def __init__(self, claude: str, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            [claude, *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=cwd,
        )
        self.stdout: list[bytes] = []
        self.stdin: list[dict[str, Any]] = []
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._stderr = b""
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self.stdout.append(raw)
            try:
                obj = json.loads(raw)
            except ValueError:
                continue
            if isinstance(obj, dict):
                self.lines.put(obj)
        self.lines.put(None)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        self._stderr = self.proc.stderr.read()

    def write(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.stdin.append(obj)
        self.proc.stdin.write(json.dumps(obj).encode() + b"\n")
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def until(
        self, done: Callable[[dict[str, Any]], bool], on_line: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        """Hand every line to ``on_line`` until one satisfies ``done``; return that line."""
        while True:
            try:
                obj = self.lines.get(timeout=STEP_TIMEOUT)
            except queue.Empty:
                raise CaptureError(f"no expected line within {STEP_TIMEOUT}s") from None
            if obj is None:
                raise CaptureError(
                    f"the CLI exited early ({self.wait()}); stderr: {self._stderr[-2000:]!r}"
                )
            on_line(obj)
            if done(obj):
                return obj

    def wait(self, timeout: float = STEP_TIMEOUT) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise CaptureError("the CLI did not exit after its input ended") from None

    def finish(self) -> None:
        """Wait for exit and for the reader to have seen every line."""
        rc = self.wait()
        while (obj := self.lines.get(timeout=STEP_TIMEOUT)) is not None:
            del obj
        if rc != 0:
            raise CaptureError(f"the CLI exited {rc}; stderr: {self._stderr[-2000:]!r}")


def is_result(obj: dict[str, Any]) -> bool:
    return obj.get("type") == "result"


def ignore(obj: dict[str, Any]) -> None:
    del obj


def mcp_host(cli: CLI) -> Callable[[dict[str, Any]], None]:
    """Answer the CLI's ``mcp_message`` control requests like an SDK host with one ``echo``
    tool. Written out by hand (not with dockercc.bridge) so the transcript stays an
    independent reference the bridge is tested against."""

    def on_line(obj: dict[str, Any]) -> None:
        if obj.get("type") != "control_request":
            return
        request = obj.get("request") or {}
        if request.get("subtype") != "mcp_message":
            return
        message = request.get("message") or {}
        method = message.get("method")
        if method == "initialize":
            result: dict[str, Any] = {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "host", "version": "1"},
            }
        elif method == "tools/list":
            result = {"tools": [ECHO_TOOL]}
        elif method == "tools/call":
            said = message["params"]["arguments"]["text"]
            result = {"content": [{"type": "text", "text": f"echo: {said}"}]}
        else:  # notifications (and anything new) are acknowledged
            result = {}
        reply = {"jsonrpc": "2.0", "id": message.get("id"), "result": result}
        cli.write({
            "type": "control_response",
            "response": {
                "subtype": "success",
                "request_id": obj["request_id"],
                "response": {"mcp_response": reply},
            },
        })

    return on_line


# ------------------------------------------------------------------------------ scenarios


class Scenario:
    name: str
    args: list[str]
    replies: list[Reply]
    describe_run: str
    describe_api: str

    def drive(self, cli: CLI) -> None:
        cli.close_stdin()  # with -p the CLI would otherwise wait for piped input to append
        cli.until(is_result, ignore)
        cli.finish()


class TextPartial(Scenario):
    name = "text-partial"
    args = ["-p", "say hi", "--output-format", "stream-json", "--verbose",
            "--include-partial-messages"]
    replies = [text_reply("msg_text_1", "Hello — ünïcode ✓ from the stub.")]
    describe_run = "`-p \"say hi\" --output-format stream-json --verbose --include-partial-messages`"
    describe_api = "one text turn (`msg_text_1`), streamed word by word"


class BashTool(Scenario):
    name = "bash-tool"
    args = ["-p", "run the command", "--output-format", "stream-json", "--verbose",
            "--permission-mode", "bypassPermissions"]
    replies = [
        Reply(
            blocks=(
                TextBlock("Running a command."),
                ToolUseBlock("Bash", {"command": BASH_COMMAND, "description": "say hi"},
                             id="toolu_01"),
            ),
            message_id="msg_bash_1",
            output_tokens=12,
        ),
        text_reply("msg_bash_2", "The command printed hi."),
    ]
    describe_run = "`-p ... --output-format stream-json --verbose --permission-mode bypassPermissions`"
    describe_api = (f"text + `tool_use` Bash `toolu_01` (`{BASH_COMMAND}`) in `msg_bash_1`, then a "
                    "text turn `msg_bash_2`")


class ApiError(Scenario):
    name = "api-error"
    args = ["-p", "trigger an error", "--output-format", "stream-json", "--verbose"]
    replies = [
        error(400, "invalid_request_error", "scripted invalid request"),
        text_reply("msg_err_2", "(end of scenario err)"),
    ]
    describe_run = "`-p ... --output-format stream-json --verbose`"
    describe_api = ("HTTP 400 `invalid_request_error` first, then (if the CLI asks again) a text "
                    "turn `msg_err_2`")


class McpSdkControl(Scenario):
    name = "mcp-sdk-control"
    args = ["--input-format", "stream-json", "--output-format", "stream-json", "--verbose",
            "--permission-mode", "bypassPermissions", "--mcp-config", MCP_CONFIG]
    replies = [
        Reply(blocks=(ToolUseBlock("mcp__host__echo", {"text": "ping"}, id="toolu_02"),),
              message_id="msg_mcp_1", output_tokens=12),
        text_reply("msg_mcp_2", "Tool answered."),
    ]
    describe_run = ("`--input-format stream-json --output-format stream-json --verbose "
                    "--permission-mode bypassPermissions --mcp-config "
                    "'{\"mcpServers\":{\"host\":{\"type\":\"sdk\",\"name\":\"host\"}}}'`")
    describe_api = ("`tool_use` `mcp__host__echo` {\"text\":\"ping\"} (`toolu_02`), then text; the "
                    "driver sent `initialize` (`req_init`) and the user message at once, and answered every `mcp_message` (initialize, "
                    "notifications/initialized, tools/list, tools/call) as it came")

    def drive(self, cli: CLI) -> None:
        host = mcp_host(cli)
        # both at once, as an SDK host does: the CLI queues the message until it is ready,
        # and the stdin transcript does not depend on how fast the CLI answered
        cli.write({"type": "control_request", "request_id": "req_init",
                   "request": {"subtype": "initialize", "hooks": None}})
        cli.write(user_line("use the echo tool"))
        cli.until(is_result, host)
        cli.close_stdin()
        cli.finish()


class InterruptMultiturn(Scenario):
    name = "interrupt-multiturn"
    args = ["--input-format", "stream-json", "--output-format", "stream-json", "--verbose",
            "--include-partial-messages"]
    replies = [
        # slow enough that the interrupt lands long before the fourth word
        text_reply("msg_slow_1", "one two three four five six seven eight", delay=0.5),
        text_reply("msg_slow_2", "(end of scenario slow)"),
    ]
    describe_run = ("`--input-format stream-json --output-format stream-json --verbose "
                    "--include-partial-messages`")
    describe_api = ("a slow text turn `msg_slow_1` (0.5 s per word) interrupted after 3 deltas "
                    "with `control_request` interrupt `req_int_1`; once its result is out, a "
                    "second user turn (`msg_slow_2`) in the same process")

    def drive(self, cli: CLI) -> None:
        cli.write(user_line("count slowly"))
        deltas = 0

        def third_delta(obj: dict[str, Any]) -> bool:
            nonlocal deltas
            event = obj.get("event") or {}
            if obj.get("type") == "stream_event" and event.get("type") == "content_block_delta":
                deltas += 1
            return deltas == 3

        cli.until(third_delta, ignore)
        cli.write({"type": "control_request", "request_id": "req_int_1",
                   "request": {"subtype": "interrupt"}})
        first = cli.until(is_result, ignore)
        if first.get("subtype") != "error_during_execution":
            raise CaptureError(f"the interrupted turn ended {first.get('subtype')!r}")
        cli.write(user_line("second turn"))
        cli.until(is_result, ignore)
        cli.close_stdin()
        cli.finish()


SCENARIOS: list[Scenario] = [TextPartial(), BashTool(), ApiError(), McpSdkControl(),
                             InterruptMultiturn()]


# ------------------------------------------------------------------------------ running


def scrub(data: bytes, secrets: dict[str, str]) -> bytes:
    """Replace machine-specific values that must not be committed with placeholders."""
    for value, placeholder in secrets.items():
        if value:
            data = data.replace(value.encode(), placeholder.encode())
    return data


def machine_values(home: Path) -> dict[str, str]:
    """Values of the capturing machine that have no business in a committed transcript."""
    values = {str(Path.home()): "/home/capture"}
    host = socket.gethostname()
    if len(host) >= 4:  # a short name would match inside ordinary words
        values[host] = "capture-host"
    for name in ("ANTHROPIC_API_KEY", "CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_AUTH_TOKEN"):
        if os.environ.get(name):
            values[os.environ[name]] = "<redacted>"
    values.pop(str(home), None)
    return values


def cli_env(api: ScriptedAPI, home: Path) -> dict[str, str]:
    # only what the CLI needs: nothing of the caller's credentials or config leaks in
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TERM": "dumb",
        "DISABLE_AUTOUPDATER": "1",
        **api.env(),
    }
    if os.geteuid() == 0:
        # the CLI refuses bypassPermissions as root outside a sandbox; this run is one
        env["IS_SANDBOX"] = "1"
    return env


def check_version(claude: str) -> None:
    out = subprocess.run([claude, "--version"], capture_output=True, text=True, timeout=60)
    if not out.stdout.startswith(PINNED + " "):
        raise CaptureError(f"{claude} is {out.stdout.strip()!r}, not the pinned {PINNED}")


def run(scenario: Scenario, claude: str, base: Path, out: Path) -> None:
    home, work = base / "home", base / "work"
    for d in (home, work):
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
    with ScriptedAPI(*scenario.replies) as api:
        cli = CLI(claude, scenario.args, cli_env(api, home), work)
        try:
            scenario.drive(cli)
        finally:
            if cli.proc.poll() is None:
                cli.proc.kill()
                cli.proc.wait()
        if api.pending:
            raise CaptureError(f"{scenario.name}: {api.pending} scripted replies unused")
    values = machine_values(home)
    (out / f"{scenario.name}.jsonl").write_bytes(scrub(b"".join(cli.stdout), values))
    stdin_path = out / f"{scenario.name}.stdin.jsonl"
    if cli.stdin:
        stdin_path.write_text("".join(json.dumps(o) + "\n" for o in cli.stdin))
    else:
        stdin_path.unlink(missing_ok=True)


README = """\
# Real Claude Code CLI {version} transcripts

Captured by `python3 scripts/capture_transcripts.py` (run it again to refresh them): the
pinned `@anthropic-ai/claude-code@{version}` executable on the host, run as uid {uid} in a
fresh HOME and working directory (`{work}`), pointed with `ANTHROPIC_BASE_URL` at
`dockercc.testing.ScriptedAPI` on 127.0.0.1 (`ANTHROPIC_API_KEY` a dummy,
`CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`): fully offline.

`X.jsonl` is the CLI's stdout, one message a line, unchanged except that values of the
capturing machine (its home directory, host name, any credential in its environment) would be
replaced by placeholders; `X.stdin.jsonl`, where present, is what the driver wrote to its
stdin, in order. Message ids, tool ids, texts, token counts and the driver's request ids are
fixed by the script; the CLI's session ids, uuids, timestamps, durations and its own request
ids change with every capture, so tests never compare them literally.

| file | how the CLI was run | what the scripted API returned |
|---|---|---|
{rows}
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path,
                        default=ROOT / "tests" / "fixtures" / f"claude-code-{PINNED}")
    parser.add_argument("--claude", default=shutil.which("claude") or "claude")
    parser.add_argument("--only", nargs="*", default=None, help="scenario names to capture")
    parser.add_argument("--base", type=Path,
                        default=Path(tempfile.gettempdir()) / "dockercc-capture",
                        help="throwaway directory for the CLI's HOME and working directory "
                             "(emptied; keep the name dockercc-capture: tests check the cwd)")
    args = parser.parse_args(argv)
    try:
        check_version(args.claude)
        args.out.mkdir(parents=True, exist_ok=True)
        base = args.base.resolve()
        chosen = [s for s in SCENARIOS if args.only is None or s.name in args.only]
        if not chosen:
            raise CaptureError(f"no scenario named {args.only}")
        try:
            for scenario in chosen:
                started = time.monotonic()
                run(scenario, args.claude, base, args.out)
                print(f"{scenario.name}: {time.monotonic() - started:.1f}s")
        finally:
            shutil.rmtree(base, ignore_errors=True)
        rows = "\n".join(
            f"| {s.name}.jsonl{' (+ .stdin)' if (args.out / f'{s.name}.stdin.jsonl').exists() else ''}"
            f" | {s.describe_run} | {s.describe_api} |" for s in SCENARIOS)
        if args.only is None:
            (args.out / "README.md").write_text(
                README.format(version=PINNED, uid=os.geteuid(), work=base / "work", rows=rows))
    except (CaptureError, OSError, subprocess.SubprocessError) as exc:
        print(f"capture failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
