"""A session's workspace from the host: files in and out, commands in its own container.

One module on purpose (~650 lines): every workspace operation runs through the same
exec-as-the-agent path (``_Exec``), whose safety arguments are made once, here.

Everything runs through ``docker exec`` in the session's container **as the agent's user**
(uid 1000 by default), never as the root runner and never through Docker's archive API (which
resolves paths as root over the whole container: a symlink the agent planted in
``/workspace`` would lead it to ``/run/dockercc``, where the runner's Redis secret lives). So
the host's file operations can reach only what the agent itself can reach, and on top of
that every path is confined to ``/workspace``:

- lexically on the host: no absolute path, no ``..``, no NUL (:class:`PathEscape`);
- in the container, as the agent: ``realpath`` of the path must stay under ``/workspace``
  (a symlink leading out is refused, exit code :data:`_ESCAPE`);
- a tar stream from the container is unpacked on the host member by member: absolute
  names, ``..``, links leading out of the destination, devices, and more than ``max_bytes``
  / ``max_members`` (a tar bomb) raise :class:`ArchiveRefused`.

Processes started this way get the agent's environment: the container's minus every
``DOCKERCC_*`` variable (``env -u`` runs as root, before ``setpriv`` drops to the agent, so
no process of the agent's uid ever holds the runner's variables). Data streams in both
directions in chunks (docker's multiplexed exec stream): memory stays flat for any size.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import shlex
import socket
import stat
import struct
import tarfile
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import (
    ArchiveRefused,
    CommandTimeout,
    FileNotFoundInWorkspace,
    PathEscape,
    WorkspaceError,
)
from .workspace import WORKSPACE

if TYPE_CHECKING:
    from .session import AsyncSession

__all__ = ["AsyncFiles", "CommandResult", "FileInfo", "workspace_path"]

CHUNK = 1 << 16
_ESCAPE = 97
_MISSING = 98
_NOT_FILE = 96
_STDERR_KEEP = 64 * 1024
DEFAULT_MAX_BYTES = 64 << 30
DEFAULT_MAX_MEMBERS = 200_000
DEFAULT_READ_MAX = 256 << 20
IDLE_TIMEOUT_S = 600.0
"""A file operation whose stream is silent this long fails (``WorkspaceError``)."""

# resolve "$1" under /workspace as the agent; refuse what leads out (symlinks included)
_RESOLVE = ('p=$(realpath -m -- "/workspace/$1") || exit 97; case "$p" in /workspace|'
            '/workspace/*) ;; *) echo "leads out of the workspace" >&2; exit 97;; esac; ')


@dataclass(frozen=True)
class CommandResult:
    """What :meth:`AsyncSession.run` returns. ``stdout``/``stderr`` are decoded (UTF-8,
    replacement characters for bad bytes)."""

    stdout: str
    stderr: str
    exit_code: int

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


@dataclass(frozen=True)
class FileInfo:
    """One entry of :meth:`AsyncFiles.list`: ``type`` is ``file``, ``dir``, ``link`` or
    ``other``; ``path`` is relative to the workspace."""

    name: str
    path: str
    type: str
    size: int
    mtime: float


def workspace_path(path: str | os.PathLike[str]) -> str:
    """``path`` checked lexically and made relative to ``/workspace`` (``""`` is the
    workspace itself). Raises :class:`PathEscape`."""
    raw = os.fspath(path)
    if "\0" in raw:
        raise PathEscape(f"workspace path {raw!r} holds a NUL byte")
    if raw.startswith("/"):
        raise PathEscape(f"workspace path {raw!r} is absolute: give it relative to the "
                         f"workspace (/workspace)")
    parts = [p for p in raw.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise PathEscape(f"workspace path {raw!r} holds '..'")
    return "/".join(parts)


async def exec_target(client: Any, container: str, *, user: str, isolate_runner: bool
                      ) -> tuple[Any, str, str, list[str]]:
    """(client, container, exec user, argv prefix) to run something in ``container`` as the
    agent (``user``, e.g. ``1000:1000``) with the agent's environment."""
    from .agent.early import agent_env

    attrs = await asyncio.to_thread(client.api.inspect_container, container)
    env = dict(e.split("=", 1) for e in (attrs.get("Config") or {}).get("Env") or []
               if "=" in e)
    keep = agent_env(env)
    unset = [arg for k in sorted(env) if k not in keep for arg in ("-u", k)]
    if isolate_runner:
        # env runs as root and drops the runner's variables before setpriv becomes the
        # agent: no process of the agent's uid ever holds them
        uid, _, gid = user.partition(":")
        return (client, container, "0:0", ["env", *unset, "setpriv", f"--reuid={uid}",
                                           f"--regid={gid or uid}", "--clear-groups", "--"])
    return (client, container, user, ["env", *unset])


class ContainerWorkspace:
    """The workspace of a container found by name (``dockercc cp`` / ``exec`` from another
    process than the session's): what :class:`AsyncFiles` and :func:`run_command` need."""

    _turn_open = False

    def __init__(self, client: Any, container: str, *, user: str = "1000:1000") -> None:
        self.client = client
        self.container = container
        self.user = user
        self._target: tuple[Any, str, str, list[str]] | None = None

    async def _exec_target(self) -> tuple[Any, str, str, list[str]]:
        if self._target is None:
            attrs = await asyncio.to_thread(self.client.api.inspect_container, self.container)
            isolated = (attrs.get("Config") or {}).get("User") in ("0:0", "0", "root")
            self._target = await exec_target(self.client, attrs["Id"], user=self.user,
                                             isolate_runner=isolated)
        return self._target

    @property
    def files(self) -> AsyncFiles:
        return AsyncFiles(self)  # type: ignore[arg-type]


class _Exec:
    """One ``docker exec`` with its raw, multiplexed socket (blocking; used in a thread)."""

    def __init__(self, client: Any, container: str, argv: list[str], *, user: str,
                 stdin: bool, workdir: str = WORKSPACE) -> None:
        self.api = client.api
        try:
            self.id = self.api.exec_create(container, argv, stdin=stdin, stdout=True,
                                           stderr=True, user=user, workdir=workdir)["Id"]
            sock = self.api.exec_start(self.id, socket=True)
        except Exception as exc:
            raise WorkspaceError(f"docker exec in the session's container failed: "
                                 f"{getattr(exc, 'explanation', None) or exc}") from exc
        self.sock: socket.socket = getattr(sock, "_sock", sock)
        # a stalled container (or an agent holding a lock) must not hang the host forever
        self.sock.settimeout(IDLE_TIMEOUT_S)
        self._buf = b""
        self.stderr = bytearray()
        self._eof = False

    def send_all(self, chunks: Iterator[bytes]) -> None:
        try:
            for chunk in chunks:
                self.sock.sendall(chunk)
        finally:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_WR)

    def _recv_exact(self, n: int) -> bytes:
        while len(self._buf) < n:
            data = self.sock.recv(max(CHUNK, n - len(self._buf)))
            if not data:
                raise EOFError
            self._buf += data
        out, self._buf = self._buf[:n], self._buf[n:]
        return out

    def frames(self) -> Iterator[tuple[int, bytes]]:
        """``(stream, data)``: 1 stdout, 2 stderr (docker's 8-byte frame headers)."""
        while not self._eof:
            try:
                head = self._recv_exact(8)
            except EOFError:
                self._eof = True
                return
            kind, size = head[0], struct.unpack(">I", head[4:8])[0]
            remaining = size
            while remaining:
                piece = self._recv_exact(min(CHUNK, remaining))
                remaining -= len(piece)
                yield kind, piece

    def stdout_chunks(self) -> Iterator[bytes]:
        for kind, data in self.frames():
            if kind == 2:
                if len(self.stderr) < _STDERR_KEEP:
                    self.stderr += data[: _STDERR_KEEP - len(self.stderr)]
            else:
                yield data

    def exit_code(self) -> int:
        for _ in range(100):
            info = self.api.exec_inspect(self.id)
            if not info.get("Running"):
                return int(info.get("ExitCode") or 0)
            threading.Event().wait(0.02)
        return -1

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class _Reader:
    """stdout of an exec as a file object for :mod:`tarfile`'s stream mode."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._it = chunks
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        while n < 0 or len(self._buf) < n:
            try:
                self._buf += next(self._it)
            except StopIteration:
                break
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out


class AsyncFiles:
    """``session.files``: the session's ``/workspace`` from the host (see the module doc).

    Every method claims the session's container first if it has none yet; all paths are
    relative to the workspace."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    # -- plumbing ------------------------------------------------------------------------

    async def _target(self) -> tuple[Any, str, str, list[str]]:
        """(docker client, container id, exec user, argv prefix that drops to the agent)."""
        return await self.session._exec_target()

    async def _run_script(self, script: str, *args: str, stdin: Iterator[bytes] | None = None,
                          sink: Callable[[bytes], None] | None = None) -> tuple[bytes, int, str]:
        client, cid, user, prefix = await self._target()

        def work() -> tuple[bytes, int, str]:
            ex = _Exec(client, cid, [*prefix, "sh", "-c", script, "sh", *args], user=user,
                       stdin=stdin is not None)
            try:
                writer = None
                if stdin is not None:
                    writer = threading.Thread(target=ex.send_all, args=(stdin,), daemon=True)
                    writer.start()
                out = bytearray()
                for chunk in ex.stdout_chunks():
                    if sink is not None:
                        sink(chunk)
                    elif len(out) <= DEFAULT_READ_MAX:
                        out += chunk
                if writer is not None:
                    writer.join()
                return bytes(out), ex.exit_code(), ex.stderr.decode(errors="replace")
            finally:
                ex.close()

        try:
            return await asyncio.to_thread(work)
        except TimeoutError as exc:
            raise WorkspaceError(f"no data from the container for {IDLE_TIMEOUT_S:.0f}s") \
                from exc

    @staticmethod
    def _check(code: int, err: str, path: str, what: str) -> None:
        if code == _ESCAPE:
            raise PathEscape(f"workspace path {path!r} leads out of the workspace")
        if code == _MISSING:
            raise FileNotFoundInWorkspace(f"{path!r} is not in the workspace")
        if code == _NOT_FILE:
            raise WorkspaceError(f"{path!r} is not a regular file ({what})")
        if code != 0:
            raise WorkspaceError(f"{what} {path!r} failed (exit {code}): {err.strip()[:500]}")

    # -- the API -----------------------------------------------------------------------------

    async def write(self, path: str, data: bytes | str) -> None:
        """Write a file (parents created), as the agent's user."""
        rel = workspace_path(path)
        if not rel:
            raise PathEscape("cannot write the workspace itself")
        blob = data.encode() if isinstance(data, str) else bytes(data)
        chunks = (blob[i:i + CHUNK] for i in range(0, len(blob), CHUNK))
        _, code, err = await self._run_script(
            # only a regular file is replaced: a fifo the agent put there would block the host
            _RESOLVE + '[ -e "$p" ] && [ ! -f "$p" ] && exit 96; mkdir -p -- "$(dirname -- '
            '"$p")" && exec cat > "$p"', rel, stdin=chunks)
        self._check(code, err, path, "write")

    async def read(self, path: str, *, max_bytes: int = DEFAULT_READ_MAX) -> bytes:
        """A file's bytes (up to ``max_bytes``; use :meth:`download` for big files)."""
        rel = workspace_path(path)
        out, code, err = await self._run_script(
            _RESOLVE + '[ -e "$p" ] || exit 98; [ -f "$p" ] || exit 96; '
            f'exec head -c {int(max_bytes) + 1} -- "$p"', rel)
        self._check(code, err, path, "read")
        if len(out) > max_bytes:
            raise WorkspaceError(f"{path!r} is larger than max_bytes={max_bytes}; "
                                 f"use files.download()")
        return out

    async def read_text(self, path: str, encoding: str = "utf-8") -> str:
        return (await self.read(path)).decode(encoding, errors="replace")

    async def list(self, path: str = "") -> list[FileInfo]:
        """The entries of a folder (not recursive), sorted by name."""
        rel = workspace_path(path)
        out, code, err = await self._run_script(
            _RESOLVE + '[ -e "$p" ] || exit 98; [ -d "$p" ] || exit 96; '
            "exec find \"$p\" -mindepth 1 -maxdepth 1 -printf '%y\\t%s\\t%T@\\t%f\\0'", rel)
        self._check(code, err, path, "list")
        kinds = {"f": "file", "d": "dir", "l": "link"}
        items = []
        for rec in out.split(b"\0"):
            if not rec:
                continue
            kind, size, mtime, name = rec.decode(errors="replace").split("\t", 3)
            items.append(FileInfo(name=name, path=posixpath.join(rel, name) if rel else name,
                                  type=kinds.get(kind, "other"), size=int(size),
                                  mtime=float(mtime)))
        return sorted(items, key=lambda i: i.name)

    async def exists(self, path: str) -> bool:
        rel = workspace_path(path)
        _, code, err = await self._run_script(_RESOLVE + '[ -e "$p" ] || exit 98', rel)
        if code == _MISSING:
            return False
        self._check(code, err, path, "exists")
        return True

    async def remove(self, path: str) -> None:
        """Remove a file or a folder (recursively). The workspace itself cannot be removed."""
        rel = workspace_path(path)
        if not rel:
            raise PathEscape("cannot remove the workspace itself")
        # the path itself, not what a symlink at it points to (rm never follows it)
        _, code, err = await self._run_script(
            'd=$(realpath -m -- "/workspace/$(dirname -- "$1")") || exit 97; case "$d" in '
            '/workspace|/workspace/*) ;; *) exit 97;; esac; p="$d/$(basename -- "$1")"; '
            '[ -e "$p" ] || [ -L "$p" ] || exit 98; exec rm -rf -- "$p"', rel)
        self._check(code, err, path, "remove")

    async def upload(self, local: str | os.PathLike[str], remote: str) -> int:
        """Copy a host file or folder into the workspace at ``remote`` (a folder's content
        goes into ``remote``). Streams a tar: memory stays flat. Returns the bytes sent."""
        src = Path(local)
        rel = workspace_path(remote)
        kind = await asyncio.to_thread(lambda: src.is_dir() if src.exists() else None)
        if kind is None:
            raise FileNotFoundError(f"{src} does not exist")
        sent = [0]
        client, cid, user, prefix = await self._target()
        is_dir = bool(kind)
        if not is_dir and not rel:
            raise PathEscape("upload of a file needs a file name in the workspace")
        dest = rel if is_dir else posixpath.dirname(rel)
        name = posixpath.basename(rel)
        script = (_RESOLVE + '[ -e "$p" ] && [ ! -d "$p" ] && exit 96; mkdir -p -- "$p" && '
                  'exec tar -C "$p" -xf - --no-same-owner --no-same-permissions '
                  '--no-overwrite-dir')

        def work() -> tuple[int, str]:
            ex = _Exec(client, cid, [*prefix, "sh", "-c", script, "sh", dest], user=user,
                       stdin=True)
            try:
                def feed() -> None:
                    counting = _Counting(ex.sock, sent)
                    try:
                        with tarfile.open(fileobj=counting, mode="w|",  # type: ignore[call-overload]
                                          bufsize=CHUNK) as tar:
                            if is_dir:
                                for entry in sorted(src.rglob("*")):
                                    tar.add(entry, arcname=entry.relative_to(src).as_posix(),
                                            recursive=False)
                            else:
                                tar.add(src, arcname=name)
                    except OSError:
                        pass  # the container closed its end: its exit code says why
                    finally:
                        with contextlib.suppress(OSError):
                            ex.sock.shutdown(socket.SHUT_WR)

                writer = threading.Thread(target=feed, daemon=True)
                writer.start()
                for _ in ex.stdout_chunks():
                    pass
                writer.join()
                return ex.exit_code(), ex.stderr.decode(errors="replace")
            finally:
                ex.close()

        code, err = await asyncio.to_thread(work)
        self._check(code, err, remote, "upload")
        return sent[0]

    async def download(self, remote: str, local: str | os.PathLike[str], *,
                       max_bytes: int = DEFAULT_MAX_BYTES,
                       max_members: int = DEFAULT_MAX_MEMBERS) -> int:
        """Copy a workspace file or folder to the host (a folder's content goes into
        ``local``, created). Streams a tar and checks every member (see the module doc).
        Returns the bytes written."""
        rel = workspace_path(remote)
        dest = Path(local)
        client, cid, user, prefix = await self._target()
        script = (_RESOLVE + '[ -e "$p" ] || exit 98; '
                  'exec tar -C "$(dirname -- "$p")" -cf - -- "$(basename -- "$p")"')

        def work() -> tuple[int, int, str]:
            ex = _Exec(client, cid, [*prefix, "sh", "-c", script, "sh", rel], user=user,
                       stdin=False)
            try:
                chunks = ex.stdout_chunks()
                try:
                    written = _extract(_Reader(chunks), dest, max_bytes, max_members)
                except (tarfile.TarError, EOFError) as exc:
                    for _ in chunks:  # let tar finish; its exit code may say more
                        pass
                    code = ex.exit_code()
                    if code:
                        return 0, code, ex.stderr.decode(errors="replace")
                    raise ArchiveRefused(f"download of {remote!r}: bad tar stream ({exc})") \
                        from exc
                return written, ex.exit_code(), ex.stderr.decode(errors="replace")
            finally:
                ex.close()

        written, code, err = await asyncio.to_thread(work)
        self._check(code, err, remote, "download")
        return written


class _Counting:
    def __init__(self, sock: socket.socket, counter: list[int]) -> None:
        self.sock = sock
        self.counter = counter

    def write(self, data: bytes) -> int:
        self.sock.sendall(data)
        self.counter[0] += len(data)
        return len(data)


def _inside(root: Path, path: Path) -> bool:
    return path == root or root in path.parents


def _extract(fileobj: Any, dest: Path, max_bytes: int, max_members: int) -> int:
    """Unpack a tar stream whose single top-level entry becomes ``dest`` (a file, or a
    folder whose content lands in ``dest``). Streams: no member is held in memory."""
    written = 0
    members = 0
    dest = dest.absolute()
    root_real: Path | None = None
    with tarfile.open(fileobj=fileobj, mode="r|") as tar:
        for m in tar:
            members += 1
            if members > max_members:
                raise ArchiveRefused(f"more than max_members={max_members} entries (tar bomb?)")
            name = m.name
            if name.startswith("/") or ".." in name.split("/"):
                raise ArchiveRefused(f"tar member {name!r}: absolute or holds '..'")
            parts = [p for p in name.split("/") if p not in ("", ".")]
            if not parts:
                continue
            target = dest.joinpath(*parts[1:]) if len(parts) > 1 else dest
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
                if root_real is None:
                    root_real = Path(os.path.realpath(dest))
                continue
            if root_real is None:
                dest.parent.mkdir(parents=True, exist_ok=True)
                root_real = Path(os.path.realpath(dest if dest.is_dir() else dest.parent))
            parent_real = Path(os.path.realpath(target.parent))
            if not _inside(root_real, parent_real):
                raise ArchiveRefused(f"tar member {name!r} leads out of {dest}")
            if m.issym() or m.islnk():
                link = m.linkname
                base = parent_real if m.issym() else root_real
                resolved = Path(os.path.normpath(base / link)) if not link.startswith("/") \
                    else Path(link)
                if m.islnk():
                    lparts = [p for p in link.split("/") if p not in ("", ".")]
                    resolved = root_real.joinpath(*lparts[1:])
                if link.startswith("/") or not _inside(root_real, resolved):
                    raise ArchiveRefused(f"tar member {name!r} links out ({link!r})")
                with contextlib.suppress(FileNotFoundError):
                    target.unlink()
                if m.issym():
                    os.symlink(link, target)
                else:
                    os.link(resolved, target)
                continue
            if not m.isfile():
                raise ArchiveRefused(f"tar member {name!r} is a device or fifo")
            if written + m.size > max_bytes:
                raise ArchiveRefused(f"download exceeds max_bytes={max_bytes} (tar bomb?)")
            src = tar.extractfile(m)
            if src is None:
                continue
            with contextlib.suppress(FileNotFoundError):
                if target.is_symlink():
                    target.unlink()
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW,
                         stat.S_IMODE(m.mode) & 0o755 | 0o600)
            with os.fdopen(fd, "wb") as out:
                while True:
                    piece = src.read(CHUNK)
                    if not piece:
                        break
                    out.write(piece)
                    written += len(piece)
    return written


async def run_command(session: AsyncSession, cmd: str | list[str], *, timeout: float,
                      cwd: str, env: dict[str, str] | None,
                      on_output: Callable[[str, bytes], None] | None) -> CommandResult:
    """``session.run``'s body: the command as the agent, killed after ``timeout`` s."""
    client, cid, user, prefix = await session._exec_target()
    rel = workspace_path(cwd) if cwd not in ("", ".", WORKSPACE) else ""
    argv = ["sh", "-c", cmd] if isinstance(cmd, str) else list(cmd)
    extra = [f"{k}={v}" for k, v in (env or {}).items()]
    # timeout(1) inside: the kill reaches the command's whole tree; the host waits a bit more
    full = [*prefix, *(["env", *extra] if extra else []), "timeout", "--kill-after=2",
            f"{max(timeout, 0.001):.3f}", *argv]
    workdir = posixpath.join(WORKSPACE, rel) if rel else WORKSPACE
    out = bytearray()
    err = bytearray()
    limit = 16 << 20

    def work() -> int:
        ex = _Exec(client, cid, full, user=user, stdin=False, workdir=workdir)
        ex.sock.settimeout(timeout + 10)
        try:
            for kind, data in ex.frames():
                buf = err if kind == 2 else out
                if len(buf) < limit:
                    buf += data[: limit - len(buf)]
                if on_output is not None:
                    on_output("stderr" if kind == 2 else "stdout", data)
            return ex.exit_code()
        except TimeoutError:
            return 124
        finally:
            ex.close()

    code = await asyncio.to_thread(work)
    result = CommandResult(out.decode(errors="replace"), err.decode(errors="replace"), code)
    if code in (124, 137) and timeout is not None:
        raise CommandTimeout(f"command did not finish within {timeout}s: "
                             f"{shlex.join(argv)[:200]}", result)
    return result


async def stream_command(session: AsyncSession, cmd: str | list[str], *, timeout: float,
                         cwd: str, env: dict[str, str] | None
                         ) -> AsyncIterator[tuple[str, bytes]]:
    """``("stdout"|"stderr", bytes)`` pieces as the command prints them, then
    ``("exit", b"<code>")``."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, bytes] | None] = asyncio.Queue(maxsize=256)

    def put(kind: str, data: bytes) -> None:
        asyncio.run_coroutine_threadsafe(queue.put((kind, data)), loop).result()

    async def go() -> CommandResult | BaseException:
        try:
            return await run_command(session, cmd, timeout=timeout, cwd=cwd, env=env,
                                     on_output=put)
        except BaseException as exc:  # handed to the consumer below
            return exc
        finally:
            await queue.put(None)

    task = asyncio.create_task(go())
    try:
        while (item := await queue.get()) is not None:
            yield item
        res = await task
        if isinstance(res, BaseException):
            raise res
        yield "exit", str(res.exit_code).encode()
    finally:
        if not task.done():
            task.cancel()


async def sweep_scratch_volumes(pool: Any) -> int:
    """Remove scratch workspace volumes (``docker.scratchVolumes``) of this pool's prefix
    that no container uses and no session keeps: never claimed, or their session was
    deleted or expired (a closed session keeps its volume as long as it stays resumable,
    7 days). Returns how many were removed. ``pool`` is a ContainerPool."""
    from .pool.backend import LABEL

    client = getattr(pool.backend, "client", None)
    if client is None:
        return 0
    t = pool.transport
    labels = [f"{LABEL}.workspace=scratch", f"{LABEL}.prefix={t.prefix}"]
    volumes = await asyncio.to_thread(client.volumes.list, filters={"label": labels})
    removed = 0
    for vol in volumes:
        name = vol.name
        used = await asyncio.to_thread(client.containers.list, all=True,
                                       filters={"volume": name})
        if used:
            continue
        owner = await t.sessions.scratch_owner(name)
        if owner is not None:
            if await t.sessions.exists(owner):
                continue  # open, or closed and still resumable
        with contextlib.suppress(Exception):
            await asyncio.to_thread(vol.remove, force=True)
            await t.sessions.drop_scratch(name)
            removed += 1
    return removed
