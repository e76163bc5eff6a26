"""The status page over HTTP on a real running gateway: who may see and do what, and an
acknowledgement that takes the same way as the platform's and the CLI's."""

from __future__ import annotations

import socket
from pathlib import Path
from types import SimpleNamespace

import aiohttp
from test_web_site import ALARM, PASSWORD, Running, running_site, until

from gateway.commands.audit import read_entries
from gateway.config.web_models import WebConfig
from gateway.web import StatusPage, start_status_page
from gateway.web.auth import FREE_FAILURES
from gateway.web.server import COOKIE


async def _alarm_raised(site: Running) -> None:
    site.read(outlet_pressure=0.12, fault_code=0)
    await until(lambda: site.gateway.rules.alarms(active_only=True), "the alarm")


def _audit(site: Running) -> list[dict]:
    return [e for e in read_entries(site.gateway.data_dir / "audit.jsonl") if e.get("type") == "ack_alarm"]


async def test_the_page_opens_in_the_browsers_language_else_the_sites() -> None:
    async with running_site({"language": "zh"}) as site:
        async with site.http.get(site.url + "/", headers={"Accept-Language": "en-GB,en;q=0.9"}) as r:
            english = await r.text()
        async with site.http.get(site.url + "/", headers={"Accept-Language": "fr"}) as r:
            default = await r.text()
    assert '<html lang="en">' in english
    assert '<html lang="zh">' in default


async def test_the_pages_files_are_served_and_nothing_else() -> None:
    async with running_site() as site:
        async with site.http.get(site.url + "/static/app.js") as r:
            assert r.status == 200 and r.content_type == "application/javascript"
            assert "/api/state" in await r.text()
        async with site.http.get(site.url + "/static/style.css") as r:
            assert r.status == 200 and r.content_type == "text/css"
        for path in ("/static/server.py", "/static/..%2fserver.py", "/static/index.html", "/etc/passwd"):
            async with site.http.get(site.url + path) as r:
                assert r.status == 404, path


async def test_every_answer_carries_headers_that_keep_other_sites_out() -> None:
    async with running_site() as site:
        async with site.http.get(site.url + "/api/state") as r:
            headers = r.headers
        async with site.http.get(site.url + "/nothing") as r:
            missing = r.headers
    assert "script-src 'self'" in headers["Content-Security-Policy"]
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    assert headers["Cache-Control"] == "no-store"
    assert missing["X-Frame-Options"] == "DENY"


async def test_a_page_on_loopback_answers_only_to_the_boxs_own_names() -> None:
    async with running_site() as site:
        port = site.page.address[1]
        answers = {}
        for host in ("127.0.0.1", "localhost", "[::1]", "attacker.example", "gateway.local"):
            async with site.http.get(site.url + "/api/state",
                                     headers={"Host": f"{host}:{port}"}) as r:
                answers[host] = r.status
    # a page whose domain was rebound to 127.0.0.1 sends its own name: it reads nothing
    assert answers == {"127.0.0.1": 200, "localhost": 200, "[::1]": 200,
                       "attacker.example": 403, "gateway.local": 403}


async def test_anyone_on_this_box_may_look_but_acknowledging_needs_a_login() -> None:
    async with running_site() as site:
        await _alarm_raised(site)
        state = await site.state()
        status, body = await site.post(f"/api/alarms/{ALARM}/ack")
        assert (state["me"], state["can_login"], state["private"]) == (None, True, False)
        assert (status, body["error"]) == (401, "login_needed")
        assert site.gateway.rules.alarm(ALARM)["state"] == "active_unacknowledged"
        assert _audit(site) == []


async def test_a_login_sets_an_httponly_samestrict_session_cookie() -> None:
    async with running_site() as site, site.http.post(
            site.url + "/api/login", json={"login": "admin", "password": PASSWORD}) as r:
        assert r.status == 200
        cookie = r.headers["Set-Cookie"]
        body = await r.json()
    assert cookie.startswith(f"{COOKIE}=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    assert body["login"] == "admin" and len(body["csrf"]) >= 40


async def test_an_acknowledgement_is_the_platforms_command_audited_as_the_web_login() -> None:
    async with running_site() as site:
        await _alarm_raised(site)
        me = await site.login()
        status, reply = await site.post(f"/api/alarms/{ALARM}/ack", {"comment": "已到泵房"},
                                        csrf=me["csrf"])
        assert status == 200 and reply["ok"] is True, reply
        assert reply["result"]["state"] == "active_acknowledged"
        alarm = site.gateway.rules.alarm(ALARM)
        assert (alarm["state"], alarm["acknowledged_by"]) == ("active_acknowledged", "web:admin")
        (entry,) = _audit(site)
        assert (entry["who"], entry["via"], entry["target"], entry["outcome"]) == (
            "web:admin", "web:admin", ALARM, "accepted")
        assert entry["value"] == {"comment": "已到泵房"}
        assert site.page.stats()["acknowledged"] == 1
        state = await site.state()
    assert state["me"] == {"login": "admin", "csrf": me["csrf"]}
    assert state["alarms"][0]["state"] == "active_acknowledged" and not state["alarms"][0]["can_ack"]


async def test_an_unknown_alarm_is_refused_with_the_engines_reason() -> None:
    async with running_site() as site:
        me = await site.login()
        status, reply = await site.post("/api/alarms/pump_1.nothing/ack", csrf=me["csrf"])
        (entry,) = _audit(site)
    assert status == 409 and reply["ok"] is False
    assert "pump_1.nothing" in reply["error"]
    assert entry["outcome"] == "refused"


async def test_an_acknowledgement_without_the_pages_csrf_token_changes_nothing() -> None:
    async with running_site() as site:
        await _alarm_raised(site)
        await site.login()
        missing = await site.post(f"/api/alarms/{ALARM}/ack")
        wrong = await site.post(f"/api/alarms/{ALARM}/ack", csrf="forged")
        assert [missing[0], wrong[0]] == [403, 403]
        assert site.gateway.rules.alarm(ALARM)["state"] == "active_unacknowledged"
        assert _audit(site) == []


async def test_a_request_from_another_sites_page_or_a_plain_form_is_refused() -> None:
    async with running_site() as site:
        await _alarm_raised(site)
        me = await site.login()
        other = await site.post(f"/api/alarms/{ALARM}/ack", csrf=me["csrf"],
                                headers={"Origin": "http://attacker.example"})
        cross = await site.post(f"/api/alarms/{ALARM}/ack", csrf=me["csrf"],
                                headers={"Sec-Fetch-Site": "cross-site"})
        async with site.http.post(f"{site.url}/api/alarms/{ALARM}/ack", data={"x": "1"},
                                  headers={"X-CSRF-Token": me["csrf"]}) as r:
            form = r.status
        assert (other[0], cross[0], form) == (403, 403, 415)
        assert other[1]["error"] == "cross_site"
        assert site.gateway.rules.alarm(ALARM)["state"] == "active_unacknowledged"


async def test_wrong_passwords_are_counted_and_then_slowed_down() -> None:
    async with running_site() as site:
        answers = [await site.post("/api/login", {"login": "admin", "password": f"guess{i}"})
                   for i in range(FREE_FAILURES)]
        assert [status for status, _ in answers] == [401] * FREE_FAILURES
        # too soon after the last failure: refused without looking at the password
        status, body = await site.post("/api/login", {"login": "admin", "password": PASSWORD})
        stats = site.page.stats()
    assert status == 429 and body["retry_after"] > 0
    assert (stats["failed_logins"], stats["logins_refused_early"], stats["logins"]) == (FREE_FAILURES, 1, 0)


async def test_the_allow_list_decides_which_logins_may_acknowledge() -> None:
    async with running_site(allow={"ack": ["web:engineer"]}) as site:
        await _alarm_raised(site)
        admin = await site.login()
        status, reply = await site.post(f"/api/alarms/{ALARM}/ack", csrf=admin["csrf"])
        assert status == 409
        assert reply["error"] == ("web:admin may not send ack_alarm commands: not listed in "
                                  "upstream.commands.allow.ack")
        assert site.gateway.rules.alarm(ALARM)["state"] == "active_unacknowledged"

        site.http.cookie_jar.clear()
        engineer = await site.login("tw0-pumps", login="engineer")
        status, reply = await site.post(f"/api/alarms/{ALARM}/ack", csrf=engineer["csrf"])
        assert status == 200 and reply["ok"], reply
        assert [(e["via"], e["outcome"]) for e in _audit(site)] == [
            ("web:admin", "refused"), ("web:engineer", "accepted")]


async def test_logging_out_ends_the_session() -> None:
    async with running_site() as site:
        await _alarm_raised(site)
        me = await site.login()
        assert (await site.post("/api/logout", csrf=me["csrf"]))[0] == 200
        status, _ = await site.post(f"/api/alarms/{ALARM}/ack", csrf=me["csrf"])
        state = await site.state()
    assert status == 401 and state["me"] is None


async def test_without_a_password_file_the_page_is_read_only() -> None:
    async with running_site(password=None) as site:
        state = await site.state()
        status, body = await site.post("/api/login", {"login": "admin", "password": "x"})
    assert state["can_login"] is False
    assert (status, body["error"]) == (403, "read_only")


async def test_on_an_address_other_machines_reach_the_page_shows_nothing_before_a_login() -> None:
    async with running_site({"listen": "0.0.0.0:0"}) as site:
        port = site.page.address[1]
        url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as stranger, stranger.get(url + "/api/state") as r:
            assert r.status == 401
            assert (await r.json())["login_needed"] is True
        async with site.http.post(url + "/api/login", json={"login": "admin", "password": PASSWORD}) as r:
            assert r.status == 200
        async with site.http.get(url + "/api/state") as r:
            assert r.status == 200 and (await r.json())["private"] is True


def test_a_relative_password_file_is_read_beside_site_yaml() -> None:
    web = WebConfig.model_validate({"password_file": "secrets/web.password"})
    gateway = SimpleNamespace(config=SimpleNamespace(web=web, source=Path("/etc/gateway/site.yaml")))
    page = StatusPage(gateway)  # type: ignore[arg-type]
    assert page.passwords.path == Path("/etc/gateway/secrets/web.password")


async def test_a_port_in_use_leaves_the_gateway_running_without_the_page() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        web = WebConfig.model_validate({"listen": f"127.0.0.1:{taken.getsockname()[1]}"})
        gateway = SimpleNamespace(config=SimpleNamespace(web=web, source=None))
        assert await start_status_page(gateway) is None  # type: ignore[arg-type]


async def test_a_site_without_web_has_no_page() -> None:
    gateway = SimpleNamespace(config=SimpleNamespace(web=None, source=None))
    assert await start_status_page(gateway) is None  # type: ignore[arg-type]
