"""Hardening, checked inside real pool containers running the real CLI.

What the agent's own tools see (a Bash ``tool_use`` run by the CLI) and what ``docker exec``
and ``docker inspect`` see: the agent not root and without capabilities (the runner and init
root with SETUID, SETGID and KILL only, see tests/test_runner_isolation.py), ``no_new_privs``
everywhere, a read-only root,
a pids limit that stops a fork bomb (the host and other sessions unaffected, the caller told),
a memory limit whose breach reaches the caller as a typed error, no Docker socket, nothing of
the host mounted beyond the configured binds.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from dockercc.client import AsyncPool
from dockercc.errors import CLIDied, ContainerLost
from dockercc.events import Result
from dockercc.pool.backend import LABEL
from dockercc.session import AsyncSession
from dockercc.testing import text, tool_use

pytestmark = pytest.mark.docker

RUNNER_CAPS = (1 << 5) | (1 << 6) | (1 << 7)
"""CAP_KILL, CAP_SETGID, CAP_SETUID: all a container's root processes hold."""

DOCKER_MANAGED = {"/etc/resolv.conf", "/etc/hostname", "/etc/hosts"}
"""Files Docker itself bind-mounts into every container (not our binds)."""


def container_of(docker_client: Any, prefix: str, s: AsyncSession) -> Any:
    assert s.lease is not None
    found = docker_client.containers.list(filters={"label": [
        f"{LABEL}.prefix={prefix}", f"{LABEL}.container={s.lease.container}"]})
    assert len(found) == 1, found
    return found[0]


def sh(container: Any, command: str) -> tuple[int, str]:
    code, out = container.exec_run(["sh", "-c", command], demux=False)
    return int(code), out.decode(errors="replace")


def bash_result(api: Any) -> str:
    """The text of the last tool_result the model got (what the Bash tool printed)."""
    content = api.message_requests[-1].tool_results[-1].get("content")
    if isinstance(content, list):
        return "\n".join(str(c.get("text", "")) for c in content if isinstance(c, dict))
    return str(content)


async def test_agent_runs_unprivileged_on_a_read_only_root(make_config: Any, api: Any,
                                                           docker_client: Any,
                                                           prefix: str) -> None:
    probe = ("id -u; id -g; grep -E '^(Cap(Inh|Prm|Eff|Bnd|Amb)|NoNewPrivs)' /proc/self/status;"
             " for d in / /usr /etc /opt /var; do touch $d/.probe 2>&1 || true; done;"
             " for d in /tmp /workspace /home/agent; do touch $d/.probe && echo wrote $d; done;"
             " awk '$2==\"/\" {print \"rootfs\", $4}' /proc/mounts")
    api.script(tool_use("Bash", {"command": probe}), text("probed"))
    async with AsyncPool(make_config()) as pool:
        s = pool.session(permission_mode="bypassPermissions")
        assert (await s.ask("probe the sandbox", timeout=180)).text == "probed"
        out = bash_result(api)
        lines = out.splitlines()
        assert lines[0] == "1000" and lines[1] == "1000", out  # uid, gid: not root
        for cap in ("CapInh", "CapPrm", "CapEff", "CapAmb"):
            assert f"{cap}:\t0000000000000000" in out, out
        # the bounding set is the root runner's three (KILL, SETGID, SETUID): with
        # no_new_privs nothing the agent executes can gain any of them
        assert f"CapBnd:\t{RUNNER_CAPS:016x}" in out, out
        assert "NoNewPrivs:\t1" in out
        assert out.count("Read-only file system") == 5, out
        for d in ("/tmp", "/workspace", "/home/agent"):
            assert f"wrote {d}" in out
        assert "rootfs ro," in out

        # every process in the container (runner, CLI, init), not only the tool's: root ones
        # (init, the runner, this exec) hold the three capabilities and nothing else, the
        # agent's (the CLI) none
        c = container_of(docker_client, prefix, s)
        code, status = sh(c, "for p in /proc/[0-9]*; do cat $p/status 2>/dev/null; done")
        assert code == 0
        blocks = [b for b in status.split("Name:") if "Uid:" in b]
        assert len(blocks) >= 4, status  # init, runner, CLI, sh
        names = {"root": set(), "agent": set()}
        for block in blocks:
            fields = dict(line.split(":", 1) for line in block.splitlines()[1:] if ":" in line)
            uids = set(fields["Uid"].split())
            assert uids in ({"0"}, {"1000"}), block
            root = uids == {"0"}
            names["root" if root else "agent"].add(block.split()[0])
            want = f"{RUNNER_CAPS:016x}" if root else "0" * 16
            assert fields["CapEff"].strip() == want and fields["CapPrm"].strip() == want, block
            assert fields["CapBnd"].strip() == f"{RUNNER_CAPS:016x}", block
            assert fields["CapAmb"].strip() == "0" * 16, block
            assert fields["NoNewPrivs"].strip() == "1", block
            if not root:
                assert set(fields["Gid"].split()) == {"1000"} and not fields["Groups"].strip()
        assert {"tini", "python3"} <= names["root"] and "claude" in names["agent"], names
        host = c.attrs["HostConfig"]
        assert host["ReadonlyRootfs"] is True and host["Privileged"] is False
        assert host["CapDrop"] == ["ALL"]
        assert sorted(host["CapAdd"]) == ["KILL", "SETGID", "SETUID"], host["CapAdd"]
        assert "no-new-privileges" in host["SecurityOpt"]
        assert c.attrs["Config"]["User"] == "0:0"  # the runner's; the agent's is docker.user
        await s.close(forget=True)


async def test_no_docker_socket_and_only_configured_binds(make_config: Any, api: Any,
                                                          docker_client: Any, prefix: str,
                                                          tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "note.txt").write_text("configured bind\n")
    os.chmod(shared, 0o755)
    probe = ("ls -la /var/run/docker.sock /run/docker.sock 2>&1; "
             "find / -xdev \\( -name 'docker.sock' -o -name 'containerd.sock' \\) 2>/dev/null;"
             " echo DOCKER_HOST=${DOCKER_HOST:-unset}; cat /data/note.txt")
    api.script(tool_use("Bash", {"command": probe}), text("looked"))
    cfg = make_config(docker={"network": "host", "binds": [f"{shared}:/data:ro"]})
    async with AsyncPool(cfg) as pool:
        s = pool.session(permission_mode="bypassPermissions")
        assert (await s.ask("look around", timeout=180)).text == "looked"
        out = bash_result(api)
        assert out.count("No such file or directory") == 2, out
        assert "docker.sock" not in out.replace("/var/run/docker.sock", "").replace(
            "/run/docker.sock", "")
        assert "DOCKER_HOST=unset" in out and "configured bind" in out

        c = container_of(docker_client, prefix, s)
        mounts = c.attrs["Mounts"]
        binds = [m for m in mounts if m["Type"] == "bind"]
        assert [(m["Source"], m["Destination"], m["RW"]) for m in binds] == [
            (str(shared), "/data", False)], mounts
        # and the session's own scratch workspace (the default: a volume, not a host path)
        volumes = [m for m in mounts if m["Type"] == "volume"]
        assert s.workspace_mount is not None
        assert [(m["Name"], m["Destination"], m["RW"]) for m in volumes] == [
            (s.workspace_mount.source, "/workspace", True)], mounts
        assert all(m["Type"] in ("bind", "tmpfs", "volume") for m in mounts), mounts
        assert not any("docker.sock" in (m.get("Source") or "") for m in mounts)
        # what the kernel says: every mount backed by a host file system is one of Docker's
        # own three files, the session's scratch workspace volume or the configured bind
        code, info = sh(c, "cat /proc/self/mountinfo")
        assert code == 0
        host_backed = set()
        for line in info.splitlines():
            left, _, right = line.partition(" - ")
            fstype, source = right.split()[:2]
            target = left.split()[4]
            if source.startswith("/dev/") and fstype not in ("devpts", "mqueue", "tmpfs"):
                host_backed.add(target)
        assert host_backed == DOCKER_MANAGED | {"/data", "/workspace"}, host_backed
        await s.close(forget=True)


FORK_BOMB = r"""python3 - <<'EOF'
import os, signal, time
kids, err = [], ""
for _ in range(2000):  # bounded: stops at the first refusal (or 2000 forks)
    try:
        pid = os.fork()
    except OSError as exc:
        err = exc.strerror
        break
    if pid == 0:
        time.sleep(3)
        os._exit(0)
    kids.append(pid)
# the limit is reached: give some pids back at once (the CLI and the runner share the
# container's limit and may need a thread right now); the others end within 3 s
for pid in kids[-16:]:
    os.kill(pid, signal.SIGKILL)
print(f"forked {len(kids)} refused: {err}", flush=True)
for pid in kids:
    os.waitpid(pid, 0)
print("bomb over", flush=True)
EOF"""


async def test_fork_bomb_is_stopped_by_the_pids_limit(make_config: Any, api: Any,
                                                      docker_client: Any, prefix: str) -> None:
    """The limit holds the bomb (host and other sessions unaffected, the count never above
    it) and the bombed session goes on. The CLI shares the container's process ids: refused a
    thread at the peak it may abort; then the turn fails with CLIDied naming the pids limit
    (tested deterministically below), otherwise the tool's report comes back. Both are
    right; which one happened is printed."""
    limit = 64
    api.on("bomb", tool_use("Bash", {"command": FORK_BOMB}), text("bomb done"))
    api.on("ping", text("pong"))
    api.on("again", text("still alive"))
    async with AsyncPool(make_config(resources={"memory": "1g", "cpus": 1,
                                                "pidsLimit": limit})) as pool:
        # (unique ids: container names are global, other checkouts may run this test now)
        tag = uuid.uuid4().hex[:8]
        bombed = pool.session(session_id=f"bombed-{tag}", permission_mode="bypassPermissions")
        other = pool.session(session_id=f"bystander-{tag}")
        await asyncio.gather(bombed.start(), other.start())
        c = container_of(docker_client, prefix, bombed)
        assert c.attrs["HostConfig"]["PidsLimit"] == limit

        peak = 0
        done = asyncio.Event()

        async def watch() -> None:  # the container's process count, from the host
            nonlocal peak
            while not done.is_set():
                try:  # (an exec needs a pid too: it may be refused at the peak)
                    code, out = await asyncio.to_thread(
                        sh, c, "cat /sys/fs/cgroup/pids/pids.current 2>/dev/null || "
                               "cat /sys/fs/cgroup/pids.current")
                except Exception:
                    code, out = 1, ""
                if code == 0 and out.strip().isdigit():
                    peak = max(peak, int(out.strip()))
                await asyncio.sleep(0.2)

        watcher = asyncio.create_task(watch())
        bomb = asyncio.create_task(bombed.ask("run the bomb", timeout=180))
        # meanwhile: the host forks fine and another session answers
        await asyncio.sleep(1.5)
        assert subprocess.run(["true"], timeout=10).returncode == 0
        t0 = time.monotonic()
        assert (await other.ask("ping", timeout=120)).text == "pong"
        bystander_s = time.monotonic() - t0
        died: CLIDied | None = None
        try:
            result = await bomb
        except CLIDied as exc:
            died = exc
        done.set()
        await watcher
        print(f"fork bomb: the CLI {'survived' if died is None else f'died: {died}'}")
        if died is None:
            assert result.text == "bomb done"
            # what the agent got back from the tool (the bystander's request may be last)
            out = next(r.tool_result_text for r in reversed(api.message_requests)
                       if "forked" in r.tool_result_text)
            forked = int(out.split("forked ")[1].split()[0])
            assert "refused: Resource temporarily unavailable" in out, out
            assert 0 < forked < limit, out
            assert "bomb over" in out  # the children ended; nothing was left running
        else:
            assert died.reason == "pids_limit" and "resources.pidsLimit" in str(died), died
        assert 0 < peak <= limit, peak
        assert bystander_s < 60
        # the bombed session itself goes on
        events = [ev async for ev in bombed.stream("again?", timeout=120)]
        assert isinstance(events[-1], Result) and events[-1].text == "still alive"
        await bombed.close(forget=True)
        await other.close(forget=True)


ABORT_AT_THE_LIMIT = r"""python3 - <<'EOF'
import os, signal, time
def ancestors():
    pid = os.getppid()
    while pid > 1:
        yield pid
        with open(f"/proc/{pid}/stat") as f:
            pid = int(f.read().rsplit(")", 1)[1].split()[1])
def cmdline(pid):
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        return f.read()
# (NUL-separated: the shell running this script has the text in its own argv)
cli = next(p for p in ancestors() if b"--output-format\0stream-json" in cmdline(p))
kids = []
for _ in range(2000):  # until the limit refuses a fork
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    kids.append(pid)
# what the CLI does when it is refused a thread (seen under fork bombs: exit -6), made sure
os.kill(cli, signal.SIGABRT)
time.sleep(60)
EOF"""


async def test_cli_dying_at_the_pids_limit_is_reported_and_the_session_goes_on(
        make_config: Any, api: Any, prefix: str) -> None:
    """The CLI aborts while a tool holds every process id: the turn fails with CLIDied (the
    pids limit named as the likely cause, the exit code kept), the runner kills what the
    dead CLI left, restarts it, and the next turn continues the conversation."""
    api.on("exhaust", tool_use("Bash", {"command": ABORT_AT_THE_LIMIT}), text("unreachable"))
    api.on("again", text("still alive"))
    async with AsyncPool(make_config(resources={"memory": "1g", "cpus": 1,
                                                "pidsLimit": 64})) as pool:
        s = pool.session(session_id=f"aborted-{uuid.uuid4().hex[:8]}",
                         permission_mode="bypassPermissions")
        await s.start()
        with pytest.raises(CLIDied) as info:
            await s.ask("exhaust the pids", timeout=180)
        assert info.value.reason == "pids_limit", info.value
        assert info.value.exit_code == -6, info.value
        assert "resources.pidsLimit" in str(info.value) and "died mid-turn" in str(info.value)
        assert isinstance(info.value, ContainerLost)  # callers catching that still do
        result = await s.ask("again?", timeout=120)
        assert result.text == "still alive"
        # the restarted CLI resumed the same conversation: the model saw the earlier prompt
        assert any("exhaust the pids" in str(m.get("content"))
                   for m in api.message_requests[-1].messages)
        await s.close(forget=True)


HOGS = ("for i in 1 2 3 4 5 6 7 8; do python3 -c \"import time; b = b'x' * (60 << 20); "
        "time.sleep(15)\" & done; wait; echo hogs done")


async def test_memory_over_the_limit_is_a_typed_error(make_config: Any, api: Any,
                                                      docker_client: Any, prefix: str) -> None:
    """The agent's tools allocate past the memory limit (8 x 60 MB next to the CLI's ~120 MB
    in 512 MB): the kernel kills the biggest process, the CLI, and the caller gets
    ContainerLost saying "out of memory"; the session then goes on: the CLI restarts and
    what its tools left running (the hogs would hold their memory for 15 s more) is killed."""
    api.on("allocate", tool_use("Bash", {"command": HOGS}), text("allocated"))
    api.on("after", text("after the oom"))
    async with AsyncPool(make_config(resources={"memory": "512m", "cpus": 1})) as pool:
        s = pool.session(permission_mode="bypassPermissions")
        await s.start()
        c = container_of(docker_client, prefix, s)
        assert c.attrs["HostConfig"]["Memory"] == 512 * 1024 * 1024
        assert c.attrs["HostConfig"]["MemorySwap"] == 512 * 1024 * 1024  # no swap to hide in
        with pytest.raises(ContainerLost) as info:
            await s.ask("allocate a lot", timeout=180)
        assert "out of memory" in str(info.value), info.value
        result = await s.ask("and after?", timeout=180)
        assert result.text == "after the oom"
        await s.close(forget=True)


async def test_container_killed_for_memory_is_container_lost_out_of_memory(
        make_config: Any, api: Any, docker_client: Any, prefix: str) -> None:
    """When the memory limit takes the whole container down (the kernel's victim is its init
    process), the pool reports ContainerLost "out of memory" (Docker's OOMKilled) and the next
    prompt resumes in a new container. The OOM killer picks by size; the test points it at
    PID 1 (oom_score_adj, from a root ``docker exec``: init is not the agent's to touch)."""
    hog = ("python3 -c \"import time; "
           "b = b'x' * (700 << 20); time.sleep(5)\"; echo survived")
    api.on("allocate", tool_use("Bash", {"command": hog}), text("should not get here"))
    api.on("after", text("resumed after the oom"))
    async with AsyncPool(make_config(resources={"memory": "512m", "cpus": 1})) as pool:
        s = pool.session(permission_mode="bypassPermissions")
        await s.start()
        first = s.lease
        code, out = sh(container_of(docker_client, prefix, s),
                       "echo 1000 > /proc/1/oom_score_adj")
        assert code == 0, out
        with pytest.raises(ContainerLost) as info:
            await s.ask("allocate a lot", timeout=180)
        assert "out of memory (killed by the memory limit)" in str(info.value), info.value
        result = await s.ask("and after?", timeout=180)
        assert result.text == "resumed after the oom"
        assert s.lease is not None and first is not None and s.lease.container != first.container
        await s.close(forget=True)
