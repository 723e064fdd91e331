"""``python -m benchmarks.egress``: what the egress proxy costs per API request.

One streaming ``POST /v1/messages`` (a short streamed reply from an instant asyncio stand-in
of the Messages API on the loopback: the runner's warm-up API, whose sockets have
``TCP_NODELAY``, unlike ``http.server``'s, so the figures are about the proxy and not about
delayed ACKs) timed to its last byte, three ways:

* ``direct``: the client talks to the API itself (kept-alive connection), as a container
  with a network and the credential inside would;
* ``proxy``: through :class:`dockercc.egress.EgressProxy`'s unix socket (credential added on
  the host; one request per client connection, the API leg kept alive);
* ``forwarder+proxy``: through the runner's loopback forwarder too, the full path of a
  container on the ``none`` network (TCP loopback -> unix socket -> proxy -> API).

Reports the median and p90 of each and the median extra latency over ``direct``. Everything
stays on loopback and unix sockets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from dockercc.agent.forwarder import Forwarder, bind
from dockercc.agent.warmup import WarmupAPI
from dockercc.egress import EgressPolicy, EgressProxy, Upstream
from dockercc.egress.proxy import SOCKET_NAME

BODY = json.dumps({"model": "claude-bench", "max_tokens": 16, "stream": True,
                   "messages": [{"role": "user", "content": "hi"}]}).encode()
HEADERS = {"content-type": "application/json", "x-api-key": "placeholder",
           "anthropic-version": "2023-06-01"}


async def timed(client: httpx.AsyncClient, url: str, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        async with client.stream("POST", url, content=BODY, headers=HEADERS) as r:
            async for _chunk in r.aiter_raw():
                pass
            assert r.status_code == 200, r.status_code
        out.append((time.perf_counter() - t0) * 1000)
    return out


async def run(n: int, warmup: int) -> dict[str, dict[str, float]]:
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with WarmupAPI() as api, EgressProxy(runtime_dir=Path(tmp), trust_env=False) as proxy:
            directory = await proxy.add("bench", EgressPolicy([]),
                                        Upstream(api.url, api_key="sk-ant-bench"))
            sock = bind(0)
            port = sock.getsockname()[1]
            forwarder = await Forwarder(str(directory / SOCKET_NAME), sock=sock).start()
            try:
                ways = {
                    "direct": (httpx.AsyncClient(trust_env=False), api.url),
                    "proxy": (httpx.AsyncClient(trust_env=False, transport=httpx.AsyncHTTPTransport(
                        uds=str(directory / SOCKET_NAME))), "http://127.0.0.1:3128"),
                    "forwarder+proxy": (httpx.AsyncClient(trust_env=False),
                                        f"http://127.0.0.1:{port}"),
                }
                for name, (client, base) in ways.items():
                    async with client:
                        await timed(client, base + "/v1/messages?beta=true", warmup)
                        results[name] = await timed(client, base + "/v1/messages?beta=true", n)
            finally:
                await forwarder.close()
    direct = statistics.median(results["direct"])
    return {name: {"median_ms": round(statistics.median(v), 3),
                   "p90_ms": round(sorted(v)[int(len(v) * 0.9)], 3),
                   "extra_median_ms": round(statistics.median(v) - direct, 3)}
            for name, v in results.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    figures = asyncio.run(run(args.requests, args.warmup))
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"{'path':<18}{'median ms':>10}{'p90 ms':>10}{'extra ms':>10}  ({args.requests} requests)")
    for name, f in figures.items():
        print(f"{name:<18}{f['median_ms']:>10.2f}{f['p90_ms']:>10.2f}{f['extra_median_ms']:>10.2f}")


if __name__ == "__main__":
    main()
