"""pool.map: many prompts, each in a fresh conversation, with retries, resumption and budgets.

Real Docker, the real CLI in the image, a real redis-server and the scripted Messages API."""

from __future__ import annotations

import asyncio
import re
import subprocess
import threading
from typing import Any

import pytest
from conftest import dev_import

import dockercc
from dockercc.batch import ItemResult, MapProgress, MapResults, is_transient
from dockercc.errors import AgentError, ConfigError, ContainerLost, InvalidPrompt
from dockercc.events import Result
from dockercc.protocol.keys import RunKeys
from dockercc.testing import text, tool_results, tool_use
from dockercc.types import ClaudeAgentOptions, OptionsError

SCHEMA = {"type": "object", "required": ["n", "parity"],
          "properties": {"n": {"type": "integer"}, "parity": {"type": "string"}}}
ITEM = re.compile(r"item-(\d+)")


class Model:
    """The scripted model: answers ``item-N`` with structured output ``{n, parity}`` (through
    the CLI's StructuredOutput tool) or with text; records which items it was asked, and in
    which phase."""

    def __init__(self, structured: bool = True) -> None:
        self.structured = structured
        self.phase = 1
        self.asked: dict[int, list[int]] = {}
        self.lock = threading.Lock()

    def __call__(self, body: dict[str, Any]) -> Any:
        from dockercc.testing import last_user_text

        m = ITEM.search(last_user_text(body))
        if m is None:
            return text("ok")
        n = int(m.group(1))
        if tool_results(body):
            return text(f"answered item-{n}")
        with self.lock:
            self.asked.setdefault(self.phase, []).append(n)
        if not self.structured:
            return text(f"answer {n}")
        return tool_use("StructuredOutput", {"n": n, "parity": "even" if n % 2 == 0 else "odd"})


def structured() -> ClaudeAgentOptions:
    return ClaudeAgentOptions(output_format={"type": "json_schema", "schema": SCHEMA})


# -- no Docker: classification and tables ------------------------------------------------------


def test_transient_classification() -> None:
    assert is_transient(ContainerLost("gone"))
    assert is_transient(TimeoutError())
    for status, expected in ((429, True), (529, True), (500, True), (400, False), (None, False)):
        err = AgentError("x", Result(is_error=True, subtype="error", api_error_status=status))
        assert is_transient(err) is expected, status
    assert not is_transient(AgentError("x", Result(is_error=True, subtype="error_max_turns")))


def test_results_table_and_records() -> None:
    rs = MapResults([ItemResult(index=1, prompt="b", text="B", cost_usd=0.5),
                     ItemResult(index=0, prompt="a", status="failed", error="boom",
                                error_type="AgentError")], name="t")
    assert [r.index for r in rs] == [0, 1]
    recs = rs.to_records()
    assert recs[0]["status"] == "failed" and recs[1]["text"] == "B"
    assert rs.cost_usd == 0.5 and rs.counts()["failed"] == 1
    from dockercc.jupyter.display import bundle

    html = bundle(rs)["text/html"]  # the notebook's table: from memory, no I/O
    assert "boom" in html and "dockercc map t" in html
    pd = dev_import("pandas")
    df = rs.to_pandas()
    assert isinstance(df, pd.DataFrame) and list(df.index) == [0, 1]
    assert df.loc[1, "text"] == "B"
    p = MapProgress(total=10, done=4, failed=1, running=2, queued=3, cost_usd=0.25,
                    elapsed_s=10.0, _rate_done=5)
    assert p.eta_s == pytest.approx(10.0)
    assert "done 4" in p.line() and "queued 3" in p.line() and "$0.2500" in p.line()


def test_progress_displays() -> None:
    """The notebook bar's HTML and the rich bar show the live counts, cost and ETA."""
    import io

    from rich.console import Console

    from dockercc.batch import RichReporter, make_reporter
    from dockercc.jupyter.progress import progress_html

    p = MapProgress(total=4, done=2, failed=1, running=1, queued=0, cost_usd=0.125,
                    elapsed_s=3.0, _rate_done=3, name="exp", stopped="budget_usd 1 reached")
    html = progress_html(p)
    for part in ("done 2", "failed 1", "running 1", "queued 0", "$0.1250", "ETA 1s",
                 "STOPPED: budget_usd 1 reached"):
        assert part in html
    buf = io.StringIO()
    bar = RichReporter(4, "exp", console=Console(file=buf, force_terminal=False, width=160))
    bar.close(p)
    out = buf.getvalue()
    assert "3/4" in out and "failed 1" in out and "stopped:" in out
    assert make_reporter(False, 4, None) is None
    seen: list[MapProgress] = []
    make_reporter(seen.append, 4, None).update(p)  # type: ignore[union-attr]
    assert seen == [p]


# -- Docker ------------------------------------------------------------------------------------


@pytest.mark.docker
async def test_bad_input_fails_before_anything_starts(make_config: Any, redis_server: Any,
                                                      prefix: str, docker_client: Any) -> None:
    pool = dockercc.AsyncPool(make_config(pool={"maxTotal": 3, "maxPerAgent": 3}))
    try:
        with pytest.raises(InvalidPrompt, match=r"item 1 is a int \(42\)"):
            pool.map(["fine", 42])
        with pytest.raises(InvalidPrompt, match="list of items"):
            pool.map("one prompt")
        with pytest.raises(InvalidPrompt, match="no template"):
            pool.map([{"review": "x"}])
        with pytest.raises(InvalidPrompt, match="needs field 'review'"):
            pool.map([{"text": "x"}], template="Classify {review}")
        with pytest.raises(InvalidPrompt, match="item 0: the prompt is empty"):
            pool.map(["  "])
        with pytest.raises(OptionsError, match="permission_mode"):
            pool.map(["a"], options=ClaudeAgentOptions(permission_mode="yolo"))
        with pytest.raises(OptionsError, match="output_format"):
            pool.map(["a"], options=ClaudeAgentOptions(output_format={"schema": 1}))
        with pytest.raises(OptionsError, match=r"items\[1\]"):
            pool.map(["a", ("b", {"permission_mode": "yolo"})])
        with pytest.raises(ConfigError, match="unknown agent 'nobody'"):
            pool.map(["a"], options="nobody")
        with pytest.raises(ConfigError, match="budget of 0"):
            pool.map(["a"], budget_usd=0)
        with pytest.raises(ConfigError, match=r"above pool.maxTotal \(3\)"):
            pool.map(["a"], concurrency=4)
        with pytest.raises(ConfigError, match="retries"):
            pool.map(["a"], retries=-1)
        with pytest.raises(dockercc.InvalidSessionId, match="run name"):
            pool.map(["a"], name="../etc")
        # nothing started: no container, no key under the prefix
        assert not pool._started
        assert redis_server.keys(f"{prefix}*") == []
    finally:
        await pool.close()
    assert redis_server.keys(f"{prefix}*") == []


@pytest.mark.docker
async def test_map_results_in_input_order_with_structured_output(make_config: Any, api: Any,
                                                                  prefix: str) -> None:
    model = Model()
    api.set_default(model)
    prompts: list[Any] = [f"Give item-{i}" for i in range(5)]
    prompts += [{"n": i} for i in range(5, 8)]
    async with dockercc.AsyncPool(make_config(pool={"maxTotal": 3, "maxPerAgent": 3})) as pool:
        seen: list[int] = []
        run = pool.map([(p, structured()) if isinstance(p, str) else (p, structured())
                        for p in prompts], template="Give item-{n}", concurrency=3,
                       progress=lambda p: seen.append(p.done), name="basic")
        completion: list[int] = []
        async for r in run:
            completion.append(r.index)
        results = run.result()
        assert sorted(completion) == list(range(8))
        assert [r.index for r in results] == list(range(8))
        for r in results:
            assert r.ok, r.error
            assert r.structured_output == {"n": r.index,
                                           "parity": "even" if r.index % 2 == 0 else "odd"}
            assert r.cost_usd and r.cost_usd > 0 and r.output_tokens and r.duration_ms
            assert r.session_id and r.claude_session_id and r.attempts == 1
        assert results[6].fields == {"n": 6} and results[6].prompt == "Give item-6"
        assert seen and seen[-1] == 8
        assert sorted(model.asked[1]) == list(range(8))
        # kept in Redis with the retention TTL; forget_run drops it
        key = RunKeys("basic", prefix).items
        ttl = await pool.transport.client.ttl(key)
        assert 6 * 86400 < ttl <= 7 * 86400
        assert await pool.forget_run("basic")
        # the gathered form, and map's own sessions are forgotten (no retained keys)
        model.structured = False
        again = await pool.map([f"item-{i}" for i in range(2)], progress=False)
        assert isinstance(again, MapResults)
        assert [r.text for r in again] == ["answer 0", "answer 1"]
        assert not pool.open_sessions
    left = [k for k in await _keys(make_config, prefix) if ":run:" in k or ":state" in k]
    assert left == []


@pytest.mark.docker
async def test_reuse_runs_items_in_fresh_conversations_of_the_workers_sessions(
        make_config: Any, api: Any, prefix: str) -> None:
    """reuse=True (the default): each worker keeps one session (container) per options and
    runs each item in a new conversation (/clear): the model's request for an item holds
    that item's prompt only, each result has its own Claude session id and its own cost;
    items with other options get a session with those options; reuse=False: a session per
    item."""
    import json

    model = Model(structured=False)
    api.set_default(model)
    async with dockercc.AsyncPool(make_config(pool={"maxTotal": 2, "maxPerAgent": 2})) as pool:
        items: list[Any] = [f"Answer item-{i}" for i in range(6)]
        items += [(f"Answer item-{i}", {"max_turns": 3}) for i in range(6, 9)]
        results = await pool.map(items, concurrency=2, progress=False)
        assert all(r.ok for r in results), [r.error for r in results if not r.ok]
        assert [r.text for r in results] == [f"answer {i}" for i in range(9)]
        # the model never saw another item: one item's prompt (and no answer) per request
        asked = [req for req in api.message_requests if ITEM.search(json.dumps(req.messages))]
        assert len(asked) == 9
        for req in asked:
            sent = json.dumps(req.messages)
            assert len(set(ITEM.findall(sent))) == 1, sent[-400:]
            assert not re.search(r"answer \d", sent), sent[-400:]  # no earlier answer
        # each item its own conversation, its own cost (not the session's running total)
        assert len({r.claude_session_id for r in results}) == 9
        assert len({r.cost_usd for r in results}) == 1 and results[0].cost_usd
        # two workers: at most 2 sessions for the default options, and the items with their
        # own options ran in sessions of their own (max_turns is a CLI argument)
        plain = {r.session_id for r in results[:6]}
        own = {r.session_id for r in results[6:]}
        assert len(plain) <= 2 and len(own) <= 2 and not plain & own
        assert sum(1 for r in results[:6] if r.session_id in plain) == 6
        assert len(plain) < 6  # sessions were reused
        assert not pool.open_sessions
        # reuse=False: a new session per item
        fresh = await pool.map([f"Answer item-{i}" for i in range(3)], concurrency=2,
                               reuse=False, progress=False)
        assert len({r.session_id for r in fresh}) == 3 and all(r.ok for r in fresh)
        with pytest.raises(ConfigError, match="reuse"):
            pool.map(["a"], reuse="yes")  # type: ignore[arg-type]


async def _keys(make_config: Any, prefix: str) -> list[str]:
    import redis.asyncio as aioredis

    r = aioredis.Redis.from_url(make_config()["redis"]["url"], decode_responses=True)
    try:
        return [k async for k in r.scan_iter(match=f"{prefix}*")]
    finally:
        await r.aclose()


@pytest.mark.docker
async def test_resume_after_kill_does_no_item_twice(make_config: Any, api: Any, prefix: str,
                                                    redis_server: Any) -> None:
    """A run loses one container (docker kill) and is then interrupted half-way (a kernel
    restart: the pool is closed, a new one made); the same call again runs only the items
    that had not finished, and no finished item runs twice."""
    model = Model(structured=False)
    api.set_default(model)
    n = 14
    prompts = [f"Answer item-{i}" for i in range(n)]
    cfg = make_config(pool={"maxTotal": 3, "maxPerAgent": 3})
    killed: list[str] = []
    first: list[ItemResult] = []
    pool = dockercc.AsyncPool(cfg)
    try:
        run = pool.map(prompts, concurrency=3, name="exp", progress=False, backoff_s=0.1)
        async for r in run:
            first.append(r)
            if len(first) == 3 and not killed:
                # kill a container that is serving an item right now
                for _ in range(200):
                    for s in pool.open_sessions:
                        name = s.lease.name if s.lease is not None else None
                        if name and subprocess.run(["docker", "kill", name],
                                                   capture_output=True).returncode == 0:
                            killed.append(name)
                            break
                    if killed:
                        break
                    await asyncio.sleep(0.05)
                assert killed, "no container could be killed mid-item"
            if len(first) == 8:
                break  # the "kernel restart": the run is abandoned mid-way
    finally:
        await pool.close()
    assert killed
    done_first = {r.index for r in first if r.ok}
    assert len(done_first) == 8
    # the lost item was tried again (in a new session) and finished, or was in flight
    retried = [r for r in first if r.attempts > 1]
    model.phase = 2
    async with dockercc.AsyncPool(cfg) as pool2:
        results = await pool2.map(prompts, concurrency=3, name="exp", progress=False)
        assert [r.index for r in results] == list(range(n))
        assert all(r.ok for r in results), [r.error for r in results if not r.ok]
        assert {r.index for r in results if r.resumed} == done_first
        assert [r.text for r in results] == [f"answer {i}" for i in range(n)]
        # no finished item was asked again; every missing one was asked exactly once
        asked_again = model.asked.get(2, [])
        assert not set(asked_again) & done_first
        assert sorted(asked_again) == sorted(set(range(n)) - done_first)
        # a changed item is run again, not skipped: item 0's prompt changes
        model.phase = 3
        changed = await pool2.map(["Answer item-0 please", *prompts[1:]], concurrency=3,
                                  name="exp", progress=False)
        assert model.asked.get(3) == [0] and not changed[0].resumed
        assert all(r.resumed for r in changed[1:])
        await pool2.forget_run("exp")
    print(f"killed {killed[0]}; {len(retried)} item(s) retried after the kill; "
          f"phase 1 asked {len(model.asked[1])}, phase 2 asked {len(asked_again)}")


@pytest.mark.docker
async def test_budget_stops_new_items_and_says_so(make_config: Any, api: Any,
                                                  prefix: str) -> None:
    api.set_default(Model(structured=False))
    async with dockercc.AsyncPool(make_config(pool={"maxTotal": 2, "maxPerAgent": 2})) as pool:
        one = await pool.map(["Answer item-0"], progress=False)
        cost = one[0].cost_usd
        assert cost and cost > 0
        results = await pool.map([f"Answer item-{i}" for i in range(6)], concurrency=1,
                                 budget_usd=cost * 1.5, progress=False)
        counts = results.counts()
        assert counts["ok"] == 2 and counts["skipped"] == 4, counts
        assert results.stopped and "budget_usd" in results.stopped
        assert all("budget_usd" in (r.error or "") for r in results.skipped)


@pytest.mark.docker
async def test_batch_command_appends_and_resumes(make_config: Any, api: Any, prefix: str,
                                                 tmp_path: Any) -> None:
    """``dockercc batch IN --out OUT``: one JSON line per finished item; the same command
    again runs nothing that is already in OUT; bad input exits 2 naming the line."""
    import json
    import sys

    import yaml

    model = Model(structured=False)
    api.set_default(model)
    home = tmp_path / "home"
    home.mkdir()
    env = {k: v for k, v in __import__("os").environ.items()
           if not k.startswith(("ANTHROPIC_", "CLAUDE", "DOCKERCC_CONFIG", "REDIS_URL"))}
    env["HOME"] = str(home)
    cfg = tmp_path / "dockercc.yaml"
    cfg.write_text(yaml.safe_dump(make_config(pool={"maxTotal": 2, "maxPerAgent": 2})))
    inp, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    inp.write_text("\n".join([json.dumps("Answer item-0"),
                              json.dumps({"id": "b", "prompt": "Answer item-1"}),
                              json.dumps({"id": "c", "n": 2})]) + "\n")

    def dcc(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dockercc.cli", "--config", str(cfg),
                               "batch", *args], env=env, capture_output=True, text=True,
                              timeout=300, cwd=str(home))

    bad = tmp_path / "bad.jsonl"
    bad.write_text('"fine"\n42\n')
    res = await asyncio.to_thread(dcc, str(bad), "--out", str(tmp_path / "x.jsonl"))
    assert res.returncode == 2 and "line 2" in res.stderr, res.stderr
    res = await asyncio.to_thread(dcc, str(inp), "--out", str(out), "--template",
                                  "Answer item-{n}")
    assert res.returncode == 0, res.stderr
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["index"] for r in recs) == [0, 1, 2]
    by = {r["index"]: r for r in recs}
    assert by[1]["id"] == "b" and by[2]["text"] == "answer 2" and by[0]["status"] == "ok"
    assert sorted(model.asked[1]) == [0, 1, 2]
    model.phase = 2
    res = await asyncio.to_thread(dcc, str(inp), "--out", str(out), "--template",
                                  "Answer item-{n}")
    assert res.returncode == 0 and "3 item(s) already in" in res.stderr, res.stderr
    assert len(out.read_text().splitlines()) == 3 and not model.asked.get(2)
