"""``python -m dockercc.testing [--port 0]``: serve the scripted Messages API until Ctrl-C.

Prints the URL and the environment to export so a Claude Code CLI (or a notebook using
dockercc) talks to it instead of the real API. Every turn answers ``"echo: <prompt>"``
unless ``--text`` gives a fixed answer.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import threading
from dataclasses import replace
from typing import Any

from .replies import Reply, Responder, echo, text
from .server import ScriptedAPI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m dockercc.testing",
        description="Serve a scripted stand-in for the Anthropic Messages API (offline).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=0, help="port (default 0: a free one)")
    parser.add_argument("--text", default=None, help="answer every turn with this text")
    parser.add_argument(
        "--delay", type=float, default=0.0, help="seconds between streamed words (default 0)"
    )
    args = parser.parse_args(argv)

    delay = float(args.delay)
    default: Reply | Responder
    if args.text is not None:
        default = text(args.text, delay=delay)
    else:

        def slow_echo(body: dict[str, Any]) -> Reply:
            return replace(echo(body), delay=delay)

        default = slow_echo
    api = ScriptedAPI(default=default, host=args.host, port=args.port)

    stop = threading.Event()
    with api:
        print(api.url, flush=True)
        for key, value in api.env().items():
            print(f"export {key}={shlex.quote(value)}", flush=True)
        print("serving; Ctrl-C to stop", file=sys.stderr, flush=True)
        try:
            while not stop.wait(3600):
                pass
        except KeyboardInterrupt:
            print("stopped", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
