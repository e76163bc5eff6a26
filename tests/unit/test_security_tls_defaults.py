"""TLS to the broker is strict unless told otherwise, and cannot be told to skip the checks:
certificates required and verified, host names checked, TLS 1.2 at least, no `insecure`."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.catalog import Catalog
from gateway.config.models import MqttSinkConfig, TlsConfig
from gateway.sinks.base import SinkUnavailable
from gateway.sinks.mqtt import MqttSink
from gateway.sinks.tls import TlsSetupError, ssl_context


def test_the_defaults_verify_the_chain_and_the_host_name() -> None:
    context = ssl_context(TlsConfig())
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_turning_host_checks_off_still_verifies_the_certificate() -> None:
    context = ssl_context(TlsConfig(verify_hostname=False))
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is False


@pytest.mark.parametrize("key", ["insecure", "verify", "tls_insecure", "cert_reqs"])
def test_there_is_no_switch_that_skips_certificate_checks(key: str) -> None:
    with pytest.raises(ValidationError, match=key):
        MqttSinkConfig(host="broker", tls={key: False})


def test_a_missing_ca_file_is_a_setup_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-ca.pem"
    with pytest.raises(TlsSetupError, match=str(missing)):
        ssl_context(TlsConfig(ca_file=missing))


async def test_a_tls_setup_error_stops_the_link_rather_than_connecting_without_tls(
    tmp_path: Path,
) -> None:
    config = MqttSinkConfig(host="127.0.0.1", port=1, tls=TlsConfig(ca_file=tmp_path / "x.pem"))
    sink = MqttSink(config, Catalog("site", "site", {}))
    await sink.start()
    try:
        assert sink._client is None  # noqa: SLF001 - no connection was even attempted
        with pytest.raises(SinkUnavailable, match="mqtt TLS setup failed: cannot load the CA"):
            await sink.send([])
    finally:
        await sink.stop()
