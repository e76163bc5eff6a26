"""Secrets never leave the gateway: a whole `gateway run` process with a broker password, an
InfluxDB token and two MQTT device broker passwords (from the environment and from files),
made to fail every way a secret is involved in (a broker refusing a wrong password, InfluxDB
answering 401, a configuration error at a secret's key, in a reload the platform asked for),
and then every log line, the status file, the audit log and every MQTT message a subscriber
on `#` saw is searched for the secrets' values.

The secrets are used, not only configured: the broker accepts the right passwords and the
InfluxDB peer receives the token, so a test that finds nothing found nothing for a reason.
"""

from __future__ import annotations

import json
import queue
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
import services
from gateway_process import GatewayProcess, StaticDevice, wait_until, write_site

pytestmark = pytest.mark.integration

RUN = uuid.uuid4().hex[:8]  # secrets unique to this run: no match can come from elsewhere
UPSTREAM_PASSWORD = f"Up-{RUN}-s3cret"
WRONG_UPSTREAM_PASSWORD = f"Wrong-{RUN}-upstream"
INFLUX_TOKEN = f"Tok-{RUN}-influx-AAAABBBBCCCC"
DEVICE_PASSWORD = f"Dev-{RUN}-broker"  # from the environment, right
WRONG_DEVICE_PASSWORD = f"Dev2-{RUN}-wrong"  # from a file, wrong
INLINE_SECRET = f"Inline-{RUN}-written-in-yaml"  # what an engineer must not do
SECRETS = {
    "upstream password": UPSTREAM_PASSWORD, "wrong upstream password": WRONG_UPSTREAM_PASSWORD,
    "influx token": INFLUX_TOKEN, "device password": DEVICE_PASSWORD,
    "wrong device password": WRONG_DEVICE_PASSWORD, "inline secret": INLINE_SECRET,
}
USERS = {
    "gw-sec": UPSTREAM_PASSWORD,
    "dev-ok": DEVICE_PASSWORD,
    "dev-refused": f"Dev2-{RUN}-right",
    "platform-ops": f"Ops-{RUN}",
    "watcher": f"Watch-{RUN}",
}
ACL = """\
pattern write pm/+/+/commands/%u
user gw-sec
topic readwrite pm/#
user dev-ok
topic read estate/#
user dev-refused
topic read estate/#
user platform-ops
topic read pm/#
user watcher
topic read #
topic write estate/#
"""

BUTTON = """\
id: button
name: 紧急呼叫按钮
system: emergency
protocol: mqtt
points:
  sos: {topic: event, path: $.state, type: bool, map: {pressed: true, cleared: false}}
"""


class Refusing401(BaseHTTPRequestHandler):
    """An InfluxDB 2 write API that refuses the token: 401 with InfluxDB's own body."""

    seen_authorization: queue.Queue[str] = queue.Queue()

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.seen_authorization.put(self.headers.get("Authorization", ""))
        body = b'{"code":"unauthorized","message":"unauthorized access"}'
        self.send_response(401)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[services.Service]:
    workdir = tmp_path_factory.mktemp("mosquitto-accounts")
    accounts = services.mosquitto_accounts(workdir, USERS, ACL)
    svc = services.start_mosquitto(workdir, accounts=accounts)
    try:
        yield svc
    finally:
        svc.stop()


@pytest.fixture
def influx_401() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Refusing401)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


class Everything:
    """A subscriber on `#` keeping every message's topic and raw payload."""

    def __init__(self, port: int) -> None:
        self.messages: list[tuple[str, bytes]] = []
        subscribed: queue.Queue[bool] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"watch-{RUN}")
        self.client.username_pw_set("watcher", USERS["watcher"])
        self.client.on_message = lambda c, u, m: self.messages.append((m.topic, bytes(m.payload)))
        self.client.on_subscribe = lambda *a: subscribed.put(True)
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("#", qos=1)
        self.client.loop_start()
        subscribed.get(timeout=10)

    def publish(self, topic: str, payload: dict[str, Any]) -> None:
        self.client.publish(topic, json.dumps(payload), qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def _site(root: Path, *, broker_port: int, modbus_port: int, influx_port: int,
          site_id: str) -> Path:
    (root / "secrets").mkdir(parents=True, exist_ok=True)
    (root / "secrets" / "influx_token").write_text(INFLUX_TOKEN + "\n", encoding="utf-8")
    (root / "secrets" / "device_password").write_text(WRONG_DEVICE_PASSWORD, encoding="utf-8")
    sinks = f"""\
sinks:
  - type: influxdb
    name: influx
    url: http://127.0.0.1:{influx_port}
    bucket: site
    org: pm
    token: {{file: secrets/influx_token}}
    flush_interval: 200ms
"""
    upstream = f"""\
upstream:
  host: 127.0.0.1
  port: {broker_port}
  gateway_id: ipc-1
  username: gw-sec
  password: {{env: GW_SEC_UPSTREAM_PASSWORD}}
  commands:
    allow:
      reload: [platform-ops]
      status: [platform-ops]
"""
    site = write_site(root, site_id=site_id, devices={"pump_1": modbus_port}, sinks=sinks,
                      upstream=upstream)
    (root / "profiles" / "button.yaml").write_text(BUTTON, encoding="utf-8")
    (root / "devices" / "buttons.yaml").write_text(f"""\
devices:
  - id: button_ok
    profile: button
    connection:
      type: mqtt
      port: {broker_port}
      username: dev-ok
      password: {{env: GW_SEC_DEVICE_PASSWORD}}
      client_id: button-ok-{RUN}
      base_topic: estate/{site_id}/button-ok
  - id: button_refused
    profile: button
    connection:
      type: mqtt
      port: {broker_port}
      username: dev-refused
      password: {{file: secrets/device_password}}
      client_id: button-refused-{RUN}
      base_topic: estate/{site_id}/button-refused
""", encoding="utf-8")
    return site


def _break_secrets(site: Path) -> None:
    """Configuration errors at secrets' keys: an unset variable, and a value written inline."""
    text = site.read_text(encoding="utf-8")
    text = text.replace("{file: secrets/influx_token}", "{env: GW_SEC_NOT_SET}")
    site.write_text(text, encoding="utf-8")
    buttons = site.parent / "devices" / "buttons.yaml"
    text = buttons.read_text(encoding="utf-8")
    buttons.write_text(
        text.replace("password: {env: GW_SEC_DEVICE_PASSWORD}", f'password: "{INLINE_SECRET}"'),
        encoding="utf-8")


def _leaks(where: str, text: str) -> list[str]:
    return [f"{name} in {where}" for name, value in SECRETS.items() if value in text]


class Platform:
    """platform-ops: sends a command on its own topic and waits for the reply."""

    def __init__(self, port: int, base: str) -> None:
        self.base = base
        self.replies: queue.Queue[dict[str, Any]] = queue.Queue()
        subscribed: queue.Queue[bool] = queue.Queue()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"ops-{RUN}")
        self.client.username_pw_set("platform-ops", USERS["platform-ops"])
        self.client.on_message = lambda c, u, m: self.replies.put(json.loads(m.payload))
        self.client.on_subscribe = lambda *a: subscribed.put(True)
        self.client.connect("127.0.0.1", port)
        self.client.subscribe(f"{base}/replies/+", qos=1)
        self.client.loop_start()
        subscribed.get(timeout=10)

    def ask(self, body: dict[str, Any], timeout: float = 15.0) -> dict[str, Any]:
        topic = f"{self.base}/commands/platform-ops"
        self.client.publish(topic, json.dumps(body), qos=1).wait_for_publish(10)
        while True:
            reply = self.replies.get(timeout=timeout)
            if reply.get("id") == body["id"]:
                return reply

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def test_no_secret_reaches_a_log_line_the_status_file_the_audit_log_or_mqtt(
    tmp_path: Path, broker: services.Service, influx_401: ThreadingHTTPServer, free_port: int,
) -> None:
    site_id = f"sec{RUN}"
    root = tmp_path / "site"
    site = _site(root, broker_port=broker.port, modbus_port=free_port,
                 influx_port=influx_401.server_address[1], site_id=site_id)
    data_dir = tmp_path / "data"
    env = {"GW_SEC_DEVICE_PASSWORD": DEVICE_PASSWORD}
    watcher = Everything(broker.port)
    platform = Platform(broker.port, f"pm/{site_id}/ipc-1")
    try:
        with StaticDevice(free_port):
            # 1. the broker refuses the upstream connection: wrong password from the environment
            wrong = GatewayProcess(site, data_dir,
                                   env={**env, "GW_SEC_UPSTREAM_PASSWORD": WRONG_UPSTREAM_PASSWORD})
            wrong.log = tmp_path / "wrong-password.log"
            try:
                wrong.start()
                wait_until(lambda: _logged(wrong, "mqtt broker refused the connection",
                                           sink="upstream", username="gw-sec"), 20,
                           "the broker refusing the wrong upstream password")
                wrong.terminate()
            finally:
                wrong.stop_quietly()

            # 2. the right password: upstream and one device broker connect; the other device's
            #    password (from a file) is refused; InfluxDB refuses the token with 401
            gateway = GatewayProcess(site, data_dir,
                                     env={**env, "GW_SEC_UPSTREAM_PASSWORD": UPSTREAM_PASSWORD})
            gateway.log = tmp_path / "running.log"
            try:
                gateway.start()
                wait_until(lambda: _logged(gateway, "mqtt connected", sink="upstream"), 20,
                           "upstream accepting the password from the environment")
                wait_until(lambda: _logged(gateway, "influxdb refuses writes; holding data until fixed", status=401), 20,
                           "InfluxDB answering 401")
                wait_until(lambda: _logged(gateway, "mqtt broker refused the connection",
                                           username="dev-refused"), 20,
                           "the device broker refusing the wrong password from a file")
                wait_until(lambda: _logged(gateway, "mqtt broker connected"), 20,
                           "the device broker accepting the password from the environment")
                watcher.publish(f"estate/{site_id}/button-ok/event", {"state": "pressed"})
                wait_until(lambda: any("/telemetry/button_ok" in t for t, _ in watcher.messages),
                           20, "the button's reading upstream")
                assert platform.ask({"id": "st-1", "type": "device_status",
                                     "device": "button_refused"})["ok"] is True
                # 3. a reload the platform asks for, with errors at two secrets' keys
                _break_secrets(site)
                reload = platform.ask({"id": "rl-1", "type": "reload"})
                assert reload["ok"] is False
                errors = "\n".join(reload["result"]["errors"])
                assert "sinks[0].token.env: environment variable GW_SEC_NOT_SET is not set" in errors
                assert "devices[0].connection.password: secrets are not written in the YAML" \
                    in errors, errors
                status = data_dir / "status.json"
                wait_until(lambda: status.exists() and "401" in status.read_text(encoding="utf-8"),
                           20, "the InfluxDB refusal in status.json")
                gateway.terminate()
            finally:
                gateway.stop_quietly()
            # 4. the same broken configuration from the command line
            check = subprocess.run(
                [sys.executable, "-m", "gateway.cli", "check", "-c", str(site)],
                capture_output=True, text=True, timeout=60,
                env={**gateway.env, "GW_SEC_UPSTREAM_PASSWORD": UPSTREAM_PASSWORD})
            assert check.returncode == 2
            assert "secrets are not written in the YAML" in check.stderr
    finally:
        platform.close()
        watcher.close()

    # the secrets were really used: the token reached InfluxDB, the passwords the broker
    assert f"Token {INFLUX_TOKEN}" in _drain(Refusing401.seen_authorization)
    log = wrong.log_text() + gateway.log_text()
    # ...and went nowhere else
    leaks = _leaks("the gateway's log (stdout and stderr)", log)
    leaks += _leaks("`gateway check` output", check.stdout + check.stderr)
    leaks += _leaks("status.json", (data_dir / "status.json").read_text(encoding="utf-8"))
    leaks += _leaks("audit.jsonl", (data_dir / "audit.jsonl").read_text(encoding="utf-8"))
    for topic, payload in watcher.messages:
        leaks += _leaks(f"MQTT message on {topic}", topic + payload.decode("utf-8", "replace"))
    assert leaks == []
    # what was looked at is what the test meant to look at
    assert sum(1 for line in log.splitlines() if line.startswith("{")) > 20
    assert any(t.endswith("/replies/rl-1") for t, _ in watcher.messages)
    assert any(t.endswith("/gateway/status") for t, _ in watcher.messages)


def _logged(process: GatewayProcess, event: str, **fields: Any) -> bool:
    """Whether the process logged `event` (a JSON line) with these fields."""
    for line in process.log_text().splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == event and all(record.get(k) == v for k, v in fields.items()):
            return True
    return False


def _drain(items: queue.Queue[str]) -> list[str]:
    out = []
    while not items.empty():
        out.append(items.get_nowait())
    return out
