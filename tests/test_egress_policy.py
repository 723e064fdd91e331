"""The egress allow-list (pure logic, no I/O): names, wildcards, ports, addresses and
networks, private / loopback / link-local refusal, IPv6, IDNA, case and trailing dots."""

from __future__ import annotations

import pytest

from dockercc.egress.policy import EgressPolicy, Refused, normalize_host, parse_rule, parse_target

PUBLIC = ["93.184.215.14"]


def allowed(policy: EgressPolicy, host: str, port: int = 443,
            resolved: list[str] | None = None) -> bool:
    try:
        policy.check(host, port, PUBLIC if resolved is None else resolved)
    except Refused:
        return False
    return True


def reason(policy: EgressPolicy, host: str, port: int = 443,
           resolved: list[str] | None = None) -> str:
    with pytest.raises(Refused) as exc:
        policy.check(host, port, PUBLIC if resolved is None else resolved)
    return exc.value.reason


def test_exact_names_and_wildcards() -> None:
    p = EgressPolicy(["example.com", "*.pypi.org"])
    assert allowed(p, "example.com") and allowed(p, "example.com", 80)
    assert not allowed(p, "www.example.com")  # a name is that name only
    assert not allowed(p, "example.com.evil.net") and not allowed(p, "notexample.com")
    assert allowed(p, "files.pypi.org") and allowed(p, "a.b.pypi.org")
    assert not allowed(p, "pypi.org")  # "*." is below the name, not the name itself
    assert not allowed(p, "evilpypi.org")
    assert reason(p, "other.net") == "host not in the allow-list"


def test_ports() -> None:
    p = EgressPolicy(["example.com:8443", "*.example.org:443"])
    assert allowed(p, "example.com", 8443) and not allowed(p, "example.com", 443)
    assert reason(p, "example.com", 443) == "port not in the allow-list"
    assert allowed(p, "a.example.org", 443) and not allowed(p, "a.example.org", 22)


def test_case_trailing_dots_and_idna() -> None:
    p = EgressPolicy(["Example.COM.", "bücher.example"])
    assert allowed(p, "EXAMPLE.com") and allowed(p, "example.com.")
    assert allowed(p, "xn--bcher-kva.example") and allowed(p, "BÜCHER.example.")
    assert normalize_host("BÜCHER.Example.") == "xn--bcher-kva.example"
    with pytest.raises(Refused):
        normalize_host("exa mple.com")
    with pytest.raises(Refused):
        normalize_host("a..b")
    with pytest.raises(Refused):
        normalize_host("x" * 300 + ".com")


def test_private_resolution_is_refused_unless_explicit() -> None:
    p = EgressPolicy(["*.corp.example", "intranet.example:8080", "10.1.0.0/16"])
    # a public name that resolves to a private / loopback / link-local address: refused
    assert "private address" in reason(p, "db.corp.example", 443, ["10.0.0.5"])
    assert "loopback address" in reason(p, "db.corp.example", 443, ["127.0.0.1"])
    assert "link-local address" in reason(p, "db.corp.example", 443, ["169.254.169.254"])
    assert "loopback address" in reason(p, "db.corp.example", 443, ["::1"])
    assert "private address" in reason(p, "db.corp.example", 443, ["::ffff:192.168.1.1"])
    assert reason(p, "db.corp.example", 443, []) == "does not resolve"
    # ... unless a CIDR covers the address, or the name was allowed as exact host:port
    assert p.check("db.corp.example", 443, ["10.1.2.3"]) == ["10.1.2.3"]
    assert p.check("intranet.example", 8080, ["192.168.0.9"]) == ["192.168.0.9"]
    # only the allowed addresses of a mixed answer are used (no rebinding to the others)
    assert p.check("db.corp.example", 443, ["127.0.0.1", "93.184.215.14"]) == ["93.184.215.14"]


def test_ip_literals_need_an_address_entry() -> None:
    p = EgressPolicy(["example.com", "127.0.0.1:8080", "192.168.5.0/24", "2001:db8::/32",
                      "[fe80::1]:443"])
    assert allowed(p, "127.0.0.1", 8080) and not allowed(p, "127.0.0.1", 8081)
    assert "loopback address" in reason(p, "127.0.0.1", 22)
    assert allowed(p, "192.168.5.77", 22)
    assert "private address" in reason(p, "192.168.6.1")
    assert reason(p, "93.184.215.14") == "address not in the allow-list"  # public IP too
    assert allowed(p, "[2001:db8::5]", 443) and allowed(p, "2001:DB8::5", 80)
    assert allowed(p, "fe80::1", 443) and not allowed(p, "fe80::1", 80)
    assert "loopback address" in reason(p, "::1")
    assert "link-local" in reason(p, "169.254.169.254", 80)


def test_star_allows_public_names_only() -> None:
    p = EgressPolicy(["*"])
    assert allowed(p, "anything.example")
    assert "cloud metadata" in reason(p, "wireserver.example", 80, ["168.63.129.16"])
    assert "private address" in reason(p, "anything.example", 443, ["172.16.0.1"])
    assert not allowed(p, "8.8.8.8")


def test_always_entries_and_bad_entries() -> None:
    p = EgressPolicy([], always=["127.0.0.1:9999"])
    assert allowed(p, "127.0.0.1", 9999) and not allowed(p, "127.0.0.1", 9998)
    assert not allowed(EgressPolicy([]), "example.com")
    for bad in ("", "exa mple.com", "a.*.com", "10.0.0.0/33", "host:0", "host:99999",
                "[::1", "[::1]x", "[2001:db8::]/32"):
        with pytest.raises(ValueError):
            parse_rule(bad)


def test_parse_target() -> None:
    assert parse_target("Example.COM:443") == ("example.com", 443)
    assert parse_target("[::1]:8080") == ("::1", 8080)
    assert parse_target("example.com", 80) == ("example.com", 80)
    for bad in ("example.com", "example.com:x", "[::1]:", ":80"):
        with pytest.raises(Refused):
            parse_target(bad)


# -- what a container is made of (pure: no Docker) -----------------------------------------

def test_spec_on_the_none_network_holds_placeholders_only() -> None:
    from dockercc.config import resolve_config
    from dockercc.health import egress_status
    from dockercc.pool.spec import PLACEHOLDER, runner_env, spec_for

    key = "sk-ant-api03-CANARY-spec"
    config = resolve_config({"credentials": {"apiKey": key, "oauthToken": None,
                                             "baseUrl": "https://gw.example/anthropic"},
                             "redis": {"url": "redis://:pw@127.0.0.1:6390/3"},
                             "egress": {"allow": ["pypi.org"]},
                             "agents": {"locked": {"egress": {"allow": []}}}})
    spec = spec_for(config, "main")
    env = runner_env(spec, container="c1", prefix="p:", health_interval_ms=1000)
    assert key not in repr(spec) and key not in str(env) and key not in spec.model_dump_json()
    assert env["ANTHROPIC_API_KEY"] == PLACEHOLDER and "CLAUDE_CODE_OAUTH_TOKEN" not in env
    assert env["ANTHROPIC_BASE_URL"] == env["HTTPS_PROXY"] == "http://127.0.0.1:3128"
    assert env["DOCKERCC_REDIS_URL"] == "unix://:pw@/run/dockercc/redis/relay.sock?db=3"
    assert env["DOCKERCC_EGRESS_SOCKET"] == "/run/dockercc/egress/proxy.sock"
    assert spec.upstream is not None and spec.upstream.api_key == key
    assert spec.upstream.base_url == "https://gw.example/anthropic"
    assert spec.egress == ("pypi.org",) and spec_for(config, "locked").egress == ()
    # the allow-list and the credentials are part of the warm-set key, their values hashed
    assert spec.key() != spec_for(config, "locked").key()
    other = resolve_config({**config.model_dump(by_alias=True, mode="python"),
                            "credentials": {"apiKey": "sk-other", "oauthToken": None}})
    assert spec_for(other, "main").key() != spec.key()
    assert egress_status(config).isolated and not egress_status(config).credentials_in_container


def test_host_network_and_other_providers_keep_todays_behaviour() -> None:
    from dockercc.config import resolve_config
    from dockercc.health import egress_status
    from dockercc.pool.spec import spec_for

    host = resolve_config({"docker": {"network": "host"},
                           "credentials": {"apiKey": "sk-real", "oauthToken": None}})
    spec = spec_for(host)
    assert spec.egress is None and spec.env["ANTHROPIC_API_KEY"] == "sk-real"
    assert not egress_status(host).isolated and egress_status(host).credentials_in_container
    bedrock = resolve_config({"credentials": {"apiKey": "sk-real", "oauthToken": None},
                              "docker": {"env": {"CLAUDE_CODE_USE_BEDROCK": "1",
                                                 "AWS_SECRET_ACCESS_KEY": "aws"}}})
    spec = spec_for(bedrock)
    assert spec.egress == () and spec.env["AWS_SECRET_ACCESS_KEY"] == "aws"
    assert spec.env["ANTHROPIC_API_KEY"] == "sk-real"  # signed in the container: stays
    assert spec.env["HTTPS_PROXY"] == "http://127.0.0.1:3128"  # through the allow-list


def test_public_health_view_counts_the_allow_list() -> None:
    from dockercc.config import resolve_config
    from dockercc.gateway import public_view
    from dockercc.health import DockerCheck, HealthReport, RedisCheck, egress_status

    config = resolve_config({"egress": {"allow": ["intranet.example:8080", "10.0.0.0/8"]}})
    report = HealthReport(status="ok", healthy=True, checked_at=0,
                          redis=RedisCheck(ok=True, url="redis://x", key_prefix="p:"),
                          docker=DockerCheck(ok=True, engine="local"),
                          egress=egress_status(config))
    assert report.model_dump()["egress"]["allow"] == ["intranet.example:8080", "10.0.0.0/8"]
    public = public_view(report)
    assert public["egress"] == {"isolated": True, "network": "none",
                                "credentials_in_container": False, "allow": 2}
