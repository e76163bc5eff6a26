"""An MQTT device's broker password: named in the device file, resolved like site.yaml's secrets."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_site_files import errors_of, write_site

from gateway.config.loader import load_site

SECRET = "Br0ker-Passw0rd"

BUTTON = """\
name: emergency button
system: access
protocol: mqtt
points:
  pressed: {topic: call, path: $.pressed, type: bool}
"""


def devices(password: str, extra: str = "") -> str:
    return f"""\
devices:
  - id: button_1
    profile: button
    connection:
      type: mqtt
      base_topic: estate/b1/button-1
      username: gateway
      password: {password}
{extra}"""


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("GATEWAY_TEST_BROKER_PASSWORD", raising=False)
    return tmp_path


def test_a_device_broker_password_is_read_from_the_environment(
    in_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GATEWAY_TEST_BROKER_PASSWORD", SECRET)
    site = write_site(in_tmp, {
        "profiles/button.yaml": BUTTON,
        "devices/b1.yaml": devices("{env: GATEWAY_TEST_BROKER_PASSWORD}"),
    })

    config = load_site(site)

    password = config.devices[-1].connection.password
    assert password is not None and password.reveal() == SECRET
    assert SECRET not in repr(config.devices)


def test_a_device_password_file_is_read_relative_to_the_site_folder(in_tmp: Path) -> None:
    site = write_site(in_tmp, {
        "profiles/button.yaml": BUTTON,
        "devices/b1.yaml": devices("{file: secrets/broker}"),
        "secrets/broker": SECRET + "\n",
    })

    password = load_site(site).devices[-1].connection.password
    assert password is not None and password.reveal() == SECRET


def test_a_missing_device_secret_is_an_error_at_its_line(in_tmp: Path) -> None:
    site = write_site(in_tmp, {
        "profiles/button.yaml": BUTTON,
        "devices/b1.yaml": devices("{env: GATEWAY_TEST_BROKER_PASSWORD}"),
    })

    assert errors_of(site) == [
        "devices/b1.yaml:8:23 devices[0].connection.password.env: environment variable "
        "GATEWAY_TEST_BROKER_PASSWORD is not set; set it where the gateway runs "
        "(e.g. EnvironmentFile= in the systemd unit) or use {file: /path/to/secret}",
    ]


def test_a_device_secret_is_checked_even_when_the_device_has_other_mistakes(in_tmp: Path) -> None:
    site = write_site(in_tmp, {
        "profiles/button.yaml": BUTTON,
        "devices/b1.yaml": devices("{file: secrets/missing}", "      max_rate: fast\n"),
    })

    errors = errors_of(site)
    assert any("max_rate" in e for e in errors)
    assert any("secret file secrets/missing does not exist" in e for e in errors)
