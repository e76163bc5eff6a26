"""The systemd unit keeps its hardening: every option systemd/README.md explains is in
systemd/gateway.service with the value it explains, and the README names each one."""

from __future__ import annotations

from pathlib import Path

import pytest

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"

# Option -> every value it must have (options systemd accepts more than once are lists).
HARDENING: dict[str, list[str]] = {
    "User": ["gateway"],
    "Group": ["gateway"],
    "SupplementaryGroups": ["dialout"],
    "StateDirectoryMode": ["0750"],
    "UMask": ["0027"],
    "NoNewPrivileges": ["yes"],
    "ProtectSystem": ["strict"],
    "ReadWritePaths": ["/var/lib/gateway"],
    "ProtectHome": ["yes"],
    "PrivateTmp": ["yes"],
    "ProtectKernelTunables": ["yes"],
    "ProtectKernelModules": ["yes"],
    "ProtectKernelLogs": ["yes"],
    "ProtectControlGroups": ["yes"],
    "ProtectClock": ["yes"],
    "ProtectHostname": ["yes"],
    "ProtectProc": ["invisible"],
    "RestrictSUIDSGID": ["yes"],
    "RestrictRealtime": ["yes"],
    "RestrictNamespaces": ["yes"],
    "LockPersonality": ["yes"],
    "MemoryDenyWriteExecute": ["yes"],
    "RemoveIPC": ["yes"],
    "PrivateMounts": ["yes"],
    "RestrictAddressFamilies": ["AF_UNIX AF_INET AF_INET6 AF_NETLINK"],
    "SystemCallArchitectures": ["native"],
    "SystemCallFilter": ["@system-service", "~@privileged @resources"],
    "CapabilityBoundingSet": [""],
    "AmbientCapabilities": [""],
    "PrivateDevices": ["no"],
    "DevicePolicy": ["closed"],
    "DeviceAllow": ["char-ttyUSB rw", "char-ttyS rw", "char-ttyAMA rw", "char-ttyACM rw"],
}
LIFE_CYCLE: dict[str, list[str]] = {
    "Type": ["notify"],
    "NotifyAccess": ["main"],
    "WatchdogSec": ["30s"],
    "Restart": ["on-failure"],
    "TimeoutStopSec": ["10s"],
    "KillMode": ["mixed"],
    "EnvironmentFile": ["-/etc/gateway/secrets.env"],
}


def parse_unit(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections of a unit file, each option with all its values in order (systemd allows an
    option more than once; configparser does not)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, sep, value = line.partition("=")
        assert sep and current is not None, f"gateway.service:{number}: not an option: {raw!r}"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


@pytest.fixture(scope="module")
def service() -> dict[str, list[str]]:
    return parse_unit((SYSTEMD / "gateway.service").read_text(encoding="utf-8"))["Service"]


@pytest.mark.parametrize(("option", "values"), sorted({**HARDENING, **LIFE_CYCLE}.items()))
def test_the_unit_keeps_its_hardening_and_life_cycle(
    service: dict[str, list[str]], option: str, values: list[str]
) -> None:
    """Exactly these values: an option repeated further down (a later `NoNewPrivileges=no`
    would win) or dropped fails here."""
    assert service.get(option) == values


def test_the_readme_explains_every_hardening_option() -> None:
    readme = (SYSTEMD / "README.md").read_text(encoding="utf-8")
    missing = [option for option in HARDENING if f"`{option}=" not in readme]
    assert missing == []
    assert "systemd-analyze security gateway" in readme
    assert "WatchdogSec=30s" in readme
