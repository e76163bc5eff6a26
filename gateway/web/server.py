"""The status page's HTTP server: one page, its script and style, and a small JSON API.

    GET  /                          the page (its language from Accept-Language)
    GET  /static/<file>             app.js, i18n.js, style.css
    GET  /api/state                 everything the page shows (api.py); polled every 2 s
    POST /api/login                 {"login", "password"} -> a session cookie and its CSRF token
    POST /api/logout
    POST /api/alarms/<alarm>/ack    {"comment"?}: acknowledge, as `web:<login>`

aiohttp on the gateway's own event loop: a page answers from one consistent moment of
the running gateway, nothing is copied. An acknowledgement is the same `ack_alarm`
command the platform and the CLI send, through the gateway's one command handler: it is
authorised by `upstream.commands.allow` (`web:<login>`), serialised with the others and
audited with `via: web:<login>`.

A state change needs a session (auth.py), its CSRF token in `X-CSRF-Token`, a JSON
body (a cross-site form cannot send one without a preflight this server never allows)
and, when the browser names one, this page's own origin.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import uuid
from importlib import resources
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import structlog
from aiohttp import web

from gateway.config.web_models import WebConfig
from gateway.web.api import StatusSource, page_state
from gateway.web.auth import (
    FAILURE_PAUSE,
    LOGIN,
    LoginThrottle,
    Passwords,
    Sessions,
    csrf_matches,
)
from gateway.web.language import pick_language

log = structlog.get_logger(__name__)

COOKIE = "gateway_session"
CSRF_HEADER = "X-CSRF-Token"
MAX_BODY = 16 * 1024  # bytes of a request body: a login or a comment
SHUTDOWN_TIMEOUT = 0.2  # seconds a request in flight may take when the gateway stops
STATIC = {"app.js": "application/javascript", "i18n.js": "application/javascript",
          "style.css": "text/css"}
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'"),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}


class StatusPage:
    """Serves the page for one gateway; `start()` then `stop()`.

    Start it after the gateway's command handler exists (an acknowledgement needs it);
    stop it before the handler closes.
    """

    def __init__(self, gateway: StatusSource, config: WebConfig | None = None) -> None:
        self.gateway = gateway
        config = config if config is not None else gateway.config.web
        if config is None:
            raise ValueError("the status page is off: site.yaml has no web:")
        self.config = config
        self.passwords = Passwords(self._password_path())
        self.sessions = Sessions(config.session_timeout)
        self.throttle = LoginThrottle()
        self.logins = 0
        self.acknowledged = 0
        self._runner: web.AppRunner | None = None
        self._address: tuple[str, int] | None = None
        self._files = {name: _static(name) for name in ("index.html", *STATIC)}
        self._commands: set[asyncio.Future[Any]] = set()  # shielded from their request

    def _password_path(self) -> Path | None:
        """web.password_file; a relative one beside site.yaml, as data_dir is."""
        path = self.config.password_file
        if path is None:
            return None
        path = path.expanduser()
        source = getattr(self.gateway.config, "source", None)
        if not path.is_absolute() and source is not None:
            path = Path(source).parent / path
        return path

    # --- running ---------------------------------------------------------------------

    async def start(self) -> None:
        """Listen; OSError when the address cannot be bound (in use, not this host's)."""
        self.passwords.check_file()
        app = web.Application(client_max_size=MAX_BODY,
                              middlewares=[_guard(names_only_loopback=not self.config.private)])
        app.router.add_get("/", self._index)
        app.router.add_get("/static/{name}", self._static)
        app.router.add_get("/api/state", self._state)
        app.router.add_post("/api/login", self._login)
        app.router.add_post("/api/logout", self._logout)
        app.router.add_post("/api/alarms/{alarm}/ack", self._ack)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT)
        await runner.setup()
        host, port = self.config.address
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        bound = runner.addresses[0] if runner.addresses else (host, port)
        self._address = (str(bound[0]), int(bound[1]))
        log.info("status page listening", url=self.url, read_only=not self.passwords.configured,
                 login_to_view=self.config.private)

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
            log.info("status page stopped")

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) it listens on: the port the system gave when the config says 0."""
        if self._address is None:
            raise RuntimeError("the status page is not listening; start() it first")
        return self._address

    @property
    def url(self) -> str:
        host, port = self.address
        return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"

    def stats(self) -> dict[str, object]:
        """For `gateway status`: where it listens, sessions, logins and the failed ones."""
        return {
            "url": self.url if self._address is not None else None,
            "read_only": not self.passwords.configured,
            "password_file_problem": self.passwords.problem,
            "sessions": len(self.sessions),
            "logins": self.logins,
            "failed_logins": self.throttle.failures,
            "logins_refused_early": self.throttle.refused,
            "acknowledged": self.acknowledged,
        }

    # --- pages -----------------------------------------------------------------------

    async def _index(self, request: web.Request) -> web.Response:
        language = pick_language(request.headers.get("Accept-Language"), self.config.language)
        html = self._files["index.html"].decode("utf-8").replace("__LANG__", language)
        return web.Response(text=html, content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def _static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound()
        return web.Response(body=self._files[name], content_type=STATIC[name], charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def _state(self, request: web.Request) -> web.Response:
        session = self.sessions.get(request.cookies.get(COOKIE))
        if self.config.private and session is None:
            return _json({"error": "login needed", "login_needed": True,
                          "can_login": self.passwords.configured}, 401)
        state = page_state(self.gateway)
        state["me"] = {"login": session.login, "csrf": session.csrf} if session else None
        state["can_login"] = self.passwords.configured
        state["private"] = self.config.private
        return _json(state)

    # --- logins ----------------------------------------------------------------------

    async def _login(self, request: web.Request) -> web.Response:
        refused = _cross_site(request)
        if refused is not None:
            return refused
        if not self.passwords.configured:
            return _json({"error": "read_only", "message": "the status page is read-only: "
                          "web.password_file is not set"}, 403)
        peer = request.remote or "unknown"
        wait = self.throttle.wait(peer)
        if wait > 0:
            self.throttle.refused += 1
            return _json({"error": "too_many_attempts", "retry_after": round(wait, 1)}, 429,
                         headers={"Retry-After": str(max(1, round(wait)))})
        body = await _body(request)
        if isinstance(body, web.Response):
            return body
        login, password = body.get("login"), body.get("password")
        if not isinstance(login, str) or not isinstance(password, str):
            return _json({"error": "bad_request", "message": "login and password are text"}, 400)
        login = login.strip() or "admin"
        if LOGIN.match(login) and self.passwords.verify(login, password):
            self.throttle.succeeded(peer)
            session = self.sessions.open(login)
            self.logins += 1
            log.info("status page login", login=login, peer=peer)
            response = _json({"login": login, "csrf": session.csrf})
            response.set_cookie(COOKIE, session.token, httponly=True, samesite="Strict", path="/",
                                max_age=int(self.config.session_timeout), secure=request.secure)
            return response
        delay = self.throttle.failed(peer)
        log.warning("status page login failed", login=login[:64], peer=peer,
                    failures=self.throttle.failures_of(peer), next_attempt_in=delay,
                    password_file_problem=self.passwords.problem)
        await asyncio.sleep(FAILURE_PAUSE)
        return _json({"error": "wrong_password", "retry_after": round(delay, 1)}, 401)

    async def _logout(self, request: web.Request) -> web.Response:
        refused = _cross_site(request)
        if refused is not None:
            return refused
        token = request.cookies.get(COOKIE)
        session = self.sessions.get(token)
        if session is not None and not csrf_matches(session, request.headers.get(CSRF_HEADER)):
            return _json({"error": "csrf"}, 403)
        self.sessions.close(token)
        response = _json({"login": None})
        response.del_cookie(COOKIE, path="/")
        return response

    # --- acknowledge -----------------------------------------------------------------

    async def _ack(self, request: web.Request) -> web.Response:
        refused = _cross_site(request)
        if refused is not None:
            return refused
        session = self.sessions.get(request.cookies.get(COOKIE))
        if session is None:
            return _json({"error": "login_needed", "login_needed": True}, 401)
        if not csrf_matches(session, request.headers.get(CSRF_HEADER)):
            return _json({"error": "csrf", "message": "the page's token is missing or stale; "
                          "reload the page"}, 403)
        body = await _body(request)
        if isinstance(body, web.Response):
            return body
        commands = getattr(self.gateway, "commands", None)
        if commands is None:
            return _json({"error": "unavailable", "message": "the gateway is not taking "
                          "commands yet"}, 503)
        command: dict[str, Any] = {"id": f"web-{uuid.uuid4().hex[:16]}", "type": "ack_alarm",
                                   "alarm": request.match_info["alarm"]}
        if body.get("comment"):
            command["comment"] = body["comment"]
        payload = json.dumps(command, ensure_ascii=False).encode("utf-8")
        # shielded: a browser that goes away must not cut the command or its audit line short
        run = asyncio.ensure_future(commands.handle(payload, via=f"web:{session.login}"))
        self._commands.add(run)
        run.add_done_callback(self._commands.discard)
        reply = await asyncio.shield(run)
        if reply is None:
            return _json({"error": "unavailable", "message": "the gateway is stopping"}, 503)
        answer = json.loads(reply.payload())
        if answer.get("ok"):
            self.acknowledged += 1
        return _json(answer, 200 if answer.get("ok") else 409)


def _guard(*, names_only_loopback: bool) -> Any:
    """Security headers on every answer; a bug costs one request, never the daemon.

    `names_only_loopback` (a page on loopback): a request must name the box by address or
    as localhost. A page elsewhere that rebinds its own domain to 127.0.0.1 would
    otherwise read this page as its own (DNS rebinding); it cannot choose the Host header.
    """

    @web.middleware
    async def guard(request: web.Request, handler: Any) -> web.StreamResponse:
        try:
            if names_only_loopback and not _names_this_box(request.host):
                response: web.StreamResponse = _json({
                    "error": "wrong_host", "message": "open the page as http://127.0.0.1:<port>/ "
                    "or http://localhost:<port>/"}, 403)
            else:
                response = await handler(request)
        except web.HTTPException as exc:  # a 404 for a page that is not there
            exc.headers.update(SECURITY_HEADERS)
            raise
        except Exception as exc:
            log.exception("status page request failed", path=request.path)
            response = _json({"error": "internal", "message": f"internal error: {exc!r}"}, 500)
        response.headers.update(SECURITY_HEADERS)
        if request.path.startswith("/api/"):
            response.headers["Cache-Control"] = "no-store"
        return response

    return guard


def _names_this_box(host: str) -> bool:
    """Whether a Host header is an address (any: a rebinding page can only send a name)
    or localhost."""
    name = urlsplit(f"//{host}").hostname or ""
    if name == "localhost":
        return True
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _cross_site(request: web.Request) -> web.Response | None:
    """A refusal for a state change another site's page asked for; None when it is ours."""
    origin = request.headers.get("Origin")
    if origin is not None and urlsplit(origin).netloc != request.host:
        return _json({"error": "cross_site", "message": "refused: not sent by this page"}, 403)
    if request.headers.get("Sec-Fetch-Site") not in (None, "same-origin", "none"):
        return _json({"error": "cross_site", "message": "refused: not sent by this page"}, 403)
    if request.content_type != "application/json":
        return _json({"error": "bad_request", "message": "send JSON "
                      "(Content-Type: application/json)"}, 415)
    return None


async def _body(request: web.Request) -> dict[str, Any] | web.Response:
    try:
        body = await request.json()
    except ValueError:
        return _json({"error": "bad_request", "message": "the body is not JSON"}, 400)
    if not isinstance(body, dict):
        return _json({"error": "bad_request", "message": "the body is a JSON object"}, 400)
    return body


def _json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None
          ) -> web.Response:
    return web.json_response(body, status=status, headers=headers,
                             dumps=lambda o: json.dumps(o, ensure_ascii=False, default=str))


def _static(name: str) -> bytes:
    return resources.files("gateway.web").joinpath("static", name).read_bytes()
