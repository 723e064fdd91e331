"""The peers dockercc is measured against: a running CLI (the floor), ``docker run`` of the CLI
per prompt, and claude-agent-sdk ``query()`` with the local CLI."""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import shutil
import sys
import time
from pathlib import Path

from dockercc.protocol import control

from ._common import PROMPT

BASE_ARGS = ["--input-format", "stream-json", "--output-format", "stream-json", "--verbose",
             "--include-partial-messages"]
LIMIT = 64 * 1024 * 1024
ROOT = str(Path(__file__).resolve().parent.parent)


def is_text_delta(obj: dict[str, object]) -> bool:
    event = obj.get("event")
    return (obj.get("type") == "stream_event" and isinstance(event, dict)
            and event.get("type") == "content_block_delta"
            and (event.get("delta") or {}).get("type") == "text_delta")


def claude_path() -> str:
    found = shutil.which("claude")
    if found is None:
        raise SystemExit("the claude CLI is not on PATH (npm install -g @anthropic-ai/claude-code)")
    return found


class RunningCLI:
    """The CLI on the host, kept running: its next turn is the floor a warm pool aims for."""

    def __init__(self, env: dict[str, str], cwd: str) -> None:
        self.env = env
        self.cwd = cwd
        self.proc: asyncio.subprocess.Process | None = None
        self.timing: dict[str, float] = {}  # the last turn's own time to request (ms)

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            claude_path(), *BASE_ARGS, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.DEVNULL, env=self.env,
            cwd=self.cwd, limit=LIMIT)
        await self._write(control.initialize_request(control.new_request_id()))
        await self._read_until(lambda o: o.get("type") == "control_response")
        await self.turn(PROMPT)  # the process's first turn is not a "next turn"

    async def _write(self, line: str) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()

    async def _read_until(self, done: object) -> dict[str, object]:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            raw = await asyncio.wait_for(self.proc.stdout.readline(), 120)
            if not raw:
                raise RuntimeError("the CLI exited")
            with contextlib.suppress(ValueError):
                obj = json.loads(raw)
                if callable(done) and done(obj):
                    return obj  # type: ignore[no-any-return]

    async def turn(self, prompt: str) -> float:
        """First-token latency of one turn (ms); reads the turn to its result."""
        t0 = time.perf_counter()
        await self._write(control.user_message(prompt))
        await self._read_until(is_text_delta)
        first = (time.perf_counter() - t0) * 1000
        result = await self._read_until(lambda o: o.get("type") == "result")
        if "time_to_request_ms" in result:
            self.timing = {"ttr": float(result["time_to_request_ms"]),  # type: ignore[arg-type]
                           "ttr_cpu": float(result.get("time_to_request_cpu_ms") or "nan")}  # type: ignore[arg-type]
        return first

    async def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def docker_run(image: str, api_url: str, *, cpus: float, memory: str) -> float:
    """``docker run`` of the CLI for one prompt: first-token latency (ms) from the command's
    start. Same image, network, user and limits as dockercc's containers."""
    name = f"dockercc-bench-run-{secrets.token_hex(4)}"
    argv = ["docker", "run", "--rm", "--name", name, "--label", "dockercc.bench=1",
            "--network", "host", "--user", "1000:1000", "--cpus", str(cpus), "--memory", memory,
            "-e", f"ANTHROPIC_BASE_URL={api_url}", "-e", "ANTHROPIC_API_KEY=sk-ant-scripted-bench",
            "-e", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1", image,
            "claude", "-p", PROMPT, "--output-format", "stream-json", "--verbose",
            "--include-partial-messages"]
    t0 = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(*argv, stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.PIPE, limit=LIMIT)
    first = None
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(120):
            while True:
                raw = await proc.stdout.readline()
                if not raw:
                    break
                with contextlib.suppress(ValueError):
                    if first is None and is_text_delta(json.loads(raw)):
                        first = (time.perf_counter() - t0) * 1000
            err = await proc.stderr.read() if proc.stderr else b""
            await proc.wait()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
            rm = await asyncio.create_subprocess_exec(
                "docker", "rm", "-f", name, stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.DEVNULL)
            await rm.wait()
    if first is None:
        raise RuntimeError(f"docker run streamed no text delta: {err.decode(errors='replace')[-500:]}")
    return first


async def sdk_query(env: dict[str, str], cwd: str) -> float:
    """One claude-agent-sdk ``query()`` in a child process (see :mod:`benchmarks.peer_sdk`)."""
    root = ROOT
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "benchmarks.peer_sdk", "--prompt", PROMPT, "--cli", claude_path(),
        "--cwd", cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**env, "PYTHONPATH": root}, cwd=root)
    out, err = await asyncio.wait_for(proc.communicate(), 180)
    if proc.returncode != 0:
        raise RuntimeError(f"claude-agent-sdk query() failed: {err.decode(errors='replace')[-800:]}")
    return float(json.loads(out.decode().strip().splitlines()[-1])["first_token_ms"])


def sdk_available() -> bool:
    try:
        import claude_agent_sdk  # noqa: F401
    except ImportError:
        return False
    return True


async def host_peers(api_url: str, scratch: Path, name: str) -> tuple[RunningCLI, bool,
                                                                      dict[str, str], str]:
    """The host's peers of a section, in ``scratch / name-*``: a started running CLI (the
    floor) and, when claude-agent-sdk is installed, one warm-up ``query()``. Returns
    ``(floor, sdk installed, env, work dir)``; the caller closes the floor."""
    from ._common import clean_env

    home, work = scratch / f"{name}-home", scratch / f"{name}-work"
    home.mkdir(exist_ok=True)
    work.mkdir(exist_ok=True)
    env = clean_env({"ANTHROPIC_BASE_URL": api_url, "ANTHROPIC_API_KEY": "sk-ant-scripted-bench",
                     "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}, str(home))
    floor = RunningCLI(env, str(work))
    await floor.start()
    sdk = sdk_available()
    if sdk:
        await sdk_query(env, str(work))  # warm-up
    return floor, sdk, env, str(work)
