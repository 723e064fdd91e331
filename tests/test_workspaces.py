"""Workspaces (issue 16): host folders and named volumes at /workspace, ``session.files`` and
``session.run`` in the session's own container as the agent, paths confined to the workspace.

Real Docker, real CLI, scripted API. The agent's own Bash (a scripted ``tool_use``) plants
what an untrusted agent would: symlinks out, a sparse giant file.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from dockercc.client import AsyncPool
from dockercc.errors import (
    ArchiveRefused,
    CommandTimeout,
    ConfigError,
    FileNotFoundInWorkspace,
    PathEscape,
    WorkspaceError,
)
from dockercc.files import workspace_path
from dockercc.pool.backend import LABEL
from dockercc.testing import text, tool_use

AGENT_UID = 1000


def agent_owned(path: Path) -> Path:
    """The tests run as root: hand the folder to the container's agent uid (what a user does
    with ``chown`` or ``docker.user: "$(id -u):$(id -g)"``, see docs/workspaces.md)."""
    for root, dirs, files in os.walk(path):
        for n in [root, *(os.path.join(root, d) for d in dirs),
                  *(os.path.join(root, f) for f in files)]:
            os.chown(n, AGENT_UID, AGENT_UID)
    return path


@pytest.fixture
def volume_name(docker_client: Any) -> Iterator[str]:
    """A unique workspace volume, removed after the test (and checked to be)."""
    name = f"dockercc-test-ws-{uuid.uuid4().hex[:10]}"
    yield name
    import docker.errors

    try:
        docker_client.volumes.get(name).remove(force=True)
    except docker.errors.NotFound:
        pass
    assert not docker_client.volumes.list(filters={"name": name})


# -- checked before any container (no Docker needed) ---------------------------------------

def test_bad_workspaces_are_refused_before_any_container(tmp_path: Path) -> None:
    pool = AsyncPool({"redis": {"url": "redis://127.0.0.1:1"}})
    a_file = tmp_path / "f.txt"
    a_file.write_text("x")
    bad = ["relative/dir", f"{tmp_path}/../x", "/", "/etc", "/var/run/docker.sock",
           "/proc/self", str(tmp_path / "missing"), str(a_file), "volume:../x", "volume:",
           "/tmp", "/home"]
    for value in bad:
        with pytest.raises(ConfigError):
            pool.session(workspace=value)
    with pytest.raises(ConfigError):
        pool.session(add_dirs=["/etc"])
    s = pool.session(workspace=f"{tmp_path}:ro", add_dirs=[str(tmp_path)])
    assert s.workspace_mount is not None and s.workspace_mount.read_only
    assert s.add_dir_mounts[0].target.startswith("/mnt/dirs/") and s.add_dir_mounts[0].read_only
    assert "--add-dir" in s.cli_args()
    spec = s.spec()
    assert spec.mounts[0][2] == "/workspace" and spec.key() != pool.session().spec().key()
    v = pool.session(workspace="volume:my-data")
    assert v.workspace_mount is not None and v.workspace_mount.kind == "volume"


def test_workspace_paths_are_checked_lexically() -> None:
    assert workspace_path("a/./b/") == "a/b"
    assert workspace_path(".") == ""
    for bad in ("/etc/passwd", "../x", "a/../../b", "a\0b", "/workspace/x"):
        with pytest.raises(PathEscape):
            workspace_path(bad)


# -- in real containers --------------------------------------------------------------------

@pytest.mark.docker
async def test_files_and_run_in_a_host_folder(make_config: Any, api: Any, tmp_path: Path,
                                              docker_client: Any) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "README.md").write_text("hello\n")
    agent_owned(repo)
    plant = ("echo from-agent > made.txt; ln -s /run/dockercc out; ln -s /etc etc-link; "
             "mkdir -p sub; ln -s /etc/passwd sub/pw; truncate -s 2G big.bin; mkfifo fifo; "
             "echo planted")
    api.script(tool_use("Bash", {"command": plant}), text("done"))
    async with AsyncPool(make_config()) as pool:
        s = pool.session(workspace=str(repo), permission_mode="bypassPermissions")
        assert (await s.ask("plant", timeout=180)).text == "done"
        # what the agent wrote is on the host, as the agent's uid
        assert (repo / "made.txt").read_text() == "from-agent\n"
        assert (repo / "made.txt").stat().st_uid == AGENT_UID
        assert await s.files.read("made.txt") == b"from-agent\n"

        await s.files.write("notes/a.txt", "written by the host")
        assert (repo / "notes" / "a.txt").read_text() == "written by the host"
        names = {i.name: i for i in await s.files.list()}
        assert names["fifo"].type == "other"
        assert names["notes"].type == "dir" and names["big.bin"].size == 2 << 30
        assert names["out"].type == "link"
        await s.files.remove("notes")
        assert not (repo / "notes").exists()
        with pytest.raises(FileNotFoundInWorkspace):
            await s.files.read("nope.txt")
        # a fifo the agent made would block a reader or writer: refused at once
        for op in (s.files.read("fifo"), s.files.write("fifo", "x")):
            with pytest.raises(WorkspaceError):
                await asyncio.wait_for(op, 30)

        # confinement: absolute, '..', and the agent's symlinks leading out
        for bad in ("/etc/passwd", "../etc/passwd", "out/redis", "etc-link/passwd", "sub/pw"):
            with pytest.raises(PathEscape):
                await s.files.read(bad)
        with pytest.raises(PathEscape):
            await s.files.write("etc-link/evil", "x")
        with pytest.raises(PathEscape):
            await s.files.download("out", tmp_path / "dl-out")
        # a folder holding links out: refused while unpacking, nothing written through them
        with pytest.raises(ArchiveRefused):
            await s.files.download("sub", tmp_path / "dl-sub")
        assert not (tmp_path / "dl-sub" / "pw").exists()
        # a tar bomb: 2 GiB of zeros (sparse in the container) against a 1 MiB limit
        with pytest.raises(ArchiveRefused):
            await s.files.download("big.bin", tmp_path / "big.bin", max_bytes=1 << 20)

        # commands: as the agent, in /workspace, with the agent's environment only
        r = await s.run("id -u; pwd; env | grep -c '^DOCKERCC_' || true; cat README.md")
        assert r.exit_code == 0, r
        assert r.stdout.split("\n")[:4] == ["1000", "/workspace", "0", "hello"], r
        r = await s.run(["sh", "-c", "echo oops >&2; exit 3"])
        assert (r.exit_code, r.stderr) == (3, "oops\n")
        with pytest.raises(CommandTimeout) as exc:
            await s.run("echo started; sleep 30", timeout=1)
        assert "started" in exc.value.result.stdout  # type: ignore[attr-defined]
        pieces = [p async for p in s.run_stream("for i in 1 2 3; do echo $i; done")]
        assert b"".join(d for k, d in pieces if k == "stdout") == b"1\n2\n3\n"
        assert pieces[-1] == ("exit", b"0")

        # 64 MiB up and down with flat memory (the 1 GiB figure: benchmarks/files.py)
        blob = tmp_path / "blob.bin"
        with open(blob, "wb") as f:
            for _ in range(64):
                f.write(os.urandom(1 << 20))
        tracemalloc.start()
        try:
            assert await s.files.upload(blob, "data/blob.bin") >= 64 << 20
            back = tmp_path / "back.bin"
            assert await s.files.download("data/blob.bin", back) == 64 << 20
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB for 64 MiB each way"
        assert subprocess.run(["cmp", str(blob), str(back)]).returncode == 0
        # folders both ways
        src = tmp_path / "tree"
        (src / "x" / "y").mkdir(parents=True)
        (src / "x" / "y" / "z.txt").write_text("deep")
        await s.files.upload(src, "tree")
        assert (repo / "tree" / "x" / "y" / "z.txt").read_text() == "deep"
        await s.files.download("tree", tmp_path / "tree-back")
        assert (tmp_path / "tree-back" / "x" / "y" / "z.txt").read_text() == "deep"
        await s.close(forget=True)


@pytest.mark.docker
async def test_a_volume_workspace_survives_kill_and_resume(make_config: Any, api: Any,
                                                           docker_client: Any, prefix: str,
                                                           volume_name: str,
                                                           tmp_path: Path) -> None:
    api.script(tool_use("Bash", {"command": "echo kept > result.txt; echo ok"}), text("wrote"),
               text("still here"), text("resumed"))
    sid = f"ws-{uuid.uuid4().hex[:8]}"
    async with AsyncPool(make_config()) as pool:
        s = pool.session(workspace=f"volume:{volume_name}", session_id=sid,
                         permission_mode="bypassPermissions")
        assert (await s.ask("write", timeout=180)).text == "wrote"
        vol = docker_client.volumes.get(volume_name)
        assert vol.attrs["Labels"].get(LABEL) == "1"
        assert s.lease is not None
        first = s.lease.container
        found = docker_client.containers.list(filters={"label": [
            f"{LABEL}.prefix={prefix}", f"{LABEL}.container={first}"]})
        found[0].kill()
        for _ in range(200):  # the pool notices the loss (health check, Docker events)
            if (await s.state()).get("status") == "lost":
                break
            await asyncio.sleep(0.1)
        # the next turn resumes the conversation in a new container with the same volume
        assert (await s.ask("again", timeout=180)).text == "still here"
        assert s.lease is not None and s.lease.container != first
        assert await s.files.read("result.txt") == b"kept\n"
        # the CLI, from another process: exec and cp both ways
        cfg = tmp_path / "dockercc.yaml"
        cfg.write_text(yaml.safe_dump(make_config()))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE"))}

        def dcc(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run([sys.executable, "-m", "dockercc.cli", "--config", str(cfg),
                                   *args], env=env, capture_output=True, text=True, timeout=120)

        out = await asyncio.to_thread(dcc, "exec", sid, "--", "sh", "-c", "cat result.txt; exit 4")
        assert (out.returncode, out.stdout) == (4, "kept\n"), out.stderr
        out = await asyncio.to_thread(dcc, "cp", f"{sid}:result.txt", str(tmp_path))
        assert out.returncode == 0 and (tmp_path / "result.txt").read_text() == "kept\n", out
        (tmp_path / "up.txt").write_text("from the host")
        out = await asyncio.to_thread(dcc, "cp", str(tmp_path / "up.txt"), f"{sid}:in/up.txt")
        assert out.returncode == 0, out.stderr
        assert await s.files.read_text("in/up.txt") == "from the host"
        await s.close()
    # a new pool (another process would be the same: all state is in Redis and the volume)
    async with AsyncPool(make_config()) as pool:
        s = pool.session(workspace=f"volume:{volume_name}", resume=sid,
                         permission_mode="bypassPermissions")
        assert (await s.ask("back?", timeout=180)).text == "resumed"
        assert (await s.run("cat result.txt")).stdout == "kept\n"
        await s.close(forget=True)


@pytest.mark.docker
def test_notebook_magics_list_upload_and_download(make_config: Any, api: Any,
                                                  tmp_path: Path, monkeypatch: Any) -> None:
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    import dockercc.jupyter as dj

    monkeypatch.chdir(tmp_path)
    (tmp_path / "local.txt").write_text("from the notebook")
    ip = InteractiveShell.instance()
    assert ip.run_cell("%load_ext dockercc").success
    dj.configure(make_config(), display="none")
    try:
        def magic(line: str) -> Any:
            with capture_output():
                result = ip.run_cell(line, store_history=True)
            assert result.success, result.error_in_exec
            return ip.user_ns.get("_")

        magic("%dockercc --no-display hello")
        magic("%dockercc upload local.txt notes/local.txt")
        rows = magic("%dockercc files").data
        assert [(r["name"], r["type"]) for r in rows] == [("notes", "dir")]
        rows = magic("%dockercc files notes").data
        assert [(r["name"], r["size"]) for r in rows] == [("local.txt", 17)]
        magic("%dockercc download notes/local.txt back.txt")
        assert (tmp_path / "back.txt").read_text() == "from the notebook"
    finally:
        dj.shutdown()
        ip.run_cell("%unload_ext dockercc")


RESUME_ELSEWHERE = """
import sys, yaml
from dockercc.sync import Pool
with Pool(yaml.safe_load(open(sys.argv[1]))) as pool:
    s = pool.session(resume=sys.argv[2], permission_mode="bypassPermissions")
    print(s.ask("back?", timeout=180).text)
    print(s.run("cat s.txt").stdout, end="")
    s.close()
"""


@pytest.mark.docker
async def test_scratch_workspace_survives_kill_and_resume_in_a_new_process_by_default(
        make_config: Any, api: Any, docker_client: Any, prefix: str, tmp_path: Path) -> None:
    """The must-show of issue 16 with the DEFAULT config: no ``workspace=``, no
    ``scratchVolumes`` setting. The agent's file survives ``docker kill`` of its container
    and is there after ``resume=`` in another process; the volume goes with the session."""
    from dockercc.files import sweep_scratch_volumes

    def scratch_volumes() -> set[str]:
        return {v.name for v in docker_client.volumes.list(filters={"label": [
            f"{LABEL}.workspace=scratch", f"{LABEL}.prefix={prefix}"]})}

    api.script(tool_use("Bash", {"command": "echo scratch > s.txt; echo ok"}), text("wrote"),
               text("after the kill"), text("resumed"), text("once more"))
    sid = f"scr-{uuid.uuid4().hex[:8]}"
    cfg = make_config()
    assert "scratchVolumes" not in cfg.get("docker", {})
    config_file = tmp_path / "dockercc.yaml"
    config_file.write_text(yaml.safe_dump(cfg))
    try:
        async with AsyncPool(cfg) as pool:
            await pool.warm("main", count=1, timeout=120)
            s = pool.session(session_id=sid, permission_mode="bypassPermissions")
            assert (await s.ask("write", timeout=180)).text == "wrote"
            assert s.lease is not None and s.lease.warm  # a scratch session stays warm
            volume = f"dockercc-ws-{s.lease.container}"
            assert s.workspace_mount is not None and s.workspace_mount.source == volume
            labels = docker_client.volumes.get(volume).attrs["Labels"]
            assert labels[f"{LABEL}.prefix"] == prefix and labels[f"{LABEL}.owner"]
            docker_client.containers.list(filters={"label": [
                f"{LABEL}.prefix={prefix}", f"{LABEL}.container={s.lease.container}"]})[0].kill()
            for _ in range(200):
                if (await s.state()).get("status") == "lost":
                    break
                await asyncio.sleep(0.1)
            assert (await s.ask("again", timeout=180)).text == "after the kill"
            assert s.lease is not None and volume != f"dockercc-ws-{s.lease.container}"
            assert await s.files.read("s.txt") == b"scratch\n"
            await s.close()  # resumable: its volume stays, gc keeps it
            assert await sweep_scratch_volumes(pool.containers) == 0
            assert volume in scratch_volumes()
        # resume= in another process: a new pool, a new container, the same volume
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ANTHROPIC_", "CLAUDE"))}
        out = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", RESUME_ELSEWHERE, str(config_file), sid],
            env=env, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        assert out.stdout.splitlines() == ["resumed", "scratch"], out.stdout
        assert volume in scratch_volumes()  # closed again, still resumable
        async with AsyncPool(cfg) as pool:
            s = pool.session(resume=sid, permission_mode="bypassPermissions")
            assert (await s.ask("and here?", timeout=180)).text == "once more"
            assert (await s.run("cat s.txt")).stdout == "scratch\n"
            await s.close(forget=True)  # deleted: its volume goes
            assert volume not in scratch_volumes()
            # left behind (a pool killed between create and claim): nobody keeps it
            orphan = f"dockercc-ws-orphan{uuid.uuid4().hex[:8]}"
            docker_client.volumes.create(orphan, labels={
                LABEL: "1", f"{LABEL}.workspace": "scratch", f"{LABEL}.prefix": prefix})
            assert await sweep_scratch_volumes(pool.containers) == 1
            assert orphan not in scratch_volumes()
        # the warm containers' own volumes (never claimed) went with them
        assert not scratch_volumes()
    finally:
        for name in scratch_volumes():
            docker_client.volumes.get(name).remove(force=True)


@pytest.mark.docker
async def test_scratch_volumes_off_is_a_tmpfs_lost_with_the_container(
        make_config: Any, api: Any, docker_client: Any, prefix: str) -> None:
    """The opt-out (``docker.scratchVolumes: false``): a tmpfs, no volume, nothing kept."""
    api.script(tool_use("Bash", {"command": "echo gone > t.txt; echo ok"}), text("wrote"),
               text("after the kill"))
    async with AsyncPool(make_config(docker={"scratchVolumes": False})) as pool:
        s = pool.session(permission_mode="bypassPermissions")
        assert (await s.ask("write", timeout=180)).text == "wrote"
        assert s.lease is not None and s.workspace_mount is None
        assert "tmpfs" in (await s.run("stat -f -c %T /workspace")).stdout
        assert not docker_client.volumes.list(filters={"label": [
            f"{LABEL}.workspace=scratch", f"{LABEL}.prefix={prefix}"]})
        docker_client.containers.list(filters={"label": [
            f"{LABEL}.prefix={prefix}", f"{LABEL}.container={s.lease.container}"]})[0].kill()
        for _ in range(200):
            if (await s.state()).get("status") == "lost":
                break
            await asyncio.sleep(0.1)
        assert (await s.ask("again", timeout=180)).text == "after the kill"
        assert not await s.files.exists("t.txt")  # the trade-off: lost with its container
        await s.close(forget=True)


def test_the_turn_view_lists_the_files_the_agent_wrote() -> None:
    from dockercc.events import ToolResult, ToolUse
    from dockercc.jupyter import render
    from dockercc.jupyter.state import TurnState

    state = TurnState(session="s1")
    for ev in [ToolUse(id="1", name="Write", input={"file_path": "/workspace/REPORT.md"}),
               ToolResult(tool_use_id="1", content="ok", tool_name="Write"),
               ToolUse(id="2", name="Edit", input={"file_path": "/workspace/src/a<b>.py"}),
               ToolResult(tool_use_id="2", content="ok", tool_name="Edit"),
               ToolUse(id="3", name="Write", input={"file_path": "/etc/x"}),
               ToolResult(tool_use_id="3", content="ok", tool_name="Write"),
               ToolUse(id="4", name="Write", input={"file_path": "/workspace/failed.txt"}),
               ToolResult(tool_use_id="4", content="denied", is_error=True, tool_name="Write"),
               ToolUse(id="5", name="Read", input={"file_path": "/workspace/README.md"}),
               ToolResult(tool_use_id="5", content="..", tool_name="Read")]:
        state.feed(ev)
    assert state.written_files == ["REPORT.md", "src/a<b>.py"]
    html = render.turn_html(state)
    assert "%dockercc download REPORT.md" in html and "a&lt;b&gt;.py" in html
    assert "failed.txt" not in html.split("files written")[1]
