"""Real services for the tests and benchmarks: Mosquitto, InfluxDB 1.6 and VictoriaMetrics.

Each service runs from the Debian binary on free ports bound to 127.0.0.1 only, with its
configuration, data and log in its own working directory, so that several test runs can
share a machine. Nothing here imports the project.

    svc = start_influxdb1(Path("/tmp/x"))   # waits until /ping answers
    svc.stop()                               # unreachable now...
    svc.start()                              # ...and back, same port, same data
    svc.stop()

Every started process is a session leader (its own process group). It is stopped with
SIGTERM and, if it does not exit, SIGKILL; at interpreter exit, on SIGTERM/SIGHUP to this
process, and (on Linux, via ``setpriv --pdeathsig``) when this process dies, whatever is
still running is stopped too, so an interrupted pytest leaves no orphans.

A missing binary raises RuntimeError naming the Debian package: tests fail, never skip.

Run ``python scripts/services.py`` to start all three for manual use (Ctrl-C stops them).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
READY_TIMEOUT = 60.0
STOP_TIMEOUT = 15.0

MOSQUITTO = "/usr/sbin/mosquitto"
INFLUXD = "/usr/bin/influxd"
VICTORIA = "/usr/bin/victoria-metrics"

SOCAT = "/usr/bin/socat"  # serial pty pairs for Modbus RTU tests
# the status page's browser tests: Debian's Chromium, driven through Debian's chromedriver
# (Selenium is given its path, so it never tries to download a driver)
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
_PACKAGES = {
    MOSQUITTO: "mosquitto", INFLUXD: "influxdb", VICTORIA: "victoria-metrics", SOCAT: "socat",
    CHROMIUM: "chromium", CHROMEDRIVER: "chromium-driver",
}

__all__ = [
    "CHROMEDRIVER",
    "CHROMIUM",
    "HOST",
    "SOCAT",
    "MosquittoAccounts",
    "MosquittoTls",
    "Service",
    "free_port",
    "influx1_create_db",
    "influx1_query",
    "require",
    "influx1_write",
    "start_influxdb1",
    "mosquitto_accounts",
    "start_mosquitto",
    "start_victoria",
    "stop_all",
    "victoria_export",
    "victoria_write",
]


# --------------------------------------------------------------------------- ports


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now (bind port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (OSError, urllib.error.URLError):
        return False


# --------------------------------------------------------------------------- cleanup

_LIVE: set[Service] = set()
_LIVE_LOCK = threading.Lock()
_HANDLERS_INSTALLED = False


def stop_all() -> None:
    """Stop every service this process started that is still running."""
    with _LIVE_LOCK:
        live = list(_LIVE)
    for svc in live:
        with contextlib.suppress(Exception):
            svc.stop()


def _on_signal(signum, frame):  # pragma: no cover - exercised by interrupting a run
    stop_all()
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _install_cleanup() -> None:
    global _HANDLERS_INSTALLED
    if _HANDLERS_INSTALLED:
        return
    _HANDLERS_INSTALLED = True
    atexit.register(stop_all)
    if threading.current_thread() is not threading.main_thread():
        return
    for signum in (signal.SIGTERM, signal.SIGHUP):
        # Only take over signals nobody else handles; Ctrl-C (KeyboardInterrupt) already
        # unwinds pytest's fixtures and then runs atexit.
        if signal.getsignal(signum) is signal.SIG_DFL:
            signal.signal(signum, _on_signal)


def _pdeathsig_prefix() -> list[str]:
    """``setpriv --pdeathsig TERM`` kills the child if this process is SIGKILLed.

    The kernel ties the parent-death signal to the *thread* that forked, so it is only used
    from the main thread (a pool thread exiting would otherwise take the service with it).
    """
    setpriv = shutil.which("setpriv")
    if setpriv is None or threading.current_thread() is not threading.main_thread():
        return []
    return [setpriv, "--pdeathsig", "TERM", "--"]


# --------------------------------------------------------------------------- Service


@dataclass(eq=False)
class Service:
    """One running (or stopped) service process.

    ``start()`` and ``stop()`` can be repeated; a restart reuses the same port, config and
    data directory. ``url`` is ``http://127.0.0.1:PORT`` for HTTP services.
    """

    name: str
    host: str
    port: int
    workdir: Path
    argv: list[str]
    http: bool = True
    ready_path: str | None = None  # HTTP path that answers 2xx when ready; None: TCP connect
    extra_ports: dict[str, int] = field(default_factory=dict)
    env: dict[str, str] | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)
    log_path: Path | None = None
    ready_timeout: float = READY_TIMEOUT

    @property
    def url(self) -> str:
        if not self.http:
            raise AttributeError(f"{self.name} is not an HTTP service; use host and port")
        return f"http://{self.host}:{self.port}"

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def is_ready(self) -> bool:
        if not self.is_running():
            return False
        if self.ready_path is not None:
            return _http_ok(self.url + self.ready_path)
        return _port_open(self.host, self.port)

    def log_tail(self, lines: int = 30) -> str:
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    def start(self) -> Service:
        """Start the process (if not running) and wait until it answers."""
        if self.is_running():
            return self
        _install_cleanup()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.log_path or self.workdir / f"{self.name}.stdout.log"
        with open(self.log_path, "ab") as log:
            log.write(f"\n=== start {time.strftime('%H:%M:%S')} {self.argv}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                _pdeathsig_prefix() + self.argv,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=self.env,
            )
        with _LIVE_LOCK:
            _LIVE.add(self)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self._forget()
                raise RuntimeError(
                    f"{self.name} exited with code {code} while starting on {self.address}; "
                    f"log {self.log_path}:\n{self.log_tail()}"
                )
            if self.is_ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"{self.name} did not become ready on {self.address} within "
            f"{self.ready_timeout:.0f}s; log {self.log_path}:\n{self.log_tail()}"
        )

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        """SIGTERM the process group, SIGKILL it if it has not exited after ``timeout``."""
        proc = self.process
        if proc is None:
            return
        if proc.poll() is None:
            self._signal_group(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self._signal_group(signal.SIGKILL)
                proc.wait()
        # Anything left in the group (there should be nothing) goes too.
        self._signal_group(signal.SIGKILL)
        self._forget()

    def kill(self) -> None:
        """SIGKILL at once (a crash, not a shutdown)."""
        if self.process is not None and self.process.poll() is None:
            self._signal_group(signal.SIGKILL)
            self.process.wait()
        self._forget()

    def restart(self) -> Service:
        self.stop()
        return self.start()

    def _signal_group(self, signum: int) -> None:
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signum)  # start_new_session: pgid == pid

    def _forget(self) -> None:
        with _LIVE_LOCK:
            _LIVE.discard(self)

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def require(binary: str) -> str:
    if not os.access(binary, os.X_OK):
        package = _PACKAGES[binary]
        raise RuntimeError(
            f"{binary} not found: install the Debian package '{package}' "
            f"(apt-get install --no-install-recommends {package}); scripts/test does this "
            "when run as root"
        )
    return binary


def _start_with_retries(make: Callable[[], Service], attempts: int = 3) -> Service:
    """Start a fresh service; if another process grabbed a free port between finding it
    and the service binding it, try again with new ports."""
    last: RuntimeError | None = None
    for _ in range(attempts):
        svc = make()
        try:
            return svc.start()
        except RuntimeError as exc:
            last = exc
            if "address already in use" not in str(exc).lower():
                raise
    assert last is not None
    raise last


def _clean_env(prefix: str) -> dict[str, str]:
    """This environment without variables the service would read as configuration."""
    return {k: v for k, v in os.environ.items() if not k.startswith(prefix)}


# --------------------------------------------------------------------------- Mosquitto


@dataclass(frozen=True)
class MosquittoTls:
    """A TLS listener: the server's certificate and key, and the CA its clients' certificates
    must chain to when ``require_certificate`` (mutual TLS)."""

    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = False


@dataclass(frozen=True)
class MosquittoAccounts:
    """Users with passwords (a mosquitto_passwd file) and an ACL file: no anonymous clients."""

    password_file: Path
    acl_file: Path


def mosquitto_accounts(workdir: Path | str, users: dict[str, str], acl: str) -> MosquittoAccounts:
    """Write a password file for ``users`` (name -> password) with mosquitto_passwd and the
    ACL text (Mosquitto's acl_file syntax: ``user``, ``topic``, ``pattern`` lines)."""
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    passwd = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    password_file, acl_file = workdir / "passwd", workdir / "acl"
    password_file.write_text("")
    for name, password in users.items():
        subprocess.run([passwd, "-b", str(password_file), name, password], check=True,
                       capture_output=True, timeout=30)
    acl_file.write_text(acl)
    for path in (password_file, acl_file):  # Mosquitto 2 warns about readable ones
        path.chmod(0o600)
    return MosquittoAccounts(password_file, acl_file)


def start_mosquitto(
    workdir: Path | str, *, tls: MosquittoTls | None = None, persistence: bool = False,
    accounts: MosquittoAccounts | None = None,
) -> Service:
    """Mosquitto 2.x: anonymous, one listener on 127.0.0.1:free port.

    ``tls`` makes that listener TLS-only; ``persistence`` keeps retained messages and
    persistent sessions (with their queued QoS 1 messages) across a stop() and start();
    ``accounts`` refuses anonymous clients and checks passwords and the ACL.
    """
    binary = require(MOSQUITTO)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)

    def make() -> Service:
        port = free_port()
        conf = workdir / "mosquitto.conf"
        tls_lines = [] if tls is None else [
            f"cafile {tls.cafile}",
            f"certfile {tls.certfile}",
            f"keyfile {tls.keyfile}",
            f"require_certificate {'true' if tls.require_certificate else 'false'}",
            "tls_version tlsv1.2",
        ]
        persistence_lines = (
            ["persistence true", f"persistence_location {workdir}/", "autosave_interval 0"]
            if persistence else ["persistence false"]
        )
        conf.write_text(
            "\n".join(
                [
                    f"listener {port} {HOST}",
                    *tls_lines,
                    *(["allow_anonymous true"] if accounts is None else [
                        "allow_anonymous false",
                        f"password_file {accounts.password_file}",
                        f"acl_file {accounts.acl_file}",
                    ]),
                    *persistence_lines,
                    # Started as root, Mosquitto switches to the 'mosquitto' user, which cannot
                    # write the log in a root-owned temp dir; stay root (as anyone else,
                    # it does not switch).
                    *(["user root"] if os.geteuid() == 0 else []),
                    f"log_dest file {workdir / 'mosquitto.log'}",
                    "log_type error",
                    "log_type warning",
                    "log_type notice",
                    "log_type information",
                    "connection_messages true",
                    "log_timestamp_format %Y-%m-%dT%H:%M:%S",
                    "max_keepalive 65535",
                    "max_queued_messages 100000",
                    "",
                ]
            )
        )
        return Service(
            name="mosquitto",
            host=HOST,
            port=port,
            workdir=workdir,
            argv=[binary, "-c", str(conf)],
            http=False,
            ready_path=None,
        )

    return _start_with_retries(make)


# --------------------------------------------------------------------------- InfluxDB 1.6


def _influxdb1_config(workdir: Path, http_port: int, rpc_port: int) -> str:
    meta, data, wal = workdir / "meta", workdir / "data", workdir / "wal"
    return f"""\
reporting-disabled = true
bind-address = "{HOST}:{rpc_port}"

[meta]
  dir = "{meta}"
  retention-autocreate = true
  logging-enabled = false

[data]
  dir = "{data}"
  wal-dir = "{wal}"
  index-version = "inmem"
  wal-fsync-delay = "0s"
  query-log-enabled = false
  trace-logging-enabled = false

[coordinator]
  log-queries-after = "0s"

[retention]
  enabled = true

[shard-precreation]
  enabled = false

[monitor]
  store-enabled = false

[subscriber]
  enabled = false

[http]
  enabled = true
  bind-address = "{HOST}:{http_port}"
  auth-enabled = false
  log-enabled = false
  suppress-write-log = true
  write-tracing = false
  pprof-enabled = false
  https-enabled = false
  unix-socket-enabled = false

[ifql]
  enabled = false

[logging]
  format = "logfmt"
  level = "warn"
  suppress-logo = true

[continuous_queries]
  enabled = true
  log-enabled = false
"""


def start_influxdb1(workdir: Path | str) -> Service:
    """influxd 1.6 (HTTP API with /write and InfluxQL /query), auth off, data in workdir."""
    binary = require(INFLUXD)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)

    def make() -> Service:
        http_port, rpc_port = free_port(), free_port()
        while rpc_port == http_port:
            rpc_port = free_port()
        conf = workdir / "influxdb.conf"
        conf.write_text(_influxdb1_config(workdir, http_port, rpc_port))
        return Service(
            name="influxdb1",
            host=HOST,
            port=http_port,
            workdir=workdir,
            argv=[binary, "run", "-config", str(conf)],
            http=True,
            ready_path="/ping",
            extra_ports={"rpc": rpc_port},
            env=_clean_env("INFLUXDB_"),
        )

    return _start_with_retries(make)


def _request(
    url: str, data: bytes | None = None, headers: dict | None = None, timeout: float = 10.0
) -> bytes:
    req = urllib.request.Request(url, data=data, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.read()
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        raise RuntimeError(f"{req.get_method()} {url} -> HTTP {exc.code}: {body}") from exc


def influx1_query(
    service: Service,
    db: str | None,
    q: str,
    *,
    epoch: str | None = None,
    epoch_ms: bool = False,
    check: bool = True,
) -> dict:
    """Run InfluxQL over HTTP (POST /query) and return the decoded JSON.

    ``epoch_ms=True`` (or ``epoch="ms"`` etc.) returns integer timestamps instead of RFC3339.
    With ``check`` an error in the response or in any statement raises RuntimeError.
    """
    params = {"q": q}
    if db:
        params["db"] = db
    if epoch_ms:
        epoch = "ms"
    if epoch:
        params["epoch"] = epoch
    body = _request(
        f"{service.url}/query",
        data=urllib.parse.urlencode(params).encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    result = json.loads(body)
    if check:
        errors = [result["error"]] if "error" in result else []
        errors += [r["error"] for r in result.get("results", []) if "error" in r]
        if errors:
            raise RuntimeError(f"InfluxQL {q!r} failed: {'; '.join(errors)}")
    return result


def influx1_create_db(service: Service, db: str) -> None:
    influx1_query(service, None, f'CREATE DATABASE "{db}"')


def influx1_write(service: Service, db: str, lines: str | list[str], precision: str = "ns") -> None:
    """Write line protocol to /write (HTTP 204 expected)."""
    if not isinstance(lines, str):
        lines = "\n".join(lines)
    query = urllib.parse.urlencode({"db": db, "precision": precision})
    _request(f"{service.url}/write?{query}", data=lines.encode())


# --------------------------------------------------------------------------- VictoriaMetrics


def start_victoria(workdir: Path | str) -> Service:
    """Single-node VictoriaMetrics: InfluxDB line protocol on /write and /api/v2/write."""
    binary = require(VICTORIA)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)

    def make() -> Service:
        port = free_port()
        return Service(
            name="victoria",
            host=HOST,
            port=port,
            workdir=workdir,
            argv=[
                binary,
                f"-httpListenAddr={HOST}:{port}",
                f"-storageDataPath={workdir / 'data'}",
                "-retentionPeriod=100y",
                # The other listeners (graphite, opentsdb, influx UDP/TCP) are off by default;
                # keep it that way explicitly, and no self-scraping or usage reporting.
                "-graphiteListenAddr=",
                "-opentsdbListenAddr=",
                "-opentsdbHTTPListenAddr=",
                "-influxListenAddr=",
                "-selfScrapeInterval=0",
                # Tests read right after writing: no query latency offset, no result cache.
                "-search.latencyOffset=0s",
                "-search.disableCache",
                # Tests stop and start it: shut down quickly.
                "-http.shutdownDelay=0s",
                "-http.maxGracefulShutdownDuration=1s",
                "-memory.allowedPercent=20",
                "-loggerLevel=WARN",
            ],
            http=True,
            ready_path="/health",
        )

    return _start_with_retries(make)


def victoria_write(service: Service, lines: str | list[str], *, db: str | None = None) -> None:
    """Write InfluxDB line protocol to /write (``db`` becomes the ``db`` label)."""
    if not isinstance(lines, str):
        lines = "\n".join(lines)
    url = f"{service.url}/write"
    if db:
        url += "?" + urllib.parse.urlencode({"db": db})
    _request(url, data=lines.encode())


def victoria_flush(service: Service) -> None:
    _request(f"{service.url}/internal/force_flush")


def victoria_export(
    service: Service, match: str, *, start: str | None = "0", end: str | None = None
) -> list[dict]:
    """All series matching the selector, as ``{"metric": {...}, "values": [...],
    "timestamps": [ms, ...]}`` dicts (after /internal/force_flush)."""
    victoria_flush(service)
    params = [("match[]", match)]
    if start is not None:
        params.append(("start", start))
    if end is not None:
        params.append(("end", end))
    body = _request(f"{service.url}/api/v1/export?{urllib.parse.urlencode(params)}")
    return [json.loads(line) for line in body.decode().splitlines() if line.strip()]


# --------------------------------------------------------------------------- manual use


def _main() -> None:  # pragma: no cover - manual tool
    import argparse
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", help="working directory (default: a new temp dir)")
    args = parser.parse_args()
    root = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="gw-services-"))
    started = [
        start_mosquitto(root / "mosquitto"),
        start_influxdb1(root / "influxdb1"),
        start_victoria(root / "victoria"),
    ]
    for svc in started:
        where = svc.url if svc.http else f"mqtt://{svc.address}"
        print(f"{svc.name:10} {where:28} pid {svc.process.pid}  {svc.workdir}", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        stop_all()


if __name__ == "__main__":  # pragma: no cover
    _main()
