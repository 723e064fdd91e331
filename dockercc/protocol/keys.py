"""Redis key names (the seed's key table) and validation of the ids that go into them.

Pure: no I/O. Every key the SDK touches is built here, so the seed's troubleshooting commands
(``redis-cli hgetall "clawdbot:cc:<session>:state"``) keep working verbatim.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

from ..errors import InvalidSessionId

DEFAULT_PREFIX = "clawdbot:cc:"
SESSION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
OUTPUT_BUFFER_MAX = 1000
SCRATCH_KEY = "pool:scratch"
"""Hash under the key prefix: scratch volume -> the session that keeps it (for gc)."""


def validate_id(value: object, what: str = "session id") -> str:
    """Return ``value`` if it is a safe id (``[A-Za-z0-9._-]``, 1-128 chars, no leading
    punctuation); raise :class:`InvalidSessionId` saying what is allowed otherwise."""
    if not isinstance(value, str) or not SESSION_ID_RE.fullmatch(value):
        shown = repr(value)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        raise InvalidSessionId(
            f"invalid {what} {shown}: use 1-128 characters from A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit"
        )
    return value


@dataclass(frozen=True, slots=True)
class SessionKeys:
    """The seed's per-session keys, plus the reliable-input processing list."""

    prefix: str
    session: str

    def __init__(self, session: str, prefix: str = DEFAULT_PREFIX) -> None:
        object.__setattr__(self, "session", validate_id(session))
        object.__setattr__(self, "prefix", prefix)

    @property
    def base(self) -> str:
        return f"{self.prefix}{self.session}"

    @property
    def input(self) -> str:
        return f"{self.base}:input"

    @property
    def processing(self) -> str:
        return f"{self.base}:input:processing"

    @property
    def output(self) -> str:
        return f"{self.base}:output"

    @property
    def output_buffer(self) -> str:
        return f"{self.base}:output_buffer"

    @property
    def state(self) -> str:
        return f"{self.base}:state"

    @property
    def result(self) -> str:
        return f"{self.base}:result"

    @property
    def control(self) -> str:
        return f"{self.base}:control"

    @property
    def mcp_requests(self) -> str:
        """List: MCP messages relayed from the CLI to the host bridge."""
        return f"{self.base}:mcp:requests"

    def mcp_reply(self, request_id: str) -> str:
        """List: the host bridge's reply to one relayed MCP message (BLPOP by the runner)."""
        return f"{self.base}:mcp:reply:{request_id}"

    @property
    def history(self) -> str:
        """List: one JSON entry per turn (prompt, text, tool calls, outcome), bounded."""
        return f"{self.base}:history"

    @property
    def transcript(self) -> str:
        """Hash: the CLI's own transcript (compressed), for resuming in a new container."""
        return f"{self.base}:transcript"

    def all(self) -> list[str]:
        """Every fixed key of this session (for cleanup)."""
        return [
            self.input,
            self.processing,
            self.output_buffer,
            self.state,
            self.result,
            self.mcp_requests,
            self.history,
            self.transcript,
            self.control,
            self.output,
        ]


@dataclass(frozen=True, slots=True)
class PoolKeys:
    """Keys of the shared pool registry."""

    prefix: str = DEFAULT_PREFIX

    @property
    def containers(self) -> str:
        """Hash: container id -> JSON record."""
        return f"{self.prefix}pool:containers"

    def warm(self, spec: str) -> str:
        """List: ids of warm containers of one spec, claimed with LPOP (atomic)."""
        return f"{self.prefix}pool:warm:{spec}"

    @property
    def demand(self) -> str:
        """Hash: warm-set key -> JSON of the sessions that recently asked for it (arrival
        times, and the recipe to pre-start such a container when it holds no secret)."""
        return f"{self.prefix}pool:demand"

    def assign(self, container: str) -> str:
        """List: assignment messages for one warm runner (BLPOP by the runner)."""
        return f"{self.prefix}pool:assign:{container}"

    def container_state(self, container: str) -> str:
        """Hash: a runner's own state and heartbeat before and after it gets a session."""
        return f"{self.prefix}pool:container:{container}"

    @property
    def instance(self) -> str:
        """String: this Redis's pool identity, put on every container as a label."""
        return f"{self.prefix}pool:instance"

    @property
    def owners(self) -> str:
        """Hash: pool owner id -> last heartbeat (ms)."""
        return f"{self.prefix}pool:owners"

    @property
    def lock(self) -> str:
        return f"{self.prefix}pool:lock"

    @property
    def sessions(self) -> str:
        """Hash: session id -> JSON record (agent, container, created, ...)."""
        return f"{self.prefix}sessions"

    @property
    def queue(self) -> str:
        """Sorted set: waiting claims, scored by arrival (fair queue)."""
        return f"{self.prefix}pool:queue"

    @property
    def acl(self) -> str:
        """Hash: container id -> SHA-256 (hex) of its runner's Redis password, the form
        ``ACL SETUSER`` takes (``#<hash>``): any owner can re-create a user that a Redis
        restart lost. Never the password itself."""
        return f"{self.prefix}pool:acl"

    @property
    def tickets(self) -> str:
        """Hash: ticket -> ``{"agent", "deadline"}`` of a waiting claim."""
        return f"{self.prefix}pool:tickets"

    @property
    def ticket_seq(self) -> str:
        """String: the fair queue's arrival counter."""
        return f"{self.prefix}pool:ticket_seq"

    @property
    def events(self) -> str:
        """Pub/Sub: ``released`` notices that wake waiting claims."""
        return f"{self.prefix}pool:events"

    @property
    def quarantine(self) -> str:
        """Hash: registry entries that failed validation, kept (truncated) for inspection."""
        return f"{self.prefix}pool:quarantine"

    @property
    def warm_prefix(self) -> str:
        """The start of every :meth:`warm` list's name."""
        return f"{self.prefix}pool:warm:"

    @property
    def scratch(self) -> str:
        """Hash: scratch workspace volume -> the session that keeps it (for gc)."""
        return f"{self.prefix}{SCRATCH_KEY}"

    @property
    def claude_sessions(self) -> str:
        """Hash: Claude's session id -> dockercc session id (``resume=`` by either id)."""
        return f"{self.prefix}claude_sessions"

    @property
    def budget_spend(self) -> str:
        """Sorted set: ledger members ``{session}:{seq}`` scored by when (ms)."""
        return f"{self.prefix}budget:spend"

    @property
    def budget_cost(self) -> str:
        """Hash: ledger member -> ``{"usd", "agent"}``."""
        return f"{self.prefix}budget:cost"

    @property
    def budget_holds(self) -> str:
        """Hash: hold id -> ``{"agent", "owner", "usd", "expires"}`` of admitted turns."""
        return f"{self.prefix}budget:holds"

    @property
    def cron_jobs(self) -> str:
        """Hash: cron job id -> job JSON."""
        return f"{self.prefix}cron:jobs"

    @property
    def cron_due(self) -> str:
        """Sorted set: cron job id -> its next run (ms)."""
        return f"{self.prefix}cron:due"

    def channel(self, name: str) -> str:
        """Pub/Sub: a channel of the ``message`` tool."""
        return f"{self.prefix}channel:{name}"


@dataclass(frozen=True, slots=True)
class RunKeys:
    """Keys of one named ``pool.map`` run (see :mod:`dockercc.batch`)."""

    prefix: str
    run: str

    def __init__(self, run: str, prefix: str = DEFAULT_PREFIX) -> None:
        object.__setattr__(self, "run", validate_id(run, "run name"))
        object.__setattr__(self, "prefix", prefix)

    @property
    def items(self) -> str:
        """Hash: item index -> JSON record of its finished result (with the item's hash, so a
        changed input is run again); expires ``retention_s`` after the run's last write."""
        return f"{self.prefix}run:{self.run}:items"


# -- per-container Redis ACL users -----------------------------------------------------------
# Built from the same key builders as the protocol, so the rights and the keys cannot drift.

ACL_USER_PREFIX = "dockercc-"
_GLOB_CHARS = re.compile(r"([*?\[\]\\])")


def glob_escape(text: str) -> str:
    """``text`` as a Redis glob pattern that matches exactly ``text`` (``*?[]\\`` escaped):
    ACL key and channel rules are patterns, and a prefix like ``a*:`` must not widen them."""
    return _GLOB_CHARS.sub(r"\\\1", text)


def acl_namespace(prefix: str, db: int = 0) -> str:
    """A short tag of one pool's namespace (key prefix and database): ACL users are
    server-wide, so two pools on one Redis (other prefixes or databases) tell theirs apart."""
    return hashlib.sha256(f"{db}/{prefix}".encode()).hexdigest()[:8]


def container_acl_user(prefix: str, container: str, db: int = 0) -> str:
    """The Redis ACL user of one pool container: ``dockercc-<namespace>-<container id>``."""
    return f"{ACL_USER_PREFIX}{acl_namespace(prefix, db)}-{validate_id(container, 'container id')}"


def acl_user_container(prefix: str, user: str, db: int = 0) -> str | None:
    """The container id of a user named by :func:`container_acl_user` for this namespace;
    None for any other user (other pools' and users that are not dockercc's)."""
    head = f"{ACL_USER_PREFIX}{acl_namespace(prefix, db)}-"
    if not user.startswith(head):
        return None
    container = user[len(head):]
    return container if SESSION_ID_RE.fullmatch(container) else None


def container_acl_rules(prefix: str, container: str, session: str | None = None, *,
                        restore_from: str | None = None) -> list[str]:
    """The key and channel rules (``ACL SETUSER`` arguments) of a container's runner.

    Without a session (a warm container, or one whose session was taken back): its own pool
    record only (``pool:container:<id>``, ``pool:assign:<id>``). With ``session``: also that
    session's exact keys, its MCP reply lists (``<session>:mcp:reply:*``) and its
    ``output`` / ``control`` channels; ``restore_from`` (another session whose CLI
    transcript the runner restores) adds that one key, read-only.

    Starts with ``resetkeys resetchannels``, so applying the rules to an existing user
    replaces what it had. Exact names everywhere but the reply lists, every name
    glob-escaped: a session id like ``pool`` reaches ``<prefix>pool:state`` and nothing of
    the registry, a prefix with glob characters matches only itself.
    """
    pk = PoolKeys(prefix)
    validate_id(container, "container id")
    keys = [pk.container_state(container), pk.assign(container)]
    channels: list[str] = []
    extra: list[str] = []
    if session is not None:
        sk = SessionKeys(session, prefix)
        # (the output channel's name is also granted as a key: the runner's write script
        # declares it, and Redis checks a script's declared keys; no key of that name is used)
        keys += [sk.input, sk.processing, sk.output_buffer, sk.state, sk.result, sk.history,
                 sk.transcript, sk.mcp_requests, sk.output]
        channels += [sk.output, sk.control]
        reply_pattern = glob_escape(sk.mcp_reply("")) + "*"
        extra.append("~" + reply_pattern)
        if restore_from is not None and restore_from != session:
            extra.append("%R~" + glob_escape(SessionKeys(restore_from, prefix).transcript))
    return (["resetkeys", "resetchannels"] + ["~" + glob_escape(k) for k in keys] + extra
            + ["&" + glob_escape(c) for c in channels])
