"""`web:` in site.yaml, web principals in upstream.commands.allow, and the page's language."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_site_files import errors_of, write_site
from pydantic import ValidationError

from gateway.config.loader import load_site
from gateway.config.models import CommandAllow
from gateway.config.web_models import WebConfig, is_loopback
from gateway.web.language import pick_language


def test_the_status_page_is_off_unless_web_is_written(tmp_path: Path) -> None:
    assert load_site(write_site(tmp_path, {})).web is None


def test_web_true_listens_on_localhost_8080_read_only_in_chinese(tmp_path: Path) -> None:
    config = load_site(write_site(tmp_path, {"site.yaml": "site: {id: s, name: S}\nweb: true\n"}))
    assert config.web is not None
    assert config.web.address == ("127.0.0.1", 8080)
    assert config.web.password_file is None and config.web.language == "zh"
    assert not config.web.private


def test_a_listen_other_machines_can_reach_needs_a_password_file(tmp_path: Path) -> None:
    site = write_site(tmp_path, {"site.yaml": "site: {id: s, name: S}\nweb:\n  listen: 0.0.0.0:8080\n"})
    (error,) = errors_of(site)
    assert "site.yaml:2:1 web:" in error
    assert "reachable from other machines; write password_file:" in error


def test_with_a_password_file_the_page_may_listen_on_the_site_network() -> None:
    web = WebConfig.model_validate({"listen": "192.168.10.5:8080", "password_file": "web.password"})
    assert web.private  # it shows nothing before a login there
    assert web.address == ("192.168.10.5", 8080)


@pytest.mark.parametrize("listen", ["8080", ":8080", "127.0.0.1:8080", "[::1]:8080", "localhost:8080"])
def test_loopback_listens_need_no_password(listen: str) -> None:
    assert not WebConfig.model_validate({"listen": listen}).private


@pytest.mark.parametrize(("host", "loopback"), [
    ("127.0.0.1", True), ("127.1.2.3", True), ("::1", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("gateway.local", False),
])
def test_only_loopback_addresses_count_as_this_box(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_a_bad_listen_or_language_is_refused_with_what_would_be_right() -> None:
    with pytest.raises(ValidationError, match="is not host:port"):
        WebConfig.model_validate({"listen": "127.0.0.1:http"})
    with pytest.raises(ValidationError, match="'zh' or 'en'"):
        WebConfig.model_validate({"language": "fr"})
    with pytest.raises(ValidationError, match="Extra inputs"):
        WebConfig.model_validate({"password": "inline"})


def test_a_status_page_login_can_be_listed_for_a_kind_of_command() -> None:
    allow = CommandAllow.model_validate({"ack": ["web:admin", "web:*", "cli:ops", "platform"]})
    assert allow.ack == ["web:admin", "web:*", "cli:ops", "platform"]
    with pytest.raises(ValidationError, match="is not a status page login: write web:<login>"):
        CommandAllow.model_validate({"ack": ["web:王工"]})


@pytest.mark.parametrize(("header", "language"), [
    ("zh-CN,zh;q=0.9,en;q=0.8", "zh"),
    ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
    ("fr-FR,en;q=0.5,zh;q=0.7", "zh"),
    ("de-DE,fr;q=0.9", "en"),  # neither: the site's language
    ("", "en"),
    ("zh;q=0,en;q=0.1", "en"),
])
def test_the_page_opens_in_the_browsers_language_else_the_sites(header: str, language: str) -> None:
    assert pick_language(header, "en") == language


def test_without_accept_language_the_site_language_is_used() -> None:
    assert pick_language(None, "zh") == "zh"
