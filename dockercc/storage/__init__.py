"""The storage layer: every Redis key and command of the host lives here.

Nothing else in the package talks to Redis (``tests/test_storage_layer.py`` checks it): the
rest calls methods that say what they do, and every key is built by
:mod:`dockercc.protocol.keys`, so the seed's troubleshooting commands
(``redis-cli hgetall "clawdbot:cc:<session>:state"``) keep working verbatim.

- :mod:`.connection` -- :class:`RedisTransport`, the connection (``pool.transport``): one
  client with retries, the subscriptions, and a session's stream (input, output envelopes,
  state, result, control) and the session registry reader; it holds the stores below.
- :mod:`.registry` -- ``transport.registry``: the pool registry (containers, warm sets, the
  fair queue, owners, demand, assignments, runners' own state), its one reader.
- :mod:`.records` -- the registry record's format and strict decoding.
- :mod:`.scripts` -- every Lua script the host runs (claims, warm slots, budgets, cron).
- :mod:`.sessions` -- ``transport.sessions``: session state fields, ``{p}sessions``,
  ``{p}claude_sessions``, history, transcripts, the MCP relay, scratch volumes.
- :mod:`.budget` -- ``transport.budget``: the spend ledger and budget admission.
- :mod:`.cron` -- ``transport.cron`` and ``transport.channels``: the built-in tools' state.
- :mod:`.acl` -- the containers' own Redis users (the only ``ACL`` commands).
- :mod:`.sentinel` -- Sentinel URLs and the client factory (``connect``).
- :mod:`.values` -- reading Redis values (``as_str``, ``as_int``) and ``now_ms``.

The runner inside the container (:mod:`dockercc.agent.runner`) keeps its own Redis code (its
write script, the input moves, the assignment wait): it is the other end of the protocol,
runs under a Redis user that may reach only its own session's keys, and must stay light (no
pydantic, only ``redis`` at run time), while these stores build on the host's models and
errors. It shares what must agree with the host: the key builders (``protocol.keys``), the
envelope format and this package's :mod:`.sentinel` (which imports only ``redis``).

This ``__init__`` imports nothing, so the runner can import :mod:`.sentinel` alone.
"""
