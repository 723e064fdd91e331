"""Least-privilege Redis for containers: one ACL user per pool container.

Each container's runner authenticates as its own user, ``dockercc-<namespace>-<container id>``
(:func:`~dockercc.protocol.keys.container_acl_user`), made by the pool with a random password
when the container is created and deleted when it is removed. Its rights:

- commands: only what the runner sends (:data:`RUNNER_COMMANDS`): no ``KEYS`` / ``SCAN``, no
  ``CONFIG``, ``FLUSH*``, ``ACL`` or other admin commands. ``EVAL`` is granted for the
  runner's write script; Redis checks every key and channel a script touches against the
  same rules (declared or not), so a script reaches nothing more than the user's own keys;
- keys and channels (:func:`~dockercc.protocol.keys.container_acl_rules`): its own pool record
  while warm; at the claim, before the assignment is pushed, the session's exact keys, its MCP
  reply lists and its ``output`` / ``control`` channels; nothing of any other session or of
  the pool registry.

The password travels only in the container's ``DOCKERCC_REDIS_URL``. Redis gets its SHA-256
(``ACL SETUSER ... #<hash>``), and so does the pool's ``pool:acl`` hash: ACL users live in the
server's memory, so a Redis restart (or a fail-over to a replica: ACL commands are not
replicated) loses them, and any owner re-creates its containers' users from there
(:meth:`ContainerACL.restore`). The password itself is kept in this process only, for the
containers it creates.

Only this module sends ``ACL`` commands; the pool's own connection keeps its rights.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import secrets
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from redis.exceptions import NoPermissionError, ResponseError

from ..errors import IsolationError, PoolError
from ..protocol.keys import (
    ACL_USER_PREFIX,
    PoolKeys,
    acl_user_container,
    container_acl_rules,
    container_acl_user,
)
from .values import as_str

log = logging.getLogger("dockercc.pool")

RUNNER_COMMANDS = (
    "ping", "multi", "exec", "discard",           # connection, MULTI of each write batch
    "hset", "hgetall", "expire",                   # state hashes, own record, transcript
    "set",                                         # :result
    "lindex", "lrange", "rpush", "ltrim", "lrem",  # buffer, history, input, MCP requests
    "lmove", "blpop", "blmove",                    # assignment, MCP replies, input
    "publish", "subscribe", "unsubscribe",         # output / control channels
    "eval",                                        # the write script (APPEND_ENVELOPES)
)
"""Every command the runner (``dockercc.agent``) sends (redis-py's AUTH needs no right)."""
OPTIONAL_COMMANDS = ("client|setinfo",)
"""Granted where the server knows them (7.2+): redis-py identifies itself on connect and
ignores a refusal, but a refusal would fill the ACL log."""
MIN_VERSION = (7, 0)
OPT_OUT = ("or opt out of container isolation with redis.containerAcl: false "
           "(DOCKERCC_REDIS__CONTAINER_ACL=false), which gives every runner the pool's own "
           "Redis rights")


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def with_credentials(url: str, user: str, password: str) -> str:
    """``url`` (``redis://``, ``rediss://`` or ``unix://``) with ``user:password@`` in place of
    any credentials it had (redis-py reads them from there for both forms)."""
    parts = urlsplit(url)
    host = parts.netloc.rsplit("@", 1)[-1]
    netloc = f"{quote(user, safe='')}:{quote(password, safe='')}@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


def _digest(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


class ContainerACL:
    """The Redis ACL users of one pool's containers (see the module docs).

    ``client`` is the pool's own connection (it must be allowed ``ACL``); ``db`` the database
    the runners use (default: the client's).
    """

    def __init__(self, client: Any, prefix: str, *, db: int | None = None) -> None:
        self.client = client
        self.prefix = prefix
        self.pk = PoolKeys(prefix)
        if db is None:
            db = int(client.connection_pool.connection_kwargs.get("db") or 0)
        self.db = db
        self._passwords: dict[str, str] = {}  # containers this process created: never shown
        self._optional: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return f"ContainerACL(prefix={self.prefix!r}, db={self.db}, users={len(self._passwords)})"

    def user(self, container: str) -> str:
        return container_acl_user(self.prefix, container, self.db)

    def command_rules(self) -> list[str]:
        rules = ["-@all", *(f"+{c}" for c in RUNNER_COMMANDS), *(f"+{c}" for c in self._optional)]
        if self.db:  # redis-py sends SELECT on connect: that database only
            rules.append(f"+select|{self.db}")
        return rules

    async def _acl(self, *args: Any) -> Any:
        return await self.client.execute_command("ACL", *args)

    # -- start-up --------------------------------------------------------------------------

    async def check(self) -> None:
        """Raise :class:`IsolationError` unless this Redis has ACLs (7.0+) and the pool's user
        may list, create and delete users (``ACL LIST``, and ``ACL SETUSER`` / ``DELUSER`` of
        a throwaway user with a container's rules)."""
        try:
            whoami = as_str(await self._acl("WHOAMI"))
        except NoPermissionError as exc:
            raise IsolationError(
                "the pool's Redis user may not run ACL commands, so containers cannot get "
                "Redis users of their own; grant it +acl (e.g. ACL SETUSER <user> +acl), "
                + OPT_OUT) from exc
        except ResponseError as exc:
            raise IsolationError(
                f"this Redis server has no ACLs ({exc}); containers need Redis 7.0 or later "
                "for Redis users of their own: upgrade Redis, " + OPT_OUT) from exc
        info = await self.client.info("server")
        version = str(info.get("redis_version", "0"))
        if _version(version) < MIN_VERSION:
            raise IsolationError(
                f"Redis {version} is too old for per-container ACL users (needs "
                f"{'.'.join(map(str, MIN_VERSION))}+): upgrade Redis, " + OPT_OUT)
        probe = f"{ACL_USER_PREFIX}probe-{secrets.token_hex(4)}"
        for args in (("LIST",), ("SETUSER", probe), ("DELUSER", probe)):
            # asked first, so a user that may create but not delete leaves no probe behind
            try:
                verdict = as_str(await self._acl("DRYRUN", whoami, "ACL", *args))
            except ResponseError:  # no DRYRUN right: the probe below tells
                break
            if verdict != "OK":
                raise IsolationError(
                    f"the pool's Redis user {whoami!r} may not manage ACL users ({verdict}); "
                    f"grant it +acl (e.g. ACL SETUSER {whoami} +acl), " + OPT_OUT)
        made = False
        try:
            await self._acl("LIST")  # (restore and gc read it)
            rules = container_acl_rules(self.prefix, "probe", "probe")
            optional: list[str] = []
            for command in OPTIONAL_COMMANDS:
                try:
                    await self._acl("SETUSER", probe, "reset", f"+{command}")
                    made = True
                    optional.append(command)
                except NoPermissionError:
                    raise
                except ResponseError:  # a command this server does not know
                    pass
            self._optional = tuple(optional)
            await self._acl("SETUSER", probe, "reset", "off", *self.command_rules(), *rules)
            made = True
            await self._acl("DELUSER", probe)
            made = False
        except NoPermissionError as exc:
            left = (f" (a disabled user {probe} was left behind: delete it)" if made else "")
            raise IsolationError(
                f"the pool's Redis user {whoami!r} may not manage ACL users ({exc}); grant it "
                f"+acl (e.g. ACL SETUSER {whoami} +acl), " + OPT_OUT + left) from exc
        except ResponseError as exc:
            raise IsolationError(
                f"this Redis server refused a container's ACL rules ({exc}); it needs Redis "
                "7.0+: upgrade Redis, " + OPT_OUT) from exc
        finally:
            with contextlib.suppress(Exception):
                await self._acl("DELUSER", probe)

    # -- users -----------------------------------------------------------------------------

    def has_password(self, container: str) -> bool:
        return container in self._passwords

    def credentials(self, container: str) -> tuple[str, str]:
        """``(user, password)`` of a container this process created. Its password: hand it
        to nothing but that container's environment."""
        try:
            return self.user(container), self._passwords[container]
        except KeyError:
            raise PoolError(f"no Redis user was made for container {container} by this "
                            "process") from None

    def runner_url(self, url: str, container: str) -> str:
        """The runner's ``DOCKERCC_REDIS_URL``: ``url`` with the container's credentials."""
        user, password = self.credentials(container)
        return with_credentials(url, user, password)

    async def create(self, container: str, *, session: str | None = None,
                     restore_from: str | None = None) -> None:
        """Make the container's user with a new random password: its own record, and the
        session's keys when it is made for one (a cold claim)."""
        password = secrets.token_urlsafe(32)
        digest = _digest(password)
        rules = container_acl_rules(self.prefix, container, session, restore_from=restore_from)
        # the user before its stored hash, and restore() reads the hashes before the users:
        # a restore running meanwhile never takes a user being made for a lost one
        await self._acl("SETUSER", self.user(container), "reset", "on", f"#{digest}",
                        *self.command_rules(), *rules)
        await self.client.hset(self.pk.acl, container, digest)
        self._passwords[container] = password

    async def grant(self, container: str, session: str, *,
                    restore_from: str | None = None) -> None:
        """The container's runner may now serve ``session`` (and nothing else of the pool's
        but its own record). Call it before the assignment is pushed."""
        await self.client.execute_command(*self.grant_command(container, session,
                                                             restore_from=restore_from))

    def grant_command(self, container: str, session: str, *,
                      restore_from: str | None = None) -> tuple[Any, ...]:
        """The ``ACL SETUSER`` of :meth:`grant`, for a caller that sends it in the same round
        trip as the assignment (:meth:`PoolRegistry.assign`)."""
        return ("ACL", "SETUSER", self.user(container), *container_acl_rules(
            self.prefix, container, session, restore_from=restore_from))

    async def revoke(self, container: str) -> None:
        """Back to its own record only; its subscriptions to the session's channels end (Redis
        disconnects a client whose channels were taken away)."""
        await self._acl("SETUSER", self.user(container),
                        *container_acl_rules(self.prefix, container))

    async def delete(self, container: str) -> None:
        """Delete the container's user (Redis also disconnects its connections)."""
        self._passwords.pop(container, None)
        await self.client.hdel(self.pk.acl, container)
        await self._acl("DELUSER", self.user(container))

    # -- repair ----------------------------------------------------------------------------

    async def users(self) -> dict[str, list[str]]:
        """Users of this namespace -> their ACL LIST rules."""
        out: dict[str, list[str]] = {}
        for raw in await self._acl("LIST"):
            words = as_str(raw).split()
            if len(words) >= 2 and words[0] == "user":
                container = acl_user_container(self.prefix, words[1], self.db)
                if container is not None:
                    out[container] = words[2:]
        return out

    async def restore(self, records: Iterable[Any]) -> int:
        """Re-create users that Redis lost (a restart, a fail-over) for ``records`` (pool
        container records: ``id``, ``status``, ``session``) from their stored password hash,
        with the rights the record implies. Returns how many were re-created."""
        wanted = [r for r in records if r.status in ("creating", "warm", "busy")]
        if not wanted:
            return 0
        hashes = {as_str(k): as_str(v) for k, v in (await self.client.hgetall(self.pk.acl)).items()}
        listing = await self.users()
        restored = 0
        for rec in wanted:
            rules = listing.get(rec.id)
            if rules is not None and "on" in rules and any(w.startswith("#") for w in rules):
                continue
            digest = hashes.get(rec.id)
            if digest is None:  # not made yet (or made by a pool without isolation)
                continue
            await self._acl("SETUSER", self.user(rec.id), "reset", "on", f"#{digest}",
                            *self.command_rules(),
                            *container_acl_rules(self.prefix, rec.id, rec.session or None))
            restored += 1
        if restored:
            log.warning("re-created %d container Redis user(s) the server had lost", restored)
        return restored

    async def gc(self) -> int:
        """Delete this namespace's users (and stored hashes) whose container has no registry
        record: what crashed owners left. Users of other pools and users that are not
        dockercc's are never touched. Returns how many users were deleted."""
        # users first, then the records: a user is made after its record, so one listed
        # here whose record is missing below belongs to a removed container
        listing = await self.users()
        ids = {as_str(k) for k in await self.client.hkeys(self.pk.containers)}
        deleted = 0
        for container in listing:
            if container not in ids:
                await self._acl("DELUSER", self.user(container))
                deleted += 1
        stale = [as_str(k) for k in await self.client.hkeys(self.pk.acl) if as_str(k) not in ids]
        if stale:
            await self.client.hdel(self.pk.acl, *stale)
        # passwords of containers this process made and another one removed
        for container in [c for c in self._passwords if c not in ids]:
            del self._passwords[container]
        return deleted
