"""The agent cannot reach its runner: separate uids inside a real container.

The runner holds the container's Redis secret; the agent (the CLI and whatever its Bash runs)
is untrusted. Checked the way an attacker's Bash would try it: the real CLI, driven by the
scripted Messages API, runs a probe script with its Bash tool, in a real pool container. The
probe tries to read the runner's and init's environment, memory and file descriptors, signal
and ptrace them, and list or open what is under ``/run/dockercc``; it reports what it got
and the test checks the runner's secret is nowhere in it and that the runner goes on.

Plus the pure parts (the CLI's environment, the spec, the default permission mode) and the
runner's file access as the agent (``agent_fs``) on the host.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import TEST_PREFIXES

from dockercc.agent.early import agent_env, agent_fs, agent_ids
from dockercc.agent.history import read_agent_file
from dockercc.client import AsyncPool
from dockercc.config import resolve_config
from dockercc.errors import ContainerLost
from dockercc.events import Result, SystemInit
from dockercc.pool.backend import LABEL
from dockercc.pool.spec import RUNNER_CAPS, runner_env, spec_for
from dockercc.session import SANDBOX_PERMISSION_MODE, AsyncSession, SessionOptions
from dockercc.testing import RedisServer, text, tool_use

REDIS_PASSWORD = f"rpw-CANARY{uuid.uuid4().hex}"
NO_REDIS = "redis://127.0.0.1:1/0"  # pure tests: nothing connects

# What the agent's Bash runs: every way at the runner it can think of, reported as JSON.
# (The runner is found by its command line, "-m\0dockercc.agent": NUL-separated, so the
# shell that carries this script in its own argv never matches.)
PROBE = r"""python3 - <<'EOF'
import ctypes, errno, json, os, signal, socket, subprocess
libc = ctypes.CDLL(None, use_errno=True)
out = {"id": subprocess.run(["id"], capture_output=True, text=True).stdout.strip()}
status = dict(l.split(":", 1) for l in open("/proc/self/status").read().splitlines() if ":" in l)
out["status"] = {k: status[k].strip() for k in
                 ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapAmb", "CapBnd",
                  "NoNewPrivs")}
out["env"] = dict(os.environ)

def cmdline(pid):
    try:
        return open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        return b""

runner = [int(p) for p in os.listdir("/proc")
          if p.isdigit() and p != "1" and b"-m\x00dockercc.agent" in cmdline(p)]
out["runner"] = runner

def attempt(fn):
    try:
        got = fn()
        return "GOT " + (repr(got)[:200] if got is not None else "ok")
    except OSError as exc:
        return "denied " + errno.errorcode.get(exc.errno, str(exc.errno))

def read_nonblocking(path):  # a pipe's read end must not hang the probe
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        return os.read(fd, 64)
    finally:
        os.close(fd)

def ptrace(request, pid):
    if libc.ptrace(ctypes.c_long(request), ctypes.c_long(pid), None, None) == -1:
        raise OSError(ctypes.get_errno(), "ptrace")

targets = {}
for pid in runner + [1]:
    t = targets[str(pid)] = {}
    t["environ"] = attempt(lambda: open(f"/proc/{pid}/environ", "rb").read())
    t["task_environ"] = attempt(
        lambda: open(f"/proc/{pid}/task/{pid}/environ", "rb").read())
    t["mem"] = attempt(lambda: open(f"/proc/{pid}/mem", "rb").read(16))
    t["fd_list"] = attempt(lambda: os.listdir(f"/proc/{pid}/fd"))
    t["fd_open"] = [attempt(lambda n=n: read_nonblocking(f"/proc/{pid}/fd/{n}"))
                    for n in range(0, 12)]
    t["root"] = attempt(lambda: os.listdir(f"/proc/{pid}/root/run/dockercc"))
    t["cwd"] = attempt(lambda: os.readlink(f"/proc/{pid}/cwd"))
    t["ptrace_attach"] = attempt(lambda: ptrace(16, pid))
    t["ptrace_seize"] = attempt(lambda: ptrace(0x4206, pid))
    t["kill_0"] = attempt(lambda: os.kill(pid, 0))  # the permission check alone
    if t["kill_0"].startswith("denied"):  # (else stopping it would stop this probe too)
        for sig in ("SIGSTOP", "SIGTERM", "SIGKILL"):
            t["kill_" + sig] = attempt(lambda: os.kill(pid, getattr(signal, sig)))
out["targets"] = targets

readable = {}
for p in os.listdir("/proc"):
    if p.isdigit():
        try:
            data = open(f"/proc/{p}/environ", "rb").read()
        except OSError:
            continue
        readable[p] = sorted(k.split(b"=")[0].decode() for k in data.split(b"\0") if k)
out["environ_readable"] = readable

out["run_dockercc"] = {
    "list": attempt(lambda: os.listdir("/run/dockercc")),
    "credentials": attempt(lambda: open("/run/dockercc/credentials.json", "rb").read()),
    "stat_redis": attempt(lambda: os.stat("/run/dockercc/redis")),
}
s = socket.socket(socket.AF_UNIX)
out["run_dockercc"]["connect_redis_socket"] = attempt(
    lambda: s.connect("/run/dockercc/redis/redis.sock"))
print("PROBE" + json.dumps(out) + "EBORP")
EOF"""


def probe_report(api: Any) -> dict[str, Any]:
    for req in reversed(api.message_requests):
        found = req.tool_result_text
        if "PROBE{" in found:
            report: dict[str, Any] = json.loads(found.split("PROBE", 1)[1].split("EBORP", 1)[0])
            return report
    raise AssertionError("the probe printed nothing: "
                         + api.message_requests[-1].tool_result_text[:2000])


def container_of(docker_client: Any, prefix: str, container_id: str) -> Any:
    found = docker_client.containers.list(filters={"label": [
        f"{LABEL}.prefix={prefix}", f"{LABEL}.container={container_id}"]})
    assert len(found) == 1, found
    return found[0]


def sh(container: Any, command: str, user: str = "0") -> tuple[int, str]:
    code, out = container.exec_run(["sh", "-c", command], user=user)
    return int(code), out.decode(errors="replace")


# -- pure: the CLI's environment, the spec, the permission mode ------------------------------


def test_agent_env_drops_the_runners_settings_and_keeps_the_clis() -> None:
    container = {
        "DOCKERCC_REDIS_URL": f"redis://:{REDIS_PASSWORD}@h:6379/0",
        "DOCKERCC_CONTAINER": "c1", "DOCKERCC_KEY_PREFIX": "p:", "DOCKERCC_PRESTART": "{}",
        "DOCKERCC_AGENT_USER": "1000:1000", "DOCKERCC_CREDENTIALS_FILE": "/run/dockercc/c",
        "DOCKERCC_EGRESS_SOCKET": "/run/dockercc/egress/s", "DOCKERCC_CLAUDE_BIN": "claude",
        "REDIS_URL": "redis://the-agents-own:6379",  # not the runner's: it has its own
        "HOME": "/home/agent", "PATH": "/opt/dockercc/bin:/usr/bin",
        "ANTHROPIC_API_KEY": "sk-ant-x", "ANTHROPIC_BASE_URL": "http://127.0.0.1:1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1", "TEAM_SETTING": "from docker.env",
    }
    env = agent_env(container)
    assert not [k for k in env if k.startswith("DOCKERCC_")]
    assert REDIS_PASSWORD not in json.dumps(env)
    assert env == {k: v for k, v in container.items() if not k.startswith("DOCKERCC_")}
    # without DOCKERCC_REDIS_URL the runner reads REDIS_URL: then it is the runner's too
    assert "REDIS_URL" not in agent_env({"REDIS_URL": "redis://:pw@h/0"})
    assert agent_env({})["HOME"] == "/home/agent"


def test_container_spec_runs_the_runner_as_root_with_three_caps() -> None:
    config = resolve_config({"redis": {"url": NO_REDIS}})
    spec = spec_for(config)
    assert spec.user == "1000:1000" and spec.isolate_runner
    assert spec.container_user() == "0:0" and spec.cap_add() == list(RUNNER_CAPS)
    env = runner_env(spec, container="c1", prefix="p:", health_interval_ms=1000)
    assert env["DOCKERCC_AGENT_USER"] == "1000:1000"
    single = spec_for(resolve_config({"redis": {"url": NO_REDIS},
                                      "docker": {"isolateRunner": False}}))
    assert single.container_user() == "1000:1000" and single.cap_add() == []
    assert "DOCKERCC_AGENT_USER" not in runner_env(single, container="c1", prefix="p:",
                                                   health_interval_ms=1000)
    assert single.key() != spec.key()  # never the same warm set


def test_agent_ids() -> None:
    assert os.getuid() == 0, "the tests run as root (as the runner does)"
    assert agent_ids({}) is None
    assert agent_ids({"DOCKERCC_AGENT_USER": "1000:1000"}) == (1000, 1000)
    assert agent_ids({"DOCKERCC_AGENT_USER": "1234"}) == (1234, 1234)
    assert agent_ids({"DOCKERCC_AGENT_USER": "0:0"}) is None  # nothing to switch to
    with pytest.raises(ValueError, match="no such user"):
        agent_ids({"DOCKERCC_AGENT_USER": "no-such-user-dockercc"})


@pytest.fixture
def traversable_dir() -> Iterator[Path]:
    """A directory uid 1000 can reach (pytest's tmp_path sits under a 0700 root directory)."""
    path = Path(tempfile.mkdtemp(prefix="dockercc-agentfs-"))
    path.chmod(0o711)
    try:
        yield path
    finally:
        shutil.rmtree(path)


def test_agent_fs_creates_the_agents_files_and_reads_only_what_the_agent_may(
        traversable_dir: Path) -> None:
    home = traversable_dir / "home"
    home.mkdir()
    os.chown(home, 1000, 1000)
    secret = traversable_dir / "secret"
    secret.write_text("root's")
    secret.chmod(0o600)
    with agent_fs((1000, 1000)):
        (home / "projects").mkdir()
        (home / "projects" / "t.jsonl").write_text("transcript")
        with pytest.raises(PermissionError):
            secret.read_text()
    st = (home / "projects" / "t.jsonl").stat()
    assert (st.st_uid, st.st_gid) == (1000, 1000)
    assert secret.read_text() == "root's"  # the thread is itself again


def test_runner_reads_the_agents_files_as_the_agent_and_only_regular_ones(
        traversable_dir: Path) -> None:
    """A FIFO or an endless file in place of a transcript cannot stall or swamp the runner."""
    home = traversable_dir / "home"
    home.mkdir()
    os.chown(home, 1000, 1000)
    with agent_fs((1000, 1000)):
        os.mkfifo(home / "fifo.jsonl")
        (home / "big.jsonl").write_bytes(b"x" * 5000)
        (home / "mine.jsonl").write_bytes(b"line\n")
    assert read_agent_file(home / "fifo.jsonl", 100, (1000, 1000)) == b""  # did not block
    assert len(read_agent_file(home / "big.jsonl", 100, (1000, 1000))) == 101
    assert read_agent_file(home / "mine.jsonl", 100, (1000, 1000)) == b"line\n"
    root_only = traversable_dir / "root-only"
    root_only.write_bytes(b"runner's")
    root_only.chmod(0o600)
    with pytest.raises(PermissionError):
        read_agent_file(root_only, 100, (1000, 1000))


def session_args(config: dict[str, Any], **options: Any) -> list[str]:
    pool = AsyncPool(config)
    return AsyncSession(pool, SessionOptions(**options)).cli_args()


def test_default_permission_mode_in_containers() -> None:
    config = {"redis": {"url": NO_REDIS}}
    args = session_args(config)
    assert args[args.index("--permission-mode") + 1] == SANDBOX_PERMISSION_MODE
    plan = session_args(config, permission_mode="plan")
    assert plan[plan.index("--permission-mode") + 1] == "plan"
    assert "--permission-mode" not in session_args(config, permission_mode="default")
    agent = {**config, "agents": {"main": {"permissionMode": "acceptEdits"}}}
    args = session_args(agent)
    assert args[args.index("--permission-mode") + 1] == "acceptEdits"
    # the CLI refuses bypassPermissions as root: an agent configured as root keeps its default
    assert "--permission-mode" not in session_args({**config, "docker": {"user": "0:0"}})
    # a warm container pre-starts exactly what a default session asks for
    pool = AsyncPool(config)
    s = AsyncSession(pool, SessionOptions())
    assert s.prestart()["args"] == s.cli_args()


# -- real containers, the agent's own Bash -----------------------------------------------------


@pytest.fixture
def secret_redis(tmp_path: Path) -> Iterator[tuple[RedisServer, str]]:
    with RedisServer(tmp_path / "redis") as server:
        server.cli("CONFIG", "SET", "requirepass", REDIS_PASSWORD)
        yield server, f"redis://:{REDIS_PASSWORD}@127.0.0.1:{server.port}/0"


@pytest.mark.docker
async def test_the_agents_bash_cannot_reach_the_runner(
        secret_redis: tuple[RedisServer, str], api: Any, agent_image: str, docker_client: Any,
        tmp_path: Path) -> None:
    """The runner's Redis URL holds a password; the agent's Bash tries everything."""
    _server, url = secret_redis
    prefix = f"i{uuid.uuid4().hex[:8]}:"
    TEST_PREFIXES.add(prefix)
    creds = tmp_path / "credentials.json"  # something mounted under /run/dockercc
    creds.write_text(json.dumps({"note": "mounted for the runner"}))
    config = {
        "image": agent_image,
        "redis": {"url": url, "keyPrefix": prefix},
        "docker": {"network": "host"},
        "credentials": {"baseUrl": api.url, "apiKey": "sk-ant-scripted-test",
                        "credentialsFile": str(creds)},
        "resources": {"memory": "1g", "cpus": 1},
        "timeouts": {"healthIntervalMs": 500},
    }
    api.on("probe", tool_use("Bash", {"command": PROBE}), text("probed"))
    api.on("still", text("still here"))
    async with AsyncPool(config) as pool:
        s = pool.session()  # the default permission mode: no approval needed for Bash
        events = [ev async for ev in s.stream("probe the runner", timeout=180)]
        init = next(ev for ev in events if isinstance(ev, SystemInit))
        assert init.permission_mode == SANDBOX_PERMISSION_MODE
        assert isinstance(events[-1], Result) and events[-1].text == "probed"
        report = probe_report(api)
        raw = json.dumps(report)
        assert REDIS_PASSWORD not in raw, "the runner's secret reached the agent"
        # (isolated pools: the runner's secret is its container's own Redis password)
        assert s.lease is not None and pool.containers.acl is not None
        _, own_password = pool.containers.acl.credentials(s.lease.container)
        assert own_password not in raw, "the runner's secret reached the agent"

        # who the agent is: uid/gid 1000, no other group, no capability
        assert report["id"] == "uid=1000(agent) gid=1000(agent) groups=1000(agent)", report["id"]
        st = report["status"]
        assert st["Uid"].split() == ["1000"] * 4 and st["Gid"].split() == ["1000"] * 4
        assert st["Groups"] == ""
        for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
            assert st[cap] == "0" * 16, st
        assert st["NoNewPrivs"] == "1"
        # its environment: nothing of the runner's
        env = report["env"]
        assert not [k for k in env if k.startswith("DOCKERCC_") or "REDIS" in k], sorted(env)
        assert env["HOME"] == "/home/agent" and env["ANTHROPIC_BASE_URL"] == api.url

        # the runner and init: nothing to read, trace or signal
        assert len(report["runner"]) == 1, report["runner"]
        runner_pid = report["runner"][0]
        assert set(report["targets"]) == {str(runner_pid), "1"}
        for pid, t in report["targets"].items():
            for what, got in t.items():
                results = got if isinstance(got, list) else [got]
                for one in results:
                    assert one.startswith("denied E"), (pid, what, one)
            assert t["environ"] == t["mem"] == t["fd_list"] == "denied EACCES", (pid, t)
            assert t["ptrace_attach"] == t["ptrace_seize"] == "denied EPERM", (pid, t)
            assert t["kill_SIGKILL"] == t["kill_SIGTERM"] == "denied EPERM", (pid, t)
        # the only environments it can read are its own processes' (scrubbed)
        for pid, names in report["environ_readable"].items():
            assert not [n for n in names if n.startswith("DOCKERCC_")], (pid, names)
        assert str(runner_pid) not in report["environ_readable"]
        assert "1" not in report["environ_readable"]
        # /run/dockercc: root's alone
        for what, got in report["run_dockercc"].items():
            assert got == "denied EACCES", (what, got)

        # the runner has the secret (so the probe was a real test) and is unharmed
        assert s.lease is not None
        c = container_of(docker_client, prefix, s.lease.container)
        assert any(e.startswith("DOCKERCC_REDIS_URL=") and own_password in e
                   for e in c.attrs["Config"]["Env"])
        code, out = sh(c, f"cat /proc/{runner_pid}/status")
        assert code == 0 and "State:\tS" in out and "\nUid:\t0\t0\t0\t0" in out, out
        assert (await s.ask("still there?", timeout=120)).text == "still here"
        await s.close(forget=True)


@pytest.mark.docker
async def test_socket_dir_files_resume_and_leftovers_across_uids(
        make_config: Any, api: Any, redis_server: RedisServer, docker_client: Any,
        prefix: str) -> None:
    """Redis over the bind-mounted socket (the runner's alone); the CLI killed by its own tool
    leaves processes the root runner kills; a resumed session's transcript is restored into a
    new container as the agent's file."""
    cfg = make_config(redis={"url": redis_server.unix_url, "keyPrefix": prefix})
    api.on("probe", tool_use("Bash", {"command": PROBE}), text("probed"))
    # the agent's tool leaves a process of its own behind and kills its CLI
    leave = ("setsid sleep 300 >/dev/null 2>&1 < /dev/null & sleep 0.5; "
             "kill -9 $(pgrep -x claude)")
    api.on("leave", tool_use("Bash", {"command": leave}), text("unreachable"))
    api.on("after", text("after the restart"))
    api.on("resumed", text("resumed fine"))
    async with AsyncPool(cfg) as pool:
        s = pool.session(session_id="iso-files")
        assert (await s.ask("probe the socket", timeout=180)).text == "probed"
        report = probe_report(api)
        assert report["run_dockercc"]["connect_redis_socket"] == "denied EACCES", report
        assert report["run_dockercc"]["list"] == "denied EACCES"
        assert s.lease is not None
        c = container_of(docker_client, prefix, s.lease.container)
        mounts = {m["Destination"] for m in c.attrs["Mounts"]}
        assert "/run/dockercc/redis/redis.sock" in mounts, mounts
        code, out = sh(c, "stat -c '%a %u %g' /run/dockercc")
        assert out.split() == ["700", "0", "0"], out

        with pytest.raises(ContainerLost):
            await s.ask("leave something running", timeout=180)
        errors = [e.event for e in await pool.transport.buffered(s.id)
                  if e.event.get("type") == "dockercc" and e.event.get("subtype") == "error"]
        assert errors and errors[-1]["error"] == "cli_exited", errors
        assert errors[-1]["leftovers_killed"] >= 1, errors[-1]
        code, out = sh(c, "pgrep -x sleep || echo none")
        assert out.strip() == "none", out
        assert (await s.ask("and after?", timeout=180)).text == "after the restart"
        first = s.lease.container
        await s.close()

        again = pool.session(resume="iso-files")
        assert (await again.ask("resumed?", timeout=180)).text == "resumed fine"
        assert again.lease is not None and again.lease.container != first
        texts = json.dumps(api.message_requests[-1].body["messages"])
        assert "and after?" in texts and "after the restart" in texts
        c2 = container_of(docker_client, prefix, again.lease.container)
        code, out = sh(c2, "stat -c '%u %g %a %n' /home/agent/.claude/projects/*/*.jsonl",
                       user="1000")
        assert code == 0 and out.strip(), out
        for line in out.strip().splitlines():
            assert line.split()[:2] == ["1000", "1000"], out
        await again.close(forget=True)
