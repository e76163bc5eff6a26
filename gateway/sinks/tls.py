"""TLS to the upstream broker: the SSL context, and a plain account of why a connection failed.

paho-mqtt swallows the exception of a failed (re)connect and only calls `on_connect_fail`,
so an engineer would see "not connected" and nothing else. `diagnose` repeats the TCP
connect and TLS handshake once with the same context and returns the reason in words
("certificate verify failed: unable to get local issuer certificate").
"""

from __future__ import annotations

import socket
import ssl

from gateway.config.models import TlsConfig


class TlsSetupError(Exception):
    """The TLS files in the config cannot be used; the message says which and why."""


def ssl_context(tls: TlsConfig) -> ssl.SSLContext:
    """A client context: the broker verified against `ca_file` (or the system store), our
    certificate and key presented if configured, the host name checked unless told not to."""
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=str(tls.ca_file) if tls.ca_file else None
        )
    except (OSError, ssl.SSLError) as exc:
        raise TlsSetupError(f"cannot load the CA file {tls.ca_file}: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = tls.verify_hostname
    if tls.cert_file is not None:
        password = tls.key_password.reveal() if tls.key_password is not None else None
        try:
            context.load_cert_chain(
                str(tls.cert_file), str(tls.key_file) if tls.key_file else None, password or None
            )
        except (OSError, ssl.SSLError) as exc:
            raise TlsSetupError(
                f"cannot load the client certificate {tls.cert_file} with key "
                f"{tls.key_file or tls.cert_file}: {exc} (a wrong key_password reads as a bad key)"
            ) from None
    elif tls.key_file is not None:
        raise TlsSetupError("tls.key_file is set without tls.cert_file")
    return context


def diagnose(host: str, port: int, context: ssl.SSLContext | None, timeout: float = 5.0) -> str:
    """Why connecting to host:port fails, in words; "" if the TCP and TLS steps succeed."""
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except OSError as exc:
        return f"cannot reach {host}:{port}: {exc.strerror or exc}"
    with raw:
        if context is None:
            return ""
        try:
            with context.wrap_socket(raw, server_hostname=host) as tls:
                tls.do_handshake()
        except ssl.SSLCertVerificationError as exc:
            return (f"TLS: the broker's certificate was not accepted: {exc.verify_message} "
                    f"({exc.reason})")
        except (ssl.SSLEOFError, ConnectionError) as exc:
            # what a plaintext listener does with a TLS hello; never retried without TLS
            return (f"TLS handshake failed: {host}:{port} ended the connection "
                    f"({_why(exc)}); is it a TLS listener? A plaintext MQTT port drops a "
                    "TLS hello")
        except ssl.SSLError as exc:
            return f"TLS handshake failed: {exc.reason or exc}"
        except OSError as exc:
            return f"TLS handshake failed: {exc.strerror or exc}"
    return ""


def _why(exc: OSError) -> str:
    if isinstance(exc, ssl.SSLError):
        return str(exc.reason or exc)
    return exc.strerror or str(exc)
