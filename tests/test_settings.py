"""Settings.from_env: defaults, the ways to name Redis, and a wrong value named with its variable."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from app.errors import SettingsError
from app.settings import REDIS_CONNECT_TIMEOUT_S, REDIS_SOCKET_TIMEOUT_S, Settings, redact_url


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def test_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.redis_url.startswith("redis://localhost:6379/0?")
    assert settings.redis_url_is_default
    assert settings.api_key == "" and settings.api_readonly_key == ""
    assert settings.api_port == 3002
    assert settings.max_retries == 5
    assert settings.retry_min_backoff_ms == 15_000 and settings.retry_max_backoff_ms == 3_600_000
    assert settings.max_body_bytes == 1_048_576 and settings.max_batch_jobs == 1_000
    assert settings.smtp_url == "" and settings.webhook_secret == "" and settings.webhook_allowed_hosts == ()
    assert settings.metrics_host == "127.0.0.1" and settings.metrics_dir == Path("var/metrics")
    assert settings.namespace == "taskqueue" and settings.log_level == "INFO"


def test_from_env_reads_the_mapping_it_is_given_not_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAX_RETRIES", "9")
    assert Settings.from_env({}).max_retries == 5
    assert Settings.from_env().max_retries == 9


def test_settings_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings.from_env({}).api_key = "x"  # type: ignore[misc]


def test_redis_host_alone_is_enough() -> None:
    settings = Settings.from_env({"REDIS_HOST": "redis"})
    assert settings.redis_url.startswith("redis://redis:6379/0?")
    assert not settings.redis_url_is_default
    assert Settings.from_env({"REDIS_HOST": "redis", "REDIS_PORT": "6380"}).redis_url.startswith("redis://redis:6380/0")


def test_redis_url_wins_over_host_and_port() -> None:
    settings = Settings.from_env({"REDIS_URL": "redis://cache:7000/2", "REDIS_HOST": "redis", "REDIS_PORT": "1"})
    assert settings.redis_url.startswith("redis://cache:7000/2?")


@pytest.mark.parametrize(
    "environ",
    [{}, {"REDIS_HOST": "redis"}, {"REDIS_URL": "rediss://:pw@cache:6380/1"}, {"REDIS_URL": "unix:///run/redis.sock"}],
)
def test_timeouts_are_always_in_the_url(environ: dict[str, str]) -> None:
    query = _query(Settings.from_env(environ).redis_url)
    assert query["socket_connect_timeout"] == [str(REDIS_CONNECT_TIMEOUT_S)]
    assert query["socket_timeout"] == [str(REDIS_SOCKET_TIMEOUT_S)]
    assert query["health_check_interval"] == ["30"]


def test_timeouts_given_in_the_url_are_kept() -> None:
    url = Settings.from_env({"REDIS_URL": "redis://cache:6379/0?socket_timeout=1.5&ssl_cert_reqs=none"}).redis_url
    assert _query(url)["socket_timeout"] == ["1.5"]
    assert _query(url)["ssl_cert_reqs"] == ["none"]


def test_values_are_parsed() -> None:
    settings = Settings.from_env(
        {
            "API_KEY": "  key-with-spaces-around  ",
            "API_PORT": "8080",
            "MAX_RETRIES": "0",
            "WEBHOOK_TIMEOUT_S": "2.5",
            "WEBHOOK_ALLOWED_HOSTS": " Receiver.Internal , 10.0.0.0/8,fd00::/8 ,",
            "METRICS_HOST": "127.0.0.1",
            "LOG_LEVEL": "debug",
            "TASKQUEUE_NAMESPACE": "tq-staging_2",
        }
    )
    assert settings.api_key == "key-with-spaces-around"
    assert settings.api_port == 8080 and settings.max_retries == 0 and settings.webhook_timeout_s == 2.5
    assert settings.webhook_allowed_hosts == ("receiver.internal", "10.0.0.0/8", "fd00::/8")
    assert settings.metrics_host == "127.0.0.1" and settings.log_level == "DEBUG"
    assert settings.namespace == "tq-staging_2"


def test_an_empty_value_means_the_default() -> None:
    assert Settings.from_env({"MAX_RETRIES": "", "API_PORT": "  ", "LOG_LEVEL": ""}) == Settings.from_env({})


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("API_PORT", "abc", "API_PORT='abc' is not valid: expected a whole number"),
        ("API_PORT", "70000", "API_PORT=70000 is out of range: expected a value between 1 and 65535"),
        ("MAX_RETRIES", "-1", "MAX_RETRIES=-1 is out of range"),
        ("MAX_RETRIES", "2.5", "MAX_RETRIES='2.5' is not valid: expected a whole number"),
        ("WEBHOOK_TIMEOUT_S", "soon", "WEBHOOK_TIMEOUT_S='soon' is not valid: expected a number"),
        ("HEARTBEAT_TIMEOUT_MS", "10", "HEARTBEAT_TIMEOUT_MS=10 is out of range"),
        ("MAX_BODY_BYTES", "100", "MAX_BODY_BYTES=100 is out of range: expected a value at least 1024"),
        ("REDIS_URL", "localhost:6379", "REDIS_URL='localhost:6379' is not a Redis URL"),
        ("REDIS_URL", "redis://cache:port/0", "REDIS_URL='redis://cache:port/0' has an invalid port"),
        ("REDIS_PORT", "six", "REDIS_PORT='six' is not valid"),
        ("SMTP_URL", "mail.example.com:25", "SMTP_URL='mail.example.com:25' is not valid"),
        ("SMTP_URL", "smtp://mail.example.com:smtp", "SMTP_URL='smtp://mail.example.com:smtp' has an invalid port"),
        ("WEBHOOK_ALLOWED_HOSTS", "10.0.0.0/8,10.0.0.0/40", "WEBHOOK_ALLOWED_HOSTS entry '10.0.0.0/40'"),
        ("METRICS_HOST", "everywhere", "METRICS_HOST='everywhere' is not an IP address"),
        ("TASKQUEUE_NAMESPACE", "a:b", "TASKQUEUE_NAMESPACE='a:b' is not valid"),
        ("LOG_LEVEL", "LOUD", "LOG_LEVEL='LOUD' is not valid: expected one of DEBUG, INFO"),
    ],
)
def test_an_invalid_value_is_named_with_its_variable(variable: str, value: str, message: str) -> None:
    environ = {"REDIS_HOST": "cache"} if variable == "REDIS_PORT" else {}
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({**environ, variable: value})
    assert message in str(caught.value)


def test_backoffs_must_be_in_order() -> None:
    with pytest.raises(SettingsError, match="RETRY_MAX_BACKOFF_MS=100 is smaller than RETRY_MIN_BACKOFF_MS=200"):
        Settings.from_env({"RETRY_MIN_BACKOFF_MS": "200", "RETRY_MAX_BACKOFF_MS": "100"})


def test_the_read_only_key_must_differ_from_the_full_key() -> None:
    with pytest.raises(SettingsError, match="API_READONLY_KEY is the same as API_KEY"):
        Settings.from_env({"API_KEY": "same-key", "API_READONLY_KEY": "same-key"})


def test_the_api_refuses_to_start_without_a_key_and_says_how_to_make_one() -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({}).require_api_key()
    assert "API_KEY is not set" in str(caught.value)
    assert "secrets.token_urlsafe" in str(caught.value) and "export API_KEY=" in str(caught.value)
    Settings.from_env({"API_KEY": "k"}).require_api_key()


SECRET_ENV = {
    "REDIS_URL": "redis://default:redis-secret-1@cache:6379/0",
    "API_KEY": "api-secret-2",
    "API_READONLY_KEY": "readonly-secret-3",
    "SMTP_URL": "smtp+starttls://mailer:smtp-secret-4@mail.example.com:587",
    "WEBHOOK_SECRET": "webhook-secret-5",
}


def test_no_secret_is_in_repr_or_str() -> None:
    settings = Settings.from_env(SECRET_ENV)
    for text in (repr(settings), str(settings), f"{settings}"):
        for secret in ("redis-secret-1", "api-secret-2", "readonly-secret-3", "smtp-secret-4", "webhook-secret-5"):
            assert secret not in text
    # What is set still shows, so a log of the settings is useful.
    assert "redis://default:***@cache:6379/0" in repr(settings)
    assert "smtp+starttls://mailer:***@mail.example.com:587" in repr(settings)
    assert "api_key='***'" in repr(settings) and "webhook_secret='***'" in repr(settings)
    assert "api_readonly_key='***'" in repr(settings)
    assert "api_key=''" in repr(Settings.from_env({}))


def test_a_secret_in_an_invalid_url_is_not_repeated_in_the_error() -> None:
    for variable, value in (
        ("REDIS_URL", "http://:redis-secret-1@cache:6379/0"),
        ("REDIS_URL", "redis://:redis-secret-1@cache:nope/0"),
        ("SMTP_URL", "imap://mailer:smtp-secret-4@mail.example.com"),
    ):
        with pytest.raises(SettingsError) as caught:
            Settings.from_env({variable: value})
        assert "secret" not in str(caught.value) and "***" in str(caught.value), caught.value


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://:pw@host:1/0", "redis://:***@host:1/0"),
        ("redis://user:pw@host:1/0", "redis://user:***@host:1/0"),
        ("redis://user:p%40ss:w@host/0", "redis://user:***@host/0"),
        ("redis://host:1/0", "redis://host:1/0"),
        ("redis://user@host:1/0", "redis://user@host:1/0"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_result_max_bytes_caps_a_jobs_result() -> None:
    assert Settings.from_env({}).result_max_bytes == 16_384
    assert Settings.from_env({"RESULT_MAX_BYTES": "1024"}).result_max_bytes == 1024
    with pytest.raises(SettingsError, match="RESULT_MAX_BYTES=0 is out of range"):
        Settings.from_env({"RESULT_MAX_BYTES": "0"})


# ----- Redis Sentinel and REDIS_WAIT_REPLICAS -----


def test_sentinels_are_parsed_with_the_default_port() -> None:
    settings = Settings.from_env(
        {
            "REDIS_SENTINELS": " s1:26380, [::1]:26381 ,s3,",
            "REDIS_SENTINEL_MASTER": "mymaster",
            "REDIS_URL": "redis:///2",
        }
    )
    assert settings.redis_sentinels == (("s1", 26380), ("::1", 26381), ("s3", 26379))
    assert settings.redis_sentinel_master == "mymaster"
    assert Settings.from_env({}).redis_sentinels == ()


@pytest.mark.parametrize("entry", ["s1:0", "s1:70000", "s1:port", ":26379", "user@s1:26379", "s1:26379/0"])
def test_a_bad_sentinel_entry_is_named(entry: str) -> None:
    with pytest.raises(SettingsError, match=f"REDIS_SENTINELS entry {entry!r} is not valid: expected host:port"):
        Settings.from_env({"REDIS_SENTINELS": f"ok:26379,{entry}", "REDIS_SENTINEL_MASTER": "m"})


def test_sentinels_and_their_master_name_go_together() -> None:
    with pytest.raises(SettingsError, match="REDIS_SENTINEL_MASTER is not"):
        Settings.from_env({"REDIS_SENTINELS": "s1:26379"})
    with pytest.raises(SettingsError, match="REDIS_SENTINELS is not"):
        Settings.from_env({"REDIS_SENTINEL_MASTER": "m"})
    with pytest.raises(SettingsError, match="unix socket"):
        Settings.from_env({"REDIS_SENTINELS": "s1", "REDIS_SENTINEL_MASTER": "m", "REDIS_URL": "unix:///r.sock"})


def test_redis_password_and_username_go_into_the_url_and_are_never_shown() -> None:
    settings = Settings.from_env(
        {"REDIS_URL": "redis://cache:6379/1", "REDIS_USERNAME": "app", "REDIS_PASSWORD": "p@ss:w/rd"}
    )
    parts = urlsplit(settings.redis_url)
    assert (parts.hostname, parts.port, parts.path) == ("cache", 6379, "/1")
    assert parts.username == "app" and parts.password == "p%40ss%3Aw%2Frd"
    secret = Settings.from_env({"REDIS_PASSWORD": "p@ss", "REDIS_SENTINEL_PASSWORD": "sentinel-secret"})
    assert "p%40ss" not in repr(secret) and "sentinel-secret" not in repr(secret)


def test_credentials_in_two_places_are_refused() -> None:
    with pytest.raises(SettingsError, match="give them in one place") as raised:
        Settings.from_env({"REDIS_URL": "redis://:inurl@cache:6379/0", "REDIS_PASSWORD": "other"})
    assert "inurl" not in str(raised.value)


def test_wait_replicas_and_its_timeout() -> None:
    assert (Settings.from_env({}).redis_wait_replicas, Settings.from_env({}).redis_wait_timeout_ms) == (0, 1000)
    settings = Settings.from_env({"REDIS_WAIT_REPLICAS": "1", "REDIS_WAIT_TIMEOUT_MS": "250"})
    assert (settings.redis_wait_replicas, settings.redis_wait_timeout_ms) == (1, 250)
    with pytest.raises(SettingsError, match="REDIS_WAIT_REPLICAS=-1 is out of range"):
        Settings.from_env({"REDIS_WAIT_REPLICAS": "-1"})
    # 0 would make WAIT block for ever; past 3 s the API's 4 s deadline would answer first.
    for bad in ("0", "3001"):
        with pytest.raises(SettingsError, match=f"REDIS_WAIT_TIMEOUT_MS={bad} is out of range"):
            Settings.from_env({"REDIS_WAIT_TIMEOUT_MS": bad})


def test_redis_cluster_is_a_boolean_and_excludes_sentinels() -> None:
    assert Settings.from_env({"REDIS_CLUSTER": "true"}).redis_cluster is True
    assert Settings.from_env({"REDIS_CLUSTER": "0"}).redis_cluster is False
    assert Settings.from_env({}).redis_cluster is False
    with pytest.raises(SettingsError, match="expected true or false"):
        Settings.from_env({"REDIS_CLUSTER": "maybe"})
    with pytest.raises(SettingsError, match="REDIS_CLUSTER and REDIS_SENTINELS"):
        Settings.from_env({"REDIS_CLUSTER": "true", "REDIS_SENTINELS": "127.0.0.1:26379", "REDIS_SENTINEL_MASTER": "m"})
