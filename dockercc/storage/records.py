"""The pool registry's record (``{p}pool:containers``: container id -> JSON): its format and
its strict decoding. Anything that can write the registry can forge a record, so the pool acts
only on records that pass :meth:`ContainerRecord.validate` (the others are quarantined by
:meth:`dockercc.storage.registry.PoolRegistry.records`).
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import BadData
from ..protocol.bounded import MAX_RECORD_BYTES, loads_object

STATUSES = frozenset({"creating", "warm", "busy", "stopping"})
RECORD_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
CONTAINER_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
"""Docker's own rule for container names."""
_STR_FIELDS = {"owner": 256, "agent": 128, "session": 128, "spec": 64}
_INT_FIELDS = ("created", "claimed", "ready")


@dataclass
class ContainerRecord:
    """One container in the shared registry."""

    id: str
    name: str
    spec: str
    status: str
    owner: str
    created: int
    agent: str = ""
    session: str = ""
    warm: bool = False
    claimed: int = 0
    ready: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def decode(cls, raw: bytes | str) -> ContainerRecord | None:
        try:
            obj = json.loads(raw)
            known = {k: obj.pop(k) for k in list(obj) if k in cls.__dataclass_fields__}
            return cls(**known, extra=obj)
        except (ValueError, TypeError, AttributeError, RecursionError):
            return None

    @classmethod
    def validate(cls, raw: bytes | str | None, field_id: str | None = None) -> ContainerRecord:
        """Decode a registry value strictly; :class:`BadData` for anything the pool must not
        act on (any process that can write the registry can forge a record)."""
        obj = loads_object(raw, max_bytes=MAX_RECORD_BYTES, what="registry record")
        rid, name, status = obj.get("id"), obj.get("name"), obj.get("status")
        if not isinstance(rid, str) or not RECORD_ID_RE.fullmatch(rid):
            raise BadData("registry record: bad id")
        if field_id is not None and rid != field_id:
            raise BadData("registry record: id differs from its key")
        if not isinstance(name, str) or not CONTAINER_NAME_RE.fullmatch(name):
            raise BadData("registry record: bad container name")
        if status not in STATUSES:
            raise BadData("registry record: bad status")
        for key, limit in _STR_FIELDS.items():
            value = obj.get(key, "")
            if not isinstance(value, str) or len(value) > limit:
                raise BadData(f"registry record: bad {key}")
        for key in _INT_FIELDS:
            value = obj.get(key, 0)
            if isinstance(value, bool) or not isinstance(value, int):
                raise BadData(f"registry record: bad {key}")
        if not isinstance(obj.get("warm", False), bool):
            raise BadData("registry record: bad warm")
        if "owner" not in obj or "created" not in obj or "spec" not in obj:
            raise BadData("registry record: fields missing")
        rec = cls.decode(json.dumps(obj))
        if rec is None:  # pragma: no cover - the checks above cover decode's needs
            raise BadData("registry record: undecodable")
        return rec

    def encode(self) -> str:
        data = asdict(self)
        extra = data.pop("extra")
        return json.dumps({**extra, **data})
