"""Secrets: named in YAML, read from the environment or a file, never shown in an error."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_site_files import SITE, errors_of, write_site

from gateway.config.errors import ConfigError
from gateway.config.loader import load_site

SECRET = "Sup3r-s3cret-Passw0rd"

UPSTREAM = SITE + """\
upstream:
  host: mqtt.example.com
  username: demo-estate
  password: {env: GATEWAY_TEST_MQTT_PASSWORD}
"""


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GATEWAY_TEST_MQTT_PASSWORD", raising=False)
    return tmp_path


def test_an_env_secret_is_read_from_the_environment_and_hidden_in_repr(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_TEST_MQTT_PASSWORD", SECRET)

    config = load_site(write_site(in_tmp, {"site.yaml": UPSTREAM}))

    assert config.upstream is not None and config.upstream.password is not None
    assert config.upstream.password.reveal() == SECRET
    assert SECRET not in repr(config)
    assert SECRET not in str(config.model_dump())


def test_a_file_secret_is_read_relative_to_the_site_folder_and_stripped(in_tmp: Path) -> None:
    site = write_site(in_tmp, {
        "site.yaml": SITE + (
            "sinks:\n"
            "  - type: influxdb\n"
            "    name: influx\n"
            "    url: http://127.0.0.1:8086\n"
            "    bucket: telemetry\n"
            "    token: {file: secrets/influx.token}\n"
        ),
        "secrets/influx.token": SECRET + "\n",
    })

    config = load_site(site)

    token = config.sinks[0].token
    assert token is not None and token.reveal() == SECRET
    assert token.file == in_tmp / "secrets" / "influx.token"


def test_a_missing_environment_variable_is_located_at_its_name(in_tmp: Path) -> None:
    site = write_site(in_tmp, {"site.yaml": UPSTREAM})

    assert errors_of(site) == [
        "site.yaml:7:19 upstream.password.env: environment variable GATEWAY_TEST_MQTT_PASSWORD "
        "is not set; set it where the gateway runs (e.g. EnvironmentFile= in the systemd unit) "
        "or use {file: /path/to/secret}"
    ]


def test_a_missing_secret_file_is_located_at_its_path(in_tmp: Path) -> None:
    site = write_site(in_tmp, {"site.yaml": UPSTREAM.replace(
        "{env: GATEWAY_TEST_MQTT_PASSWORD}", "{file: mqtt.password}")})

    assert errors_of(site) == [
        "site.yaml:7:20 upstream.password.file: secret file mqtt.password does not exist"
    ]


def test_an_empty_secret_file_is_an_error(in_tmp: Path) -> None:
    site = write_site(in_tmp, {
        "site.yaml": UPSTREAM.replace("{env: GATEWAY_TEST_MQTT_PASSWORD}", "{file: mqtt.password}"),
        "mqtt.password": "\n",
    })

    assert errors_of(site) == [
        "site.yaml:7:20 upstream.password.file: secret file mqtt.password is empty"
    ]


def test_a_missing_secret_is_reported_even_when_other_parts_of_site_yaml_are_wrong(in_tmp: Path) -> None:
    site = write_site(in_tmp, {"site.yaml": UPSTREAM + "outbox:\n  fsync: always\n"})

    errors = errors_of(site)

    assert [e.split(" ")[1] for e in errors] == ["upstream.password.env:", "outbox.fsync:"]


def test_a_secret_written_inline_is_refused_without_being_echoed(in_tmp: Path) -> None:
    site = write_site(in_tmp, {"site.yaml": UPSTREAM.replace(
        "{env: GATEWAY_TEST_MQTT_PASSWORD}", SECRET)})

    assert errors_of(site) == [
        "site.yaml:7:13 upstream.password: secrets are not written in the YAML; "
        "use {env: VARIABLE} or {file: /path/to/secret}"
    ]


def test_a_secret_value_never_appears_in_any_error(in_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_TEST_MQTT_PASSWORD", SECRET)
    site = write_site(in_tmp, {
        "site.yaml": SITE + (
            "upstream:\n"
            "  host: mqtt.example.com\n"
            "  password: {env: GATEWAY_TEST_MQTT_PASSWORD, value: " + SECRET + "}\n"
            "sinks:\n"
            "  - {type: influxdb, name: a, url: x, bucket: b, token: " + SECRET + "}\n"
            "  - {type: influxdb, name: b, url: x, bucket: b, token: 123456789}\n"
            "  - {type: influxdb, name: c, url: x, bucket: b, token: {env: X, fiel: " + SECRET + "}}\n"
            "  - {type: influxdb, name: d, url: x, api: v1, database: d, password: [" + SECRET + "]}\n"
            "  - {type: influxdb, name: e, url: x, bucket: b, token: {file: token.txt}}\n"
        ),
        "token.txt": SECRET,
        "devices/b1.yaml": "devices:\n  - {id: x, profile: pump, connection: {host: h}, name: 5}\n",
    })

    with pytest.raises(ConfigError) as caught:
        load_site(site)

    text = str(caught.value)
    assert len(caught.value.issues) >= 6
    assert SECRET not in text
    assert "123456789" not in text
    assert all(SECRET not in repr(issue) for issue in caught.value.issues)
