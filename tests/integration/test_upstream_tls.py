"""TLS to the broker with a CA the test makes: server certificate, client certificate with an
encrypted key (its password from a Secret), and a clear failure with the wrong CA."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
import uuid
from pathlib import Path

import pytest
import services
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import SecretStr
from upstream_tools import Recorder

from gateway.batch import Batch, Kind, Record
from gateway.catalog import Catalog
from gateway.config.models import MqttSinkConfig, Secret, TlsConfig
from gateway.sinks.base import SinkUnavailable
from gateway.sinks.mqtt import MqttSink

pytestmark = pytest.mark.integration

KEY_PASSWORD = "s3cret-key-pass"


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey, password: str | None = None) -> None:
    encryption = (
        serialization.BestAvailableEncryption(password.encode()) if password
        else serialization.NoEncryption()
    )
    path.write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption
    ))


class TestCa:
    """A throwaway certificate authority that signs server and client certificates."""

    __test__ = False  # not a test class for pytest

    def __init__(self, folder: Path, name: str) -> None:
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, key_cert_sign=True, crl_sign=True,
                content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, encipher_only=False, decipher_only=False,
            ), critical=True)
            .sign(self.key, hashes.SHA256())
        )
        self.cert_file = folder / f"{name}.crt"
        self.cert_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, common: str, *, server: bool, password: str | None = None) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common)).issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
            ]), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        cert_file, key_file = self.folder / f"{common}.crt", self.folder / f"{common}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key_file, key, password)
        return cert_file, key_file


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    folder = tmp_path_factory.mktemp("pki")
    ca = TestCa(folder, "site-ca")
    server_cert, server_key = ca.issue("broker", server=True)
    client_cert, client_key = ca.issue("gateway-1", server=False, password=KEY_PASSWORD)
    other = TestCa(folder, "other-ca")
    return {"ca": ca, "server": (server_cert, server_key), "client": (client_cert, client_key),
            "other_ca": other}


@pytest.fixture(scope="module")
def tls_broker(pki, tmp_path_factory):
    """Mosquitto with only a TLS listener that requires a client certificate from our CA."""
    cert, key = pki["server"]
    tls = services.MosquittoTls(pki["ca"].cert_file, cert, key, require_certificate=True)
    broker = services.start_mosquitto(tmp_path_factory.mktemp("mosquitto-tls"), tls=tls)
    try:
        yield broker
    finally:
        broker.stop()


def _secret(value: str) -> Secret:
    # What the loader does with {env: ...}: the value resolved into the Secret.
    return Secret(env="GATEWAY_TLS_KEY_PASSWORD", value=SecretStr(value))


def _tls_config(pki, *, ca: Path, password: str = KEY_PASSWORD) -> TlsConfig:
    cert, key = pki["client"]
    return TlsConfig(ca_file=ca, cert_file=cert, key_file=key, key_password=_secret(password))


def _recorder_context(pki) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki["ca"].cert_file))
    context.load_cert_chain(*pki["client"], password=KEY_PASSWORD)
    return context


async def test_gateway_connects_over_tls_with_a_client_certificate(pki, tls_broker):
    site = f"tls{uuid.uuid4().hex[:6]}"
    recorder = Recorder(tls_broker.host, tls_broker.port, f"pm/{site}/#",
                        tls_context=_recorder_context(pki))
    config = MqttSinkConfig(
        host="127.0.0.1", port=tls_broker.port, gateway_id="ipc-tls",
        tls=_tls_config(pki, ca=pki["ca"].cert_file),
    )
    sink = MqttSink(config, Catalog(site, "tls site", {}))
    await sink.start()
    try:
        assert await sink.wait_connected(10), sink.last_connect_error
        await sink.send([Record(1, "0a0b:1", Kind.READING, Batch("pump1", 1.0, ("p",), [2.5]))])
        messages = recorder.wait(lambda ms: any("/telemetry/" in m.topic for m in ms), 10,
                                 "telemetry over TLS")
    finally:
        await sink.stop()
        recorder.close()
    telemetry = next(m for m in messages if "/telemetry/" in m.topic)
    assert telemetry.topic == f"pm/{site}/ipc-tls/telemetry/pump1"
    assert telemetry.body["values"] == {"p": 2.5}


async def test_a_wrong_ca_fails_clearly_and_nothing_is_sent(pki, tls_broker):
    config = MqttSinkConfig(
        host="127.0.0.1", port=tls_broker.port, gateway_id="ipc-wrong-ca",
        tls=_tls_config(pki, ca=pki["other_ca"].cert_file),
    )
    sink = MqttSink(config, Catalog("tls-wrong", "tls site", {}))
    await sink.start()
    try:
        assert not await sink.wait_connected(3)
        for _ in range(100):  # the diagnosis runs in a thread after paho's failed attempt
            if sink.last_connect_error:
                break
            await asyncio.sleep(0.05)
        assert sink.last_connect_error is not None
        assert "certificate was not accepted" in sink.last_connect_error
        assert "certificate_verify_failed" in sink.last_connect_error.lower()
        with pytest.raises(SinkUnavailable, match="certificate"):
            await sink.send([Record(1, "0a0b:1", Kind.READING, Batch("p1", 1.0, ("p",), [1]))])
    finally:
        await sink.stop()


async def test_a_wrong_key_password_is_a_setup_error_that_says_so(pki, tls_broker):
    config = MqttSinkConfig(
        host="127.0.0.1", port=tls_broker.port, gateway_id="ipc-bad-pass",
        tls=_tls_config(pki, ca=pki["ca"].cert_file, password="not-the-password"),
    )
    sink = MqttSink(config, Catalog("tls-pass", "tls site", {}))
    await sink.start()
    try:
        with pytest.raises(SinkUnavailable, match="client certificate .* key_password"):
            await sink.send([Record(1, "0a0b:1", Kind.READING, Batch("p1", 1.0, ("p",), [1]))])
    finally:
        await sink.stop()
