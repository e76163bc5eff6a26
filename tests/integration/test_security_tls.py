"""TLS, when configured, is required and checked: a broker whose certificate does not chain
to the configured CA (a self-signed one), or names another host, is refused and the refusal
logged in words; a plaintext listener is never spoken to in plaintext; with the right CA the
same gateway connects. InfluxDB over https is verified against the system store (which
SSL_CERT_FILE can point at a private CA), never skipped."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import os
import ssl
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import services
import structlog
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from test_upstream_tls import TestCa
from upstream_tools import Recorder

from gateway.batch import Batch, Kind, Record
from gateway.catalog import Catalog
from gateway.config.models import InfluxSinkConfig, MqttSinkConfig, TlsConfig
from gateway.sinks.base import SinkUnavailable
from gateway.sinks.influx import InfluxSink
from gateway.sinks.mqtt import MqttSink

pytestmark = pytest.mark.integration

LOOPBACK = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]


def self_signed(folder: Path, common: str, names: list[x509.GeneralName]) -> tuple[Path, Path]:
    """A server certificate that is its own issuer: what a broker set up in a hurry has."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = folder / f"{common}.crt", folder / f"{common}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


def issued_for(ca: TestCa, folder: Path, common: str, names: list[x509.GeneralName]) -> tuple[Path, Path]:
    """A server certificate from the site CA, for the names given only."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)]))
        .issuer_name(ca.cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca.key, hashes.SHA256())
    )
    cert_file, key_file = folder / f"{common}.crt", folder / f"{common}.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    folder = tmp_path_factory.mktemp("pki-security")
    ca = TestCa(folder, "site-ca")
    return {
        "folder": folder,
        "ca": ca,
        "self_signed": self_signed(folder, "broker-self-signed", LOOPBACK),
        "other_host": issued_for(ca, folder, "broker-elsewhere",
                                 [x509.DNSName("broker.example.com")]),
    }


@pytest.fixture(scope="module")
def brokers(pki, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, services.Service]]:
    """TLS-only Mosquitto listeners: one with a self-signed certificate, one whose certificate
    (from the site CA) names another host."""
    started: dict[str, services.Service] = {}
    try:
        for name in ("self_signed", "other_host"):
            cert, key = pki[name]
            tls = services.MosquittoTls(pki["ca"].cert_file, cert, key)
            started[name] = services.start_mosquitto(tmp_path_factory.mktemp(name), tls=tls)
        yield started
    finally:
        for broker in started.values():
            broker.stop()


def _reading() -> list[Record]:
    return [Record(1, "0a0b:1", Kind.READING, Batch("pump_1", 1.0, ("p",), [2.5]))]


async def _refused(config: MqttSinkConfig, site: str) -> tuple[MqttSink, list[dict]]:
    """Start a sink that must not connect; its error once diagnosed, and what it logged."""
    sink = MqttSink(config, Catalog(site, "tls site", {}))
    with structlog.testing.capture_logs() as logged:
        await sink.start()
        try:
            assert not await sink.wait_connected(3)
            for _ in range(200):  # paho fails first, then the diagnosis runs in a thread
                if sink.last_connect_error:
                    break
                await asyncio.sleep(0.05)
            with pytest.raises(SinkUnavailable):
                await sink.send(_reading())
            assert sink.published == 0
        finally:
            await sink.stop()
    return sink, logged


def _cannot_connect(logged: list[dict]) -> dict:
    [event] = [e for e in logged if e["event"] == "mqtt cannot connect to the broker"]
    assert event["log_level"] == "error" and event["tls"] is True
    return event


async def test_a_self_signed_broker_certificate_is_refused_and_the_log_says_why(pki, brokers) -> None:
    broker = brokers["self_signed"]
    config = MqttSinkConfig(host="127.0.0.1", port=broker.port, gateway_id="ipc-1",
                            tls=TlsConfig(ca_file=pki["ca"].cert_file))
    sink, logged = await _refused(config, f"ss{uuid.uuid4().hex[:6]}")
    event = _cannot_connect(logged)
    assert "the broker's certificate was not accepted" in event["reason"]
    assert "self-signed certificate" in event["reason"]
    assert sink.last_connect_error == event["reason"]


async def test_the_same_broker_is_accepted_once_its_certificate_is_the_configured_ca(
    pki, brokers
) -> None:
    broker = brokers["self_signed"]
    site = f"ok{uuid.uuid4().hex[:6]}"
    trusted = ssl.create_default_context(cafile=str(pki["self_signed"][0]))
    recorder = Recorder(broker.host, broker.port, f"pm/{site}/#", tls_context=trusted)
    config = MqttSinkConfig(host="127.0.0.1", port=broker.port, gateway_id="ipc-1",
                            tls=TlsConfig(ca_file=pki["self_signed"][0]))
    sink = MqttSink(config, Catalog(site, "tls site", {}))
    await sink.start()
    try:
        assert await sink.wait_connected(10), sink.last_connect_error
        await sink.send(_reading())
        recorder.wait(lambda ms: any("/telemetry/pump_1" in m.topic for m in ms), 10,
                      "telemetry over TLS")
    finally:
        await sink.stop()
        recorder.close()


async def test_a_certificate_for_another_host_is_refused_unless_host_checks_are_turned_off(
    pki, brokers
) -> None:
    broker = brokers["other_host"]
    checked = MqttSinkConfig(host="127.0.0.1", port=broker.port, gateway_id="ipc-1",
                             tls=TlsConfig(ca_file=pki["ca"].cert_file))
    _sink, logged = await _refused(checked, f"oh{uuid.uuid4().hex[:6]}")
    reason = _cannot_connect(logged)["reason"]
    assert "not accepted" in reason and "IP address mismatch" in reason, reason

    unchecked = checked.model_copy(update={
        "tls": TlsConfig(ca_file=pki["ca"].cert_file, verify_hostname=False)})
    sink = MqttSink(unchecked, Catalog(f"oh{uuid.uuid4().hex[:6]}", "tls site", {}))
    await sink.start()
    try:  # the chain is still checked: only the name is not
        assert await sink.wait_connected(10), sink.last_connect_error
    finally:
        await sink.stop()


async def test_tls_is_never_given_up_for_plaintext(pki, mosquitto) -> None:
    """Pointed at a plaintext listener, a TLS gateway fails the handshake and sends nothing."""
    site = f"pt{uuid.uuid4().hex[:6]}"
    recorder = Recorder(mosquitto.host, mosquitto.port, f"pm/{site}/#")
    config = MqttSinkConfig(host="127.0.0.1", port=mosquitto.port, gateway_id="ipc-1",
                            tls=TlsConfig(ca_file=pki["ca"].cert_file))
    try:
        _sink, logged = await _refused(config, site)
        # a marker published after the attempts: everything before it has been delivered
        recorder.client.publish(f"pm/{site}/marker", b"end", qos=1).wait_for_publish(10)
        messages = recorder.wait(lambda ms: any(m.topic.endswith("/marker") for m in ms), 10,
                                 "the marker")
    finally:
        recorder.close()
    reason = _cannot_connect(logged)["reason"]
    assert reason.startswith("TLS handshake failed"), reason
    assert "is it a TLS listener?" in reason
    assert [m.topic for m in messages] == [f"pm/{site}/marker"]  # no birth, no will, nothing


# --- InfluxDB over https ----------------------------------------------------------------


class _Accepting(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def https_influx(pki) -> Iterator[int]:
    """An InfluxDB write endpoint over TLS with the self-signed certificate."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Accepting)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*pki["self_signed"])
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


_SEND_ONE = """
import asyncio, sys
from gateway.batch import Batch, Kind, Record
from gateway.catalog import Catalog
from gateway.config.models import InfluxSinkConfig
from gateway.sinks.influx import InfluxSink

async def main():
    config = InfluxSinkConfig(type="influxdb", name="influx", url=sys.argv[1], api=sys.argv[2],
                              bucket="b", database="d", timeout=5.0)
    sink = InfluxSink(config, Catalog("site", "tls site", {}))
    try:
        await sink.send([Record(1, "0a0b:1", Kind.READING, Batch("pump_1", 1.0, ("p",), [2.5]))])
    finally:
        await sink.stop()
    print("written", sink.written)

asyncio.run(main())
"""


@pytest.mark.parametrize("api", ["v2", "v1"])
async def test_influxdb_over_https_checks_the_certificate_by_default(
    pki, https_influx: int, api: str
) -> None:
    url = f"https://localhost:{https_influx}"
    config = InfluxSinkConfig(type="influxdb", name="influx", url=url, api=api, bucket="b",
                              database="d", timeout=5.0)
    refused = InfluxSink(config, Catalog("site", "tls site", {}))
    try:
        with pytest.raises(SinkUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
            await refused.send(_reading())
        assert refused.written == 0
    finally:
        await refused.stop()
    # the operator's way to trust a private CA for InfluxDB today: SSL_CERT_FILE in the
    # service's environment (read when the process starts, so a process of its own)
    trusted = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-c", _SEND_ONE, url, api], capture_output=True,
        text=True, timeout=60, env={**os.environ, "SSL_CERT_FILE": str(pki["self_signed"][0])},
    )
    assert trusted.returncode == 0, trusted.stderr[-2000:]
    assert trusted.stdout.strip() == "written 1"
