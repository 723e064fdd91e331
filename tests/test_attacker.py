"""One attacker's Bash against the whole boundary, on the product's defaults.

Two sessions share a pool (default config: ``none`` network, the egress proxy, one Redis user
per container, the runner apart from the agent). Session B holds a private prompt. The real
CLI of session A, driven by the scripted Messages API, runs a probe with its Bash tool that
tries every way out it can find: the environment, every process's ``environ`` and
``cmdline``, every unix socket on the file system (spoken to as Redis), TCP to Redis's port on
the container's loopback, the forwarder spoken to as Redis, ``CONNECT`` through the egress
proxy to the host's Redis port (refused) and to the scripted API's origin (allowed, as the
API's origin always is), and a search of every readable
file for B's id and secret. The test checks that nothing of B, and no Redis, answered anywhere
and that B goes on untouched.
"""

from __future__ import annotations

import json
import uuid
from typing import Any
from urllib.parse import urlsplit

import pytest

from dockercc.client import AsyncPool
from dockercc.events import Result
from dockercc.testing import text, tool_use

SECRET = f"b-private-{uuid.uuid4().hex}"

PROBE = r"""python3 - <<'EOF'
import glob, json, os, socket, stat
NEEDLES = [bytes.fromhex(h) for h in NEEDLES_HEX]  # hex: the script's own text holds neither
out = {"env": sorted(os.environ), "environ": {}, "sockets": {}, "tcp": {}, "proxy": {},
       "hits": []}
for path in glob.glob("/proc/[0-9]*/environ") + glob.glob("/proc/[0-9]*/cmdline"):
    try:
        data = open(path, "rb").read()
        # names only (values could be this probe's own text): and whether a needle is there
        out["environ"][path] = [v.split(b"=", 1)[0].decode("latin-1") for v in data.split(b"\0")
                                if v][:50] if path.endswith("environ") else "readable"
        if any(n in data for n in NEEDLES):
            out["hits"].append(path)
    except OSError as exc:
        out["environ"][path] = "denied " + type(exc).__name__

def redis_talk(sock):
    sock.settimeout(3)
    sock.sendall(b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nKEYS\r\n$1\r\n*\r\n")
    try:
        return sock.recv(65536).decode("latin-1")
    except OSError as exc:
        return "error " + type(exc).__name__

# every unix socket the agent can see, spoken to as Redis
for root, dirs, files in os.walk("/", onerror=lambda e: None):
    if root.startswith(("/proc", "/sys")):
        dirs[:] = []
        continue
    for name in files + dirs:
        path = os.path.join(root, name)
        try:
            if not stat.S_ISSOCK(os.lstat(path).st_mode):
                continue
        except OSError:
            continue
        s = socket.socket(socket.AF_UNIX)
        try:
            s.connect(path)
            out["sockets"][path] = redis_talk(s)
        except OSError as exc:
            out["sockets"][path] = "denied " + type(exc).__name__
        finally:
            s.close()
# the runner's socket dir, by name
for path in ("/run/dockercc/redis/relay.sock", "/run/dockercc/redis/redis.sock",
             "/run/dockercc/egress/egress.sock"):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.connect(path)
        out["sockets"][path] = redis_talk(s)
    except OSError as exc:
        out["sockets"][path] = "denied " + type(exc).__name__
    finally:
        s.close()

# TCP on the container's loopback: Redis's default port, the host Redis's port, the forwarder
for port in (6379, REDIS_PORT, 3128):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=3)
        out["tcp"][port] = redis_talk(s)
        s.close()
    except OSError as exc:
        out["tcp"][port] = "refused " + type(exc).__name__

# through the egress proxy: CONNECT to the host's Redis and to the scripted API's port
for target in ("127.0.0.1:%d" % REDIS_PORT, "localhost:%d" % REDIS_PORT,
               "127.0.0.1:%d" % API_PORT, "[::1]:%d" % REDIS_PORT):
    try:
        s = socket.create_connection(("127.0.0.1", 3128), timeout=3)
        s.settimeout(5)
        s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target)).encode())
        head = s.recv(4096).decode("latin-1")
        out["proxy"][target] = head.split("\r\n", 1)[0]
        if " 200 " in head:
            out["proxy"][target] += " | " + redis_talk(s)
        s.close()
    except OSError as exc:
        out["proxy"][target] = "error " + type(exc).__name__

# every readable file, for the other session's id and secret
for root, dirs, files in os.walk("/", onerror=lambda e: None):
    if root.startswith(("/proc", "/sys", "/dev", "/usr", "/opt", "/lib")):
        dirs[:] = []
        continue
    for name in files:
        path = os.path.join(root, name)
        try:
            if os.path.getsize(path) > 5_000_000:
                continue
            data = open(path, "rb").read()
        except OSError:
            continue
        for needle in NEEDLES:
            if needle in data:
                out["hits"].append(path)
print("PROBE" + json.dumps(out, default=str) + "EBORP")
EOF"""


def probe_report(api: Any) -> dict[str, Any]:
    for req in reversed(api.message_requests):
        found = req.tool_result_text
        if "PROBE{" in found:
            body = found[found.index("PROBE{") + len("PROBE"):found.rindex("EBORP")]
            report: dict[str, Any] = json.loads(body)
            return report
    raise AssertionError("the probe printed nothing: "
                         + api.message_requests[-1].tool_result_text[:2000])


@pytest.mark.docker
async def test_an_attackers_bash_reaches_no_redis_and_nothing_of_another_session(
        make_config: Any, api: Any, redis_server: Any) -> None:
    b_id = f"victim-{uuid.uuid4().hex[:10]}"
    api_port = urlsplit(api.url).port
    probe = (PROBE.replace("REDIS_PORT", str(redis_server.port))
             .replace("API_PORT", str(api_port))
             .replace("NEEDLES_HEX", repr([b_id.encode().hex(), SECRET.encode().hex()])))
    api.on(SECRET, text("noted"))
    api.on("probe everything", tool_use("Bash", {"command": probe, "timeout": 120000}),
           text("probed"))
    config = make_config()
    assert config.get("docker", {}).get("network") in (None, "none")  # the product default
    async with AsyncPool(config) as pool:
        b = pool.session(session_id=b_id)
        assert (await b.ask(f"remember {SECRET}", timeout=180)).text == "noted"
        a = pool.session()
        events = [ev async for ev in a.stream("probe everything", timeout=240)]
        assert isinstance(events[-1], Result) and events[-1].text == "probed", events[-1]
        report = probe_report(api)
        raw = json.dumps(report)

        # nothing of B anywhere the agent looked
        assert SECRET not in raw and b_id not in raw, "another session's data reached the agent"
        assert report["hits"] == []
        # no Redis answered on any path (a Redis would say +PONG, -NOAUTH or -NOPERM)
        for answer in [*report["sockets"].values(), *report["tcp"].values(),
                       *report["proxy"].values()]:
            assert "PONG" not in answer and "NOAUTH" not in answer and "NOPERM" not in answer, \
                report
        # the runner's sockets are root's alone; the proxy refuses loopback targets
        for path, got in report["sockets"].items():
            if path.startswith("/run/dockercc"):
                assert got.startswith("denied "), (path, got)
        api_origin = f"127.0.0.1:{api_port}"
        for target, status in report["proxy"].items():
            if target == api_origin:  # the API's origin is allowed by design (and is no Redis)
                assert status.startswith("HTTP/1.1 200"), (target, status)
            else:
                assert status.startswith("HTTP/1.1 403"), (target, status)
        # the environment the agent sees carries no Redis URL and no credential
        assert not [k for k in report["env"] if k.startswith("DOCKERCC_") or "REDIS" in k]
        assert "sk-ant-scripted-test" not in raw

        # B is untouched and goes on
        assert (await b.ask(f"again {SECRET}", timeout=120)).text == "noted"
        await a.close(forget=True)
        await b.close(forget=True)
