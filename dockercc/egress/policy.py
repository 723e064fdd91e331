"""Which egress targets a container may reach: pure allow-list logic, no I/O.

An allow-list is a list of entries (``egress.allow`` / ``agents.<name>.egress.allow``):

* ``example.com``      that name only (any port)
* ``*.example.com``    any name below example.com (not example.com itself; list both for both)
* ``example.com:8443`` / ``*.example.com:443``: the same, one port only
* ``203.0.113.7`` / ``203.0.113.0/24`` / ``2001:db8::/32`` (optionally ``:port``; IPv6 with a
  port as ``[2001:db8::1]:443``): addresses, including private, loopback and link-local ones
* ``*``                any public name (still no private address)

Names are compared in their IDNA (punycode) form, lower case, without a trailing dot, so
``BÜCHER.example.``, ``xn--bcher-kva.example`` and ``bücher.example`` are one name.

A target is checked in two steps, so DNS cannot move it somewhere else after the check
(rebinding): :meth:`EgressPolicy.match` decides on the name, the caller resolves it, and
:meth:`EgressPolicy.addresses` keeps the resolved addresses it may connect to; the caller
connects to one of those, never resolves again. A private, loopback, link-local or otherwise
non-public address is kept only when an address entry (IP or CIDR) covers it, or when the name
was allowed by an exact ``host:port`` entry (``localhost:8080`` means exactly that).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["EgressPolicy", "Rule", "Match", "Refused", "normalize_host", "parse_rule",
           "parse_target", "non_public"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

MAX_HOST = 253
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_CGNAT = ipaddress.ip_network("100.64.0.0/10")
# cloud metadata / credential endpoints on PUBLIC addresses (the rest are link-local or
# private and refused anyway)
_METADATA = frozenset({ipaddress.ip_address("168.63.129.16")})  # Azure wireserver


class Refused(ValueError):
    """A target the policy refuses; ``reason`` says why (no secrets, safe to log and show)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def normalize_host(host: str) -> str:
    """A host as the policy compares it: an IP address in its canonical form, or a name
    lower-cased, IDNA-encoded, without a trailing dot. Raises :class:`Refused` for anything
    that is neither."""
    h = host.strip()
    if h.startswith("[") and h.endswith("]"):
        h = h[1:-1]
    if not h or len(h) > MAX_HOST + 1:
        raise Refused("invalid host name")
    try:
        return str(ipaddress.ip_address(h))
    except ValueError:
        pass
    if h.endswith("."):
        h = h[:-1]
    if not h or ".." in h:
        raise Refused("invalid host name")
    try:
        import idna  # the well-kept IDNA 2008 / UTS #46 codec (httpx's dependency)

        name = idna.encode(h, uts46=True).decode("ascii")
    except (UnicodeError, ValueError, ImportError):
        try:
            name = h.encode("idna").decode("ascii")
        except UnicodeError:
            raise Refused("invalid host name") from None
    name = name.lower()
    if len(name) > MAX_HOST or not all(c.isalnum() or c in "-._" for c in name):
        raise Refused("invalid host name")
    return name


def _split_port(text: str) -> tuple[str, int | None]:
    """``host``, ``host:port``, ``[v6]``, ``[v6]:port`` or a bare IPv6 address / network."""
    text = text.strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"unbalanced '[' in {text!r}")
        host, rest = text[1:end], text[end + 1:]
        if not rest:
            return host, None
        if not rest.startswith(":"):
            raise ValueError(f"unexpected text after ']' in {text!r}")
        return host, _port(rest[1:])
    if text.count(":") > 1:  # a bare IPv6 address or network: no port
        return text, None
    host, sep, port = text.partition(":")
    return host, (_port(port) if sep else None)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"bad port {text!r}")
    return int(text)


def parse_target(target: str, default_port: int | None = None) -> tuple[str, int]:
    """``(normalized host, port)`` of a CONNECT target (``host:port``) or a URL's netloc."""
    try:
        host, port = _split_port(target)
    except ValueError as exc:
        raise Refused(str(exc)) from None
    if port is None:
        if default_port is None:
            raise Refused("no port in target")
        port = default_port
    return normalize_host(host), port


@dataclass(frozen=True)
class Rule:
    """One allow-list entry, parsed. ``kind``: ``name``, ``wildcard``, ``any`` or ``network``."""

    text: str
    kind: str
    name: str = ""
    network: IPNetwork | None = None
    port: int | None = None

    def covers_port(self, port: int) -> bool:
        return self.port is None or self.port == port


def parse_rule(entry: str) -> Rule:
    """An allow-list entry; :class:`ValueError` saying what is wrong."""
    text = entry.strip()
    if not text:
        raise ValueError("empty egress entry")
    if "/" in text and not text.startswith("["):
        addr, _, bits = text.partition("/")
        bits, port = _split_port(bits) if ":" in bits else (bits, None)
        try:
            return Rule(text, "network", network=ipaddress.ip_network(f"{addr}/{bits}",
                                                                     strict=False), port=port)
        except ValueError as exc:
            raise ValueError(f"bad network {text!r}: {exc}") from None
    if "/" in text:  # "[2001:db8::]/32" style
        raise ValueError(f"write an IPv6 network without brackets: {text!r}")
    host, port = _split_port(text)
    if host == "*":
        return Rule(text, "any", port=port)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return Rule(text, "network", network=ipaddress.ip_network(ip), port=port)
    wildcard = host.startswith("*.")
    if "*" in (host[2:] if wildcard else host):
        raise ValueError(f"'*' only as the first label ('*.example.com'): {text!r}")
    try:
        name = normalize_host(host[2:] if wildcard else host)
    except Refused:
        raise ValueError(f"bad host name in egress entry {text!r}") from None
    return Rule(text, "wildcard" if wildcard else "name", name=name, port=port)


def embedded_ips(ip: IPAddress) -> list[IPAddress]:
    """``ip`` plus any IPv4 address carried inside it (mapped, 6to4, Teredo, NAT64)."""
    out: list[IPAddress] = [ip]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            out.append(ip.ipv4_mapped)
        if ip.sixtofour is not None:
            out.append(ip.sixtofour)
        if ip.teredo is not None:
            out.extend(ip.teredo)
        if ip in _NAT64:
            out.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return out


def non_public(ip: IPAddress) -> str | None:
    """Why ``ip`` is no public internet address (loopback, private, ...), or None."""
    for candidate in embedded_ips(ip):
        if candidate in _METADATA:
            return "cloud metadata address"
        if candidate.is_loopback:
            return "loopback address"
        if candidate.is_link_local:
            return "link-local address"
        if candidate.is_unspecified:
            return "unspecified address"
        if candidate.is_multicast:
            return "multicast address"
        if candidate.is_private:
            return "private address"
        if isinstance(candidate, ipaddress.IPv4Address) and candidate in _CGNAT:
            return "shared (CGNAT) address"
        if candidate.is_reserved or not candidate.is_global:
            return "reserved address"
    return None


@dataclass(frozen=True)
class Match:
    """The name-level verdict for ``host:port``: allowed, and whether non-public addresses
    may be used (an exact ``host:port`` entry), or the rule that allows an IP literal."""

    host: str
    port: int
    exact: bool = False
    is_ip: bool = False


class EgressPolicy:
    """An allow-list. ``always`` entries (the API origin) are added to ``allow``."""

    def __init__(self, allow: Iterable[str] = (), *, always: Iterable[str] = ()) -> None:
        self.entries: tuple[str, ...] = tuple(dict.fromkeys([*allow, *always]))
        self.rules: tuple[Rule, ...] = tuple(parse_rule(e) for e in self.entries)

    def __repr__(self) -> str:
        return f"EgressPolicy({list(self.entries)!r})"

    def _networks(self, port: int) -> list[IPNetwork]:
        return [r.network for r in self.rules
                if r.kind == "network" and r.network is not None and r.covers_port(port)]

    def _address_listed(self, ip: IPAddress, port: int) -> bool:
        return any(ip.version == n.version and ip in n for n in self._networks(port))

    def match(self, host: str, port: int) -> Match:
        """The name-level check (``host`` as :func:`normalize_host` gives it). Raises
        :class:`Refused` when no entry allows ``host:port``."""
        if not 0 < port < 65536:
            raise Refused("invalid port")
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            ip = None
        if ip is not None:
            if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
                raise Refused("scoped IPv6 address")
            if self._address_listed(ip, port):
                return Match(host, port, exact=True, is_ip=True)
            reason = non_public(ip)
            if reason is not None:
                raise Refused(f"{reason} not in the allow-list")
            raise Refused("address not in the allow-list")
        exact = any(r.kind == "name" and r.name == host and r.port == port for r in self.rules)
        if exact:
            return Match(host, port, exact=True)
        for r in self.rules:
            if not r.covers_port(port):
                continue
            if (r.kind == "name" and r.name == host) or r.kind == "any" or (
                    r.kind == "wildcard" and host.endswith("." + r.name)):
                return Match(host, port)
        if any(r.kind in ("name", "wildcard") and (
                r.name == host or host.endswith("." + r.name)) for r in self.rules):
            raise Refused("port not in the allow-list")
        raise Refused("host not in the allow-list")

    def addresses(self, match: Match, resolved: Sequence[str]) -> list[str]:
        """The resolved addresses of ``match`` that may be used, in order. Raises
        :class:`Refused` when none may (all private and not allowed explicitly)."""
        out: list[str] = []
        reasons: list[str] = []
        for text in resolved:
            try:
                ip = ipaddress.ip_address(text.split("%", 1)[0])
            except ValueError:
                continue
            if match.exact or self._address_listed(ip, match.port):
                out.append(str(ip))
                continue
            reason = non_public(ip)
            if reason is None:
                out.append(str(ip))
            else:
                reasons.append(f"{reason} {ip}")
        if not out:
            raise Refused("resolves to " + ", ".join(reasons[:3]) + " only" if reasons
                          else "does not resolve")
        return out

    def check(self, host: str, port: int, resolved: Sequence[str] | None = None) -> list[str]:
        """Both steps at once (tests, and callers that resolved already)."""
        m = self.match(normalize_host(host), port)
        if m.is_ip:
            return [m.host]
        return self.addresses(m, resolved if resolved is not None else [])
