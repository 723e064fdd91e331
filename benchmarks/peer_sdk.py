"""One claude-agent-sdk ``query()`` against the local CLI; prints its timings as JSON.

Run by the benchmark in a child process whose environment is already clean (no real
credentials, HOME a scratch directory, ANTHROPIC_BASE_URL the scripted API), because the SDK
hands the CLI the whole process environment. The clock starts right before ``query()``, so
Python's start-up and the SDK's import are not counted against it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time


async def one(prompt: str, cli: str, cwd: str) -> dict[str, float]:
    from claude_agent_sdk import ClaudeAgentOptions, query
    from claude_agent_sdk.types import ResultMessage, StreamEvent

    options = ClaudeAgentOptions(cli_path=cli, cwd=cwd, include_partial_messages=True)
    t0 = time.perf_counter()
    first = None
    async for message in query(prompt=prompt, options=options):
        if first is None and isinstance(message, StreamEvent):
            event = message.event
            if event.get("type") == "content_block_delta" and \
                    (event.get("delta") or {}).get("type") == "text_delta":
                first = time.perf_counter()
        if isinstance(message, ResultMessage):
            break
    end = time.perf_counter()
    if first is None:
        raise SystemExit("query() streamed no text delta")
    return {"first_token_ms": (first - t0) * 1000, "total_ms": (end - t0) * 1000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompt", required=True)
    parser.add_argument("--cli", required=True)
    parser.add_argument("--cwd", required=True)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(one(args.prompt, args.cli, args.cwd))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
