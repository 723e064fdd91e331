"""Network ``none`` plus the host egress proxy, with real containers, the real CLI and the
scripted API (all traffic on loopback and unix sockets):

* the agent's Bash cannot reach anything directly (the container has only ``lo``), reaches a
  host server only through the proxy and only when it is allowed (``127.0.0.1:PORT``), and
  every refusal arrives as an :class:`~dockercc.events.EgressDenied` event of the session;
* the CLI's API requests reach the scripted API through the proxy with the real credential
  (API key or OAuth token), which appears nowhere the agent can read, in Redis, or in
  ``docker inspect``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis

from dockercc.client import AsyncPool
from dockercc.events import EgressDenied, ToolResult
from dockercc.pool.backend import LABEL
from dockercc.testing import text, tool_use

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.docker


@contextlib.contextmanager
def host_server(body: bytes) -> Iterator[tuple[int, list[str]]]:
    """An HTTP server on the host's loopback; yields its port and the paths it served."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append(self.path)
            self.send_response(200)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], seen
    finally:
        server.shutdown()
        server.server_close()


PROBE = r'''
import json, os, socket, urllib.request, urllib.error
out = {"interfaces": sorted(os.listdir("/sys/class/net"))}
# 127.0.0.1 here is the container itself (NO_PROXY); the host's loopback is behind the proxy
os.environ.pop("no_proxy", None), os.environ.pop("NO_PROXY", None)
via = urllib.request.build_opener(urllib.request.ProxyHandler({"http": "http://127.0.0.1:3128"}))
def get(name, opener, url):
    try:
        out[name] = opener.open(url, timeout=15).read().decode()
    except urllib.error.HTTPError as e:
        out[name] = [e.code, e.headers.get("X-Dockercc-Egress-Denied")]
    except Exception as e:
        out[name] = "error: " + str(e)
get("allowed", via, "http://127.0.0.1:%(allowed)d/ok")
get("refused", via, "http://127.0.0.1:%(refused)d/no")
# https through HTTPS_PROXY from the environment (CONNECT): refused before any DNS lookup
get("https", urllib.request.build_opener(), "https://not-allowed.example/")
for name, addr in (("direct_host", ("127.0.0.1", %(allowed)d)), ("direct_out", ("192.0.2.1", 80))):
    try:
        socket.create_connection(addr, timeout=3).close()
        out[name] = "connected"
    except OSError as e:
        out[name] = "error: " + (e.strerror or type(e).__name__)
print("PROBE" + json.dumps(out))
'''


def probe_result(results: list[ToolResult]) -> dict[str, Any]:
    for r in results:
        if "PROBE{" in r.text:
            return json.loads(r.text.split("PROBE", 1)[1].strip().splitlines()[0])
    raise AssertionError(f"no probe output in {[r.text[:300] for r in results]}")


async def test_no_network_but_the_proxy_and_refusals_are_events(make_config: Any,
                                                                api: Any) -> None:
    with host_server(b"hello from the host") as (allowed, served), \
            host_server(b"must not be served") as (refused, leaked):
        script = PROBE % {"allowed": allowed, "refused": refused}
        api.script(tool_use("Bash", {"command": f"python3 - <<'EOF'\n{script}\nEOF"}),
                   text("probed"))
        cfg = make_config(egress={"allow": [f"127.0.0.1:{allowed}"]})
        async with AsyncPool(cfg) as pool:
            assert pool.containers.egress is not None
            sockets = pool.containers.egress.directory  # the pool's private runtime dir
            assert (sockets.stat().st_mode & 0o777) == 0o700
            s = pool.session(permission_mode="bypassPermissions")
            events = [ev async for ev in s.stream("probe the network", timeout=180)]
            out = probe_result([e for e in events if isinstance(e, ToolResult)])
            assert out["interfaces"] == ["lo"], out
            assert out["allowed"] == "hello from the host", out
            assert served == ["/ok"]
            assert out["refused"][0] == 403 and "loopback address" in out["refused"][1], out
            assert not leaked
            assert "403" in out["https"], out  # the tunnel was refused
            assert out["direct_host"].startswith("error") and out["direct_out"].startswith(
                "error"), out
            denied = [e for e in events if isinstance(e, EgressDenied)]
            assert [(d.host, d.port) for d in denied] == [
                ("127.0.0.1", refused), ("not-allowed.example", 443)], denied
            assert "loopback address" in denied[0].reason
            assert denied[1].reason == "host not in the allow-list"
            assert all(d.session == s.id for d in denied)
            # the host recorded them too
            assert [(d.host, d.port) for d in pool.containers.egress.denials] == [
                ("127.0.0.1", refused), ("not-allowed.example", 443)]
            # and they stay in the session's output (what `dockercc logs` renders)
            stored = [e.event for e in await pool.transport.buffered(s.id)
                      if e.event.get("subtype") == "egress_denied"]
            assert len(stored) == 2
            env = {**os.environ, "PYTHONPATH": str(ROOT),
                   "DOCKERCC_REDIS__URL": pool.config.redis.url_secret(),
                   "DOCKERCC_REDIS__KEY_PREFIX": pool.config.redis.key_prefix}
            logs = await asyncio.to_thread(
                subprocess.run, [sys.executable, "-m", "dockercc.cli", "logs", s.id], env=env,
                capture_output=True, text=True, timeout=60)
            assert f"egress denied 127.0.0.1:{refused}" in logs.stderr, logs.stderr[-2000:]
            assert "egress denied not-allowed.example:443 host not in the allow-list" in \
                logs.stderr
            # the CLI's API requests went through the proxy (it answered "probed")
            assert events[-1].text == "probed"  # type: ignore[attr-defined]
            assert [p.name for p in sockets.iterdir()] != []
            await s.close(forget=True)
            # the container is gone, and so is its socket directory (the relay's stays)
            assert [p.name for p in sockets.iterdir()] == ["redis.sock"]
        # the pool closed: proxy, relay and every socket with it
        assert not sockets.exists() and pool.containers.egress is None


SCAN = r'''
import glob, os
hits = []
needle = ("CAN" + "ARY").encode()  # not spelled out: this script itself must not match
def look(path, data):
    if needle in data:
        hits.append(path)
for k, v in os.environ.items():
    look("env:" + k, v.encode())
for path in glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline"):
    try:
        look(path, open(path, "rb").read())
    except OSError:
        pass
files = 0
for root in ("/home/agent", "/workspace", "/tmp", "/run", "/etc", "/opt/dockercc/bin"):
    for dirpath, dirs, names in os.walk(root):
        for n in names:
            p = os.path.join(dirpath, n)
            try:
                if os.path.isfile(p) and os.path.getsize(p) < 50_000_000:
                    look(p, open(p, "rb").read())
                    files += 1
            except OSError:
                pass
print("SCANNED", files, "files; HITS", hits)
'''


def redis_values(url: str) -> list[bytes]:
    client = redis.Redis.from_url(url)
    out: list[bytes] = []
    try:
        for key in client.scan_iter(count=1000):
            out.append(key)
            kind = client.type(key)
            if kind == b"string":
                out.append(client.get(key) or b"")
            elif kind == b"hash":
                for k, v in client.hgetall(key).items():
                    out += [k, v]
            elif kind == b"list":
                out += client.lrange(key, 0, -1)
            elif kind == b"set":
                out += list(client.smembers(key))
            elif kind == b"zset":
                out += [m for m, _ in client.zrange(key, 0, -1, withscores=True)]
    finally:
        client.close()
    return out


@pytest.mark.parametrize("kind", ["apiKey", "oauthToken", "credentialsFile"])
async def test_credentials_reach_the_api_and_never_the_container(
        make_config: Any, api: Any, redis_server: Any, docker_client: Any, prefix: str,
        kind: str, tmp_path: Any) -> None:
    import zlib

    canary = (f"sk-ant-api03-CANARY{uuid.uuid4().hex}" if kind == "apiKey"
              else f"sk-ant-oat01-CANARY{uuid.uuid4().hex}")
    creds: dict[str, Any] = {"apiKey": None, "oauthToken": None}
    if kind == "credentialsFile":  # read by the proxy on the host, never mounted
        path = tmp_path / "credentials.json"
        path.write_text(json.dumps({"claudeAiOauth": {"accessToken": canary}}))
        creds[kind] = str(path)
    else:
        creds[kind] = canary
    api.script(tool_use("Bash", {"command": f"python3 - <<'EOF'\n{SCAN}\nEOF"}), text("scanned"))
    async with AsyncPool(make_config(credentials=creds)) as pool:
        s = pool.session(permission_mode="bypassPermissions")
        result = await s.ask("scan", timeout=180)
        assert result.text == "scanned"
        # the real credential reached the API, as the header the CLI uses for it
        for r in api.message_requests:
            if kind == "apiKey":
                assert r.headers.get("x-api-key") == canary and "authorization" not in r.headers
            else:
                assert r.headers.get("authorization") == f"Bearer {canary}"
                assert "x-api-key" not in r.headers
        # ... and nothing in the container has it
        scan = api.message_requests[-1].tool_result_text
        assert "SCANNED" in scan and "HITS []" in scan, scan[-2000:]
        c, = docker_client.containers.list(filters={"label": f"{LABEL}.prefix={prefix}"})
        inspect = json.dumps(docker_client.api.inspect_container(c.id))
        assert "CANARY" not in inspect
        env = c.attrs["Config"]["Env"]
        placeholder = ("ANTHROPIC_API_KEY=dockercc-proxy-placeholder" if kind == "apiKey"
                       else "CLAUDE_CODE_OAUTH_TOKEN=dockercc-proxy-placeholder")
        assert placeholder in env
        assert "ANTHROPIC_BASE_URL=http://127.0.0.1:3128" in env
        assert c.attrs["HostConfig"]["NetworkMode"] == "none"
        mounts = {m["Destination"]: m for m in c.attrs["Mounts"]}
        # no credentials file: the proxy's socket, the Redis relay and the session's own
        # scratch workspace volume (docker.scratchVolumes), nothing else
        assert set(mounts) == {"/run/dockercc/egress", "/run/dockercc/redis/relay.sock",
                               "/workspace"}, mounts
        assert mounts["/workspace"]["Type"] == "volume"
        # Redis: every key and value (the transcript is stored compressed)
        for value in redis_values(redis_server.url):
            assert b"CANARY" not in value
            with contextlib.suppress(zlib.error):
                assert b"CANARY" not in zlib.decompress(value)
        await s.close(forget=True)
