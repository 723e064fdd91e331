"""What is safe to show: secrets masked, terminal control sequences neutralised.

One :func:`redact` is used for everything the SDK prints, logs, puts in errors, or hands an
agent (``config_get``, ``dockercc status``, health, provider errors): it masks

- URL userinfo: ``https://user:pw@h`` -> ``https://user:***@h``; ``https://tok@h`` ->
  ``https://***@h`` (a lone userinfo is usually a token: GitHub, npm, ...);
- secret-looking query/form parameters anywhere: ``access_token=``, ``token=``, ``key=``,
  ``api_key=``, ``password=``, ``secret=``, ``sig=``, ``auth=``, ...;
- Anthropic keys (``sk-ant-...``) and other ``sk-`` keys anywhere in text (a system prompt, an
  error message);
- ``Bearer`` / ``Basic`` credentials (an ``Authorization`` header in an error).

:func:`terminal_safe` makes text from Redis or a container printable on a terminal: C0/C1
control characters (ESC, CSI, OSC such as OSC 52 clipboard writes, BEL, screen clears) and
bidi overrides are shown as escapes instead of being interpreted.
"""

from __future__ import annotations

import re

__all__ = ["MASK", "redact", "terminal_safe"]

MASK = "***"

_URL_RE = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>[^\s'\"<>]*)")
_SECRET_NAME = (r"[A-Za-z0-9_.-]*(?:password|passwd|pass|pwd|token|secret|auth|key|sig|"
                r"signature|credential)[A-Za-z0-9_.-]*")
_PARAM_RE = re.compile(rf"(?i)(?<![A-Za-z0-9_.-])({_SECRET_NAME}=)[^&;#\s'\"]+")
_SK_RE = re.compile(r"\b(sk-ant-)[A-Za-z0-9_-]+|\bsk-[A-Za-z0-9_-]{20,}")
_AUTH_RE = re.compile(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9._~+/=-]{6,}")
_CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e"
                         "\u2066-\u2069]")


def _url(match: re.Match[str]) -> str:
    rest = match["rest"]
    end = len(rest)
    for sep in "/?#":
        i = rest.find(sep)
        if i != -1:
            end = min(end, i)
    authority, tail = rest[:end], rest[end:]
    if "@" in authority:
        userinfo, host = authority.rsplit("@", 1)
        if ":" in userinfo:
            authority = f"{userinfo.split(':', 1)[0]}:{MASK}@{host}"
        else:
            authority = f"{MASK}@{host}"
    return match["scheme"] + authority + tail


def redact(text: str) -> str:
    """``text`` with every credential this module knows masked (see the module doc)."""
    if not text:
        return text
    text = _URL_RE.sub(_url, text)
    text = _PARAM_RE.sub(lambda m: m.group(1) + MASK, text)
    text = _SK_RE.sub(lambda m: (m.group(1) or "sk-") + MASK, text)
    return _AUTH_RE.sub(lambda m: m.group(1) + m.group(2) + MASK, text)


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _json_escape(match: re.Match[str]) -> str:
    return f"\\u{ord(match.group()):04x}"


def terminal_safe(text: str, *, newlines: bool = True, json: bool = False) -> str:
    """``text`` with control characters shown as ``\\x1b``-style escapes (tabs and, unless
    ``newlines`` is false, line breaks kept), so nothing in it drives the terminal. With
    ``json`` (for JSON text, where such characters only occur inside strings) they become
    ``\\u001b`` escapes and the JSON stays valid."""
    if json:
        return _CONTROL_RE.sub(_json_escape, text)
    out = _CONTROL_RE.sub(_escape, text)
    return out if newlines else out.replace("\n", "\\n")
