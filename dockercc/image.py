"""Build the agent image (and, for machines without a registry, an offline base image).

``build_image`` prepares a build context — the Dockerfile, a wheel of the dockercc runner
made from this very package, the runner's run-time wheels, and an optional CA bundle for
TLS-intercepting proxies — and builds it with the Docker engine. The result is labelled with
a content hash of everything that went in; when an image with that tag and hash already
exists, the build is skipped (a second CI run costs nothing). The image also records the base
image and CA bundle it was built with (labels), and a later build that is given neither uses
them again: ``bash scripts/stack.sh up`` sets both once, and a plain ``pytest`` or
``dockercc image build`` afterwards rebuilds from the same inputs (offline, same hash) instead
of falling back to the public base image, which a machine without a registry cannot pull.

``build_base_image`` debootstraps a minimal Debian from apt's own mirror and ``docker
import``s it, for engines that cannot pull ``node:22-bookworm-slim``.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import importlib.metadata
import io
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from .errors import ImageError

DEFAULT_TAG = "clawdbot/docker-cc:latest"
DEFAULT_BASE = "node:22-bookworm-slim"
OFFLINE_BASE_TAG = "dockercc/debian-base:bookworm"
CLAUDE_CODE_VERSION = "2.1.328"
HASH_LABEL = "dev.dockercc.content-hash"
BASE_LABEL = "dev.dockercc.base-image"
CA_LABEL = "dev.dockercc.ca-bundle"  # a path on the building host (public certificates only)
RUNTIME_PACKAGES = ("redis", "pydantic", "pydantic-core", "annotated-types", "typing-extensions",
                    "typing-inspection", "async-timeout")

Progress = Callable[[str], None]

_PKG_DIR = Path(__file__).resolve().parent


def dockerfile_path() -> Path:
    """The agent Dockerfile: packaged copy first, then the source checkout's ``image/``."""
    for candidate in (_PKG_DIR / "_image" / "Dockerfile", _PKG_DIR.parent / "image" / "Dockerfile"):
        if candidate.is_file():
            return candidate
    raise ImageError("the agent Dockerfile is missing from this installation of dockercc")


def _docker_client(base_url: str | None = None) -> Any:
    import docker  # lazy: docker is only needed here and in the pool

    try:
        client = docker.DockerClient(base_url=base_url) if base_url else docker.from_env()
        client.ping()
        return client
    except Exception as exc:  # docker raises several unrelated types here
        raise ImageError(f"cannot reach the Docker engine ({exc}); is dockerd running?") from exc


def _package_files() -> Iterable[tuple[str, bytes]]:
    for path in sorted(_PKG_DIR.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
            yield "dockercc/" + path.relative_to(_PKG_DIR).as_posix(), path.read_bytes()


def _version() -> str:
    try:
        return importlib.metadata.version("dockercc")
    except importlib.metadata.PackageNotFoundError:
        return "0.0.0"


def make_runner_wheel(out_dir: Path) -> Path:
    """Write a pure-Python wheel of this dockercc package (deterministic, no build backend)."""
    version = _version()
    name = f"dockercc-{version}-py3-none-any.whl"
    dist = f"dockercc-{version}.dist-info"
    files = list(_package_files())
    meta = {
        f"{dist}/METADATA": (f"Metadata-Version: 2.1\nName: dockercc\nVersion: {version}\n"
                             "Requires-Python: >=3.11\n").encode(),
        f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: dockercc\nRoot-Is-Purelib: true\n"
                         b"Tag: py3-none-any\n",
    }
    files += list(meta.items())
    record = io.StringIO()
    for arcname, data in files:
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.write(f"{arcname},sha256={digest},{len(data)}\n")
    record.write(f"{dist}/RECORD,,\n")
    path = out_dir / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for arcname, data in [*files, (f"{dist}/RECORD", record.getvalue().encode())]:
            info = zipfile.ZipInfo(arcname, date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, data, zipfile.ZIP_DEFLATED)
    return path


def _pinned_runtime() -> list[str]:
    pins = []
    for pkg in RUNTIME_PACKAGES:
        try:
            pins.append(f"{pkg}=={importlib.metadata.version(pkg)}")
        except importlib.metadata.PackageNotFoundError:
            pins.append(pkg)
    return pins


def _platform_tag() -> str:
    return "manylinux2014_aarch64" if platform.machine() in ("aarch64", "arm64") else \
        "manylinux2014_x86_64"


def download_runtime_wheels(out_dir: Path, progress: Progress | None = None) -> list[Path]:
    """The runner's run-time wheels for the image's CPython 3.11 (cached between builds)."""
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "dockercc" / "wheels"
    cache.mkdir(parents=True, exist_ok=True)
    pins = _pinned_runtime()
    stamp = cache / ("pins-" + hashlib.sha256(" ".join(pins).encode()).hexdigest()[:16])
    if not stamp.exists():
        if progress:
            progress("downloading runner wheels: " + " ".join(pins))
        cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
               "--only-binary=:all:", "--implementation", "cp", "--python-version", "3.11",
               "--platform", _platform_tag(), "-d", str(cache), *pins]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ImageError("could not download the runner's wheels:\n" + proc.stderr[-2000:])
        stamp.write_text(" ".join(pins))
    out = []
    for pin in pins:
        name, _, version = pin.partition("==")
        norm = _norm(name)
        found = [w for w in cache.glob("*.whl") if _norm(w.name.split("-")[0]) == norm
                 and (not version or w.name.split("-")[1] == version)]
        if not found:
            raise ImageError(f"no wheel for {pin} in {cache}; delete {stamp} and retry")
        whl = sorted(found)[-1]
        shutil.copy2(whl, out_dir / whl.name)
        out.append(out_dir / whl.name)
    return out


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _digest(paths: Iterable[Path], extra: Iterable[str]) -> str:
    h = hashlib.sha256()
    for path in sorted(paths, key=lambda p: p.name):
        h.update(path.name.encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    for item in extra:
        h.update(item.encode())
    return h.hexdigest()


def image_hash(client: Any, tag: str) -> str | None:
    """The content hash label of an existing image, or None."""
    import docker.errors

    try:
        image = client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None
    labels = image.labels or {}
    value = labels.get(HASH_LABEL)
    return value if isinstance(value, str) else None


def recorded_build_settings(client: Any, tag: str) -> tuple[str | None, str | None]:
    """(base image, CA bundle path) that ``tag`` -- or, if it does not exist, the default tag
    -- was built with, each only if it can be used again here (the base image exists locally,
    the bundle file exists); ``(None, None)`` when nothing usable was recorded."""
    import docker.errors

    for candidate in dict.fromkeys((tag, DEFAULT_TAG)):
        try:
            labels = client.images.get(candidate).labels or {}
        except docker.errors.ImageNotFound:
            continue
        base, ca = labels.get(BASE_LABEL), labels.get(CA_LABEL)
        if base:
            try:
                client.images.get(base)
            except docker.errors.ImageNotFound:
                base = None
        if ca and not Path(ca).is_file():
            ca = None
        return base or None, ca or None
    return None, None


def build_image(tag: str = DEFAULT_TAG, *, base_image: str | None = None,
                ca_bundle: str | Path | None = None,
                claude_version: str = CLAUDE_CODE_VERSION, force: bool = False,
                docker_url: str | None = None, progress: Progress | None = None) -> str:
    """Build the agent image unless an identical one (same content hash) exists.

    Returns the content hash. ``base_image`` defaults to ``$DOCKERCC_BASE_IMAGE``, else the
    base the existing image was built from (see :func:`recorded_build_settings`), else the
    public Node.js image. ``ca_bundle`` is a PEM file added to the build so npm can reach the
    registry through a TLS-intercepting proxy (``$DOCKERCC_CA_BUNDLE``, else the recorded one).
    """
    say = progress or (lambda _msg: None)
    client = _docker_client(docker_url)
    base_image = base_image or os.environ.get("DOCKERCC_BASE_IMAGE") or None
    ca_bundle = ca_bundle or os.environ.get("DOCKERCC_CA_BUNDLE") or None
    if base_image is None or ca_bundle is None:
        recorded_base, recorded_ca = recorded_build_settings(client, tag)
        if base_image is None and recorded_base:
            say(f"base image {recorded_base} (recorded by the previous build)")
        base_image = base_image or recorded_base or DEFAULT_BASE
        ca_bundle = ca_bundle or recorded_ca
    with tempfile.TemporaryDirectory(prefix="dockercc-build-") as tmp:
        ctx = Path(tmp)
        (ctx / "certs").mkdir()
        (ctx / "wheels").mkdir()
        shutil.copy2(dockerfile_path(), ctx / "Dockerfile")
        if ca_bundle:
            src = Path(ca_bundle)
            if not src.is_file():
                raise ImageError(f"CA bundle {src} does not exist; pass a PEM file")
            shutil.copy2(src, ctx / "certs" / "extra.crt")
        make_runner_wheel(ctx / "wheels")
        download_runtime_wheels(ctx / "wheels", say)
        try:
            base_id = client.images.get(base_image).id
        except Exception:
            base_id = base_image  # pulled during the build
        content = _digest([p for p in ctx.rglob("*") if p.is_file()],
                          [base_image, base_id, claude_version])
        if not force and image_hash(client, tag) == content:
            say(f"{tag} is up to date ({content[:12]})")
            return content
        say(f"building {tag} from {base_image} (claude-code {claude_version})")
        buildargs = {"BASE_IMAGE": base_image, "CLAUDE_CODE_VERSION": claude_version,
                     "DOCKERCC_VERSION": _version()}
        error = None
        # forcerm: a failed step's container is removed too (rm only cleans up successes)
        labels = {HASH_LABEL: content, BASE_LABEL: base_image}
        if ca_bundle:
            labels[CA_LABEL] = str(Path(ca_bundle).resolve())
        for chunk in client.api.build(path=str(ctx), tag=tag, buildargs=buildargs, rm=True,
                                      forcerm=True, network_mode="host",
                                      labels=labels, decode=True):
            if "stream" in chunk and chunk["stream"].strip():
                say(chunk["stream"].rstrip())
            if "error" in chunk:
                error = chunk["error"]
        if error:
            hint = ""
            if base_id == base_image:  # not on this machine: the engine had to pull it
                hint = (f" (the base image {base_image} is not on this machine; pass --base / "
                        "$DOCKERCC_BASE_IMAGE with a local one, or run `bash scripts/stack.sh up`)")
            raise ImageError(f"building {tag} failed: {error}{hint}")
        say(f"built {tag} ({content[:12]})")
        return content


def apt_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt itself uses (``deb.debian.org`` if none is configured)."""
    candidates = [sources_dir / "sources.list", *sorted((sources_dir / "sources.list.d").glob("*"))]
    for path in candidates:
        with contextlib.suppress(OSError):
            for line in path.read_text().splitlines():
                line = line.strip()
                m = re.match(r"^URIs:\s*(\S+)", line) or re.match(r"^deb\s+(?:\[[^\]]*\]\s+)?(\S+)", line)
                if m and "security" not in m.group(1) and m.group(1).startswith("http"):
                    return m.group(1)
    return "http://deb.debian.org/debian"


def build_base_image(tag: str = OFFLINE_BASE_TAG, *, suite: str = "bookworm",
                     mirror: str | None = None, force: bool = False,
                     docker_url: str | None = None, progress: Progress | None = None) -> str:
    """Debootstrap a minimal Debian and import it as ``tag`` (needs root and debootstrap)."""
    say = progress or (lambda _msg: None)
    client = _docker_client(docker_url)
    if not force:
        with contextlib.suppress(Exception):
            client.images.get(tag)
            say(f"{tag} exists")
            return tag
    if shutil.which("debootstrap") is None:
        raise ImageError("debootstrap is not installed (apt-get install debootstrap)")
    mirror = mirror or apt_mirror()
    with tempfile.TemporaryDirectory(prefix="dockercc-rootfs-") as tmp:
        root = Path(tmp) / "rootfs"
        say(f"debootstrap {suite} from {mirror}")
        proc = subprocess.Popen(["debootstrap", "--variant=minbase", "--include=ca-certificates",
                                 suite, str(root), mirror], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            if line.startswith("I: "):
                say(line.rstrip())
        if proc.wait() != 0:
            raise ImageError(f"debootstrap failed with exit code {proc.returncode}")
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for item in (root / junk).glob("*"):
                if item.is_file():
                    item.unlink()
        say(f"importing {tag}")
        tar = subprocess.Popen(["tar", "-C", str(root), "-c", "."], stdout=subprocess.PIPE)
        imp = subprocess.run(["docker", "import", "-c", 'CMD ["/bin/bash"]', "-", tag],
                             stdin=tar.stdout, capture_output=True, text=True)
        tar.wait()
        if imp.returncode != 0:
            raise ImageError(f"docker import failed: {imp.stderr.strip()}")
    say(f"built {tag}")
    return tag
