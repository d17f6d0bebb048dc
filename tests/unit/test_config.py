"""Config validation: every bad value is refused with the key path and the reason."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from selfheal_daemon.config import Config, NotifyConfig, load_config, parse_config
from selfheal_daemon.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]


def test_shipped_config_is_valid_and_equals_defaults() -> None:
    """The repository's config.toml loads, and its values are the built-in defaults."""
    cfg = load_config(REPO / "config.toml")
    defaults = parse_config({}, REPO / "config.toml")
    assert cfg == defaults


def test_the_backend_is_the_local_workers_unless_asked() -> None:
    """Ray is opt-in; an existing cluster is named by its GCS address."""
    assert parse_config({}).backend.kind == "local"
    cfg = parse_config({"backend": {"kind": "ray", "address": "10.0.0.5:6379", "replicas": 4}})
    assert (cfg.backend.kind, cfg.backend.address, cfg.backend.replicas) == (
        "ray",
        "10.0.0.5:6379",
        4,
    )


def test_empty_config_gives_safe_defaults() -> None:
    """With no keys, the service listens on loopback with two workers and the 0.70 gate."""
    cfg = parse_config({})
    assert cfg.service.host == "127.0.0.1"
    assert cfg.service.workers == 2
    assert cfg.gate.min_r2 == 0.70


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"service": {"port": 70000}}, "service.port: Input should be less than or equal to 65535"),
        ({"service": {"port": "80"}}, "service.port: Input should be a valid integer"),
        (
            {"service": {"workers": 0}},
            "service.workers: Input should be greater than or equal to 1",
        ),
        ({"service": {"prot": 8000}}, "service.prot: unknown key"),
        ({"servcie": {"port": 8000}}, "servcie: unknown key"),
        ({"service": {"host": "0.0.0.0"}}, "service.host: host must be a loopback address"),
        ({"service": {"drain_s": 5.0}}, "service: drain_s (5.0) must be shorter than stop_grace_s"),
        ({"service": {"host": "10.0.0.5"}}, "service.host: host must be a loopback address"),
        ({"service": {"host": "example.com"}}, "service.host: host must be a loopback IP address"),
        ({"service": {"host": "0.0.0.0"}}, "service.expose = true listens on its own network"),
        (
            {"service": {"host": "example.com", "expose": True}},
            "service.host: host must be an IP address, got 'example.com'",
        ),
        ({"service": {"expose": "yes"}}, "service.expose: Input should be a valid boolean"),
        ({"probe": {"timeout_s": 5.0}}, "probe: timeout_s (5.0) must not exceed interval_s (2.0)"),
        ({"probe": {"interval_s": 0}}, "probe.interval_s: Input should be greater than 0"),
        ({"probe": {"failure_threshold": 0}}, "probe.failure_threshold: Input should be greater"),
        (
            {"restart": {"backoff_initial_s": 60, "backoff_max_s": 1}},
            "backoff_initial_s must not exceed",
        ),
        ({"training": {"test_size": 0.9}}, "training.test_size: Input should be less than 0.5"),
        ({"gate": {"min_r2": 2}}, "gate.min_r2: Input should be less than or equal to 1"),
        ({"logging": {"level": "LOUD"}}, "logging.level: Input should be"),
        ({"service": 5}, "service: Input should be a valid dictionary"),
        ({"source": "x"}, "source: unknown key"),
        ({"backend": {"kind": "k8s"}}, "backend.kind: Input should be 'local' or 'ray'"),
        ({"backend": {"address": "head"}}, "backend.address: address must be 'local'"),
        ({"backend": {"address": "head:99999"}}, "as host:port, got 'head:99999'"),
        ({"backend": {"head_port": 16379}}, "backend.head_port: head_port 16379 is among the"),
        ({"backend": {"replicas": 0}}, "backend.replicas: Input should be greater than or equal"),
        ({"backend": {"replica_cpus": 0}}, "backend.replica_cpus: Input should be greater than 0"),
        ({"backend": {"application": "my app"}}, "backend.application: String should match"),
    ],
)
def test_bad_values_name_key_and_reason(data: dict[str, Any], expected: str) -> None:
    """Each invalid config raises ConfigError whose message names the key path and the reason."""
    with pytest.raises(ConfigError) as info:
        parse_config(data, Path("/etc/selfheal/config.toml"))
    assert expected in str(info.value)
    assert str(info.value).startswith("/etc/selfheal/config.toml: ")


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "10.0.0.5", "127.0.0.1"])
def test_expose_lets_the_service_listen_beyond_loopback(host: str) -> None:
    """With service.expose (a container's config) any IP address is a valid service host; the
    control endpoint's TCP listener stays loopback only."""
    cfg = parse_config({"service": {"host": host, "expose": True}})
    assert (cfg.service.host, cfg.service.expose) == (host, True)
    with pytest.raises(ConfigError, match=r"control\.tcp_host: tcp_host must be a loopback"):
        parse_config({"service": {"expose": True}, "control": {"tcp_host": "0.0.0.0"}})


def test_the_container_config_is_valid() -> None:
    """deploy/container/config.toml, the image's config, passes check-config as shipped."""
    cfg = load_config(REPO / "deploy" / "container" / "config.toml")
    assert (cfg.service.host, cfg.service.expose, cfg.service.port) == ("0.0.0.0", True, 8000)
    assert str(cfg.state_dir) == "/var/lib/selfheal"


def test_several_problems_are_all_reported() -> None:
    """A file with two mistakes names both, so a person fixes them in one go."""
    with pytest.raises(ConfigError) as info:
        parse_config({"service": {"port": 0, "workers": 0}})
    assert "service.port" in str(info.value)
    assert "service.workers" in str(info.value)


def test_unparsable_toml_names_the_line(tmp_path: Path) -> None:
    """A syntax error is reported with its position."""
    path = tmp_path / "config.toml"
    path.write_text("[service]\nport = \n")
    with pytest.raises(ConfigError, match=r"not valid TOML: .*line 2"):
        load_config(path)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    """A config path that does not exist says so."""
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml")


def test_relative_paths_resolve_against_the_config_file(tmp_path: Path) -> None:
    """state_dir and training.data are relative to the config file's directory, not the cwd."""
    path = tmp_path / "etc" / "config.toml"
    path.parent.mkdir()
    path.write_text('state_dir = "state"\n[training]\ndata = "data/train.csv"\n')
    cfg = load_config(path)
    assert cfg.state_dir == tmp_path / "etc" / "state"
    assert cfg.training_data == tmp_path / "etc" / "data" / "train.csv"
    assert cfg.registry_dir == tmp_path / "etc" / "state" / "registry"


def test_config_is_frozen() -> None:
    """A loaded config cannot be changed behind the daemon's back."""
    cfg = parse_config({})
    with pytest.raises(Exception):  # noqa: B017, PT011 - pydantic's frozen-instance error
        cfg.service.port = 1  # type: ignore[misc]


@settings(max_examples=200, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(
            ["state_dir", "service", "probe", "restart", "training", "gate", "logging", "x"]
        ),
        st.one_of(
            st.integers(),
            st.floats(allow_nan=True),
            st.text(max_size=5),
            st.dictionaries(
                st.text(max_size=12),
                st.one_of(st.integers(), st.floats(), st.text(max_size=5)),
                max_size=4,
            ),
        ),
        max_size=4,
    )
)
def test_any_document_either_loads_or_raises_config_error(data: dict[str, Any]) -> None:
    """No input makes the loader fail with anything but ConfigError, and errors name a key."""
    message = ""
    try:
        cfg = parse_config(data)
    except ConfigError as exc:
        message = str(exc)
    else:
        assert isinstance(cfg, Config)
    assert not message or ": " in message


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (
            {"gate": {"direction_step": float("nan")}},
            "gate.direction_step: Input should be a finite number",
        ),
        (
            {"gate": {"golden_tolerance": float("inf")}},
            "gate.golden_tolerance: Input should be a finite number",
        ),
        (
            {"resources": {"max_rss_mb": float("inf")}},
            "resources.max_rss_mb: Input should be a finite number",
        ),
        (
            {"training": {"seed": 2**32}},
            "training.seed: Input should be less than or equal to 4294967295",
        ),
        ({"state_dir": "var\x00x"}, "state_dir: state_dir must not contain a NUL character"),
        ({"training": {"data": "a\x00.csv"}}, "training.data: data must not contain a NUL"),
        (
            {
                "notify": {
                    "smtp_host": "localhost",
                    "email_from": "a@example.com",
                    "email_to": ["b@example.com"],
                    "smtp_username": "u",
                    "smtp_password_file": "pw\x00",
                }
            },
            "notify.smtp_password_file: smtp_password_file must not contain a NUL",
        ),
    ],
)
def test_values_the_daemon_could_not_use_are_refused(data: dict[str, Any], expected: str) -> None:
    """NaN, infinities, a seed scikit-learn refuses and NUL bytes in paths fail at load (found by
    tests/chaos/test_abuse_config.py), not later in the daemon."""
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert expected in str(info.value)


# ----- [notify] ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"webhook_url": "ftp://example.com/x"}, "webhook_url must be an http:// or https://"),
        ({"webhook_url": "hooks.slack.com/services/x"}, "webhook_url must be an http"),
        ({"webhook_url": "https://"}, "webhook_url must be an http"),
        ({"smtp_host": "mail"}, "missing: email_from, email_to"),
        ({"email_to": ["ops@example.com"]}, "missing: smtp_host, email_from"),
        ({"smtp_starttls": True}, "email needs smtp_host, email_from and at least one email_to"),
        ({"email_from": "not-an-address"}, "email_from: 'not-an-address' is not a bare email"),
        ({"email_to": ["a@b.c", "Ops <ops@x.io>"]}, "email_to: 'Ops <ops@x.io>' is not a bare"),
        ({"email_to": ["a@b.c\r\nBcc: x@y.z"]}, "is not a bare email address"),
        ({"smtp_port": 0}, "greater than or equal to 1"),
        ({"smtp_port": "25"}, "Input should be a valid integer"),
        ({"timeout_s": 0.0}, "greater than 0"),
        ({"retries": -1}, "greater than or equal to 0"),
        ({"digest_hour_utc": 24}, "less than or equal to 23"),
        ({"digest_hour_utc": -2}, "greater than or equal to -1"),
        ({"queue_size": 0}, "greater than or equal to 1"),
        ({"backoff_initial_s": 10.0, "backoff_max_s": 5.0}, "must not exceed backoff_max_s"),
        ({"smtp_password": "hunter2"}, "Extra inputs are not permitted"),
    ],
)
def test_notify_config_rejects(values: dict[str, Any], message: str) -> None:
    """Each invalid [notify] table fails validation with a message naming what is wrong."""
    with pytest.raises(ValidationError, match=message.replace("(", r"\(")):
        NotifyConfig(**values)


def test_notify_config_username_needs_password_file() -> None:
    """smtp_username without smtp_password_file (or the reverse) is refused."""
    email = {"smtp_host": "mail", "email_from": "a@b.c", "email_to": ["d@e.f"]}
    with pytest.raises(ValidationError, match="go together"):
        NotifyConfig(**email, smtp_username="u")
    with pytest.raises(ValidationError, match="go together"):
        NotifyConfig(**email, smtp_password_file="/etc/selfheal/smtp")  # noqa: S106 -- a path


def test_notify_config_defaults_are_off_and_frozen() -> None:
    """An empty [notify] table is valid, turns everything off, and cannot be changed later."""
    cfg = NotifyConfig()
    assert (cfg.webhook_url, cfg.smtp_host, cfg.email_to, cfg.digest_hour_utc) == ("", "", [], 8)
    with pytest.raises(ValidationError, match="frozen"):
        cfg.retries = 1  # type: ignore[misc]
    assert NotifyConfig(webhook_url="https://hooks.example.com/T/B/x").webhook_url
