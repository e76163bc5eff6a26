"""Generated site configurations for the benchmarks (site.yaml, one profile, one device file)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

SITE_ID = "bench"
GATEWAY_ID = "gw1"


def block_profile(registers: int, *, profile_id: str = "bench_block", alarm_over: float | None = None) -> str:
    """`registers` uint16 holding registers r0..r<M-1> in one block from address 0.

    With `alarm_over`, point r0 is called `value` and a rule raises a major alarm when it
    exceeds that threshold.
    """
    names = [("value" if alarm_over is not None and i == 0 else f"r{i}") for i in range(registers)]
    lines = [
        f"id: {profile_id}",
        "name: benchmark register block",
        "system: power",
        "protocol: modbus",
        "points:",
        *(f"  {name}: {{table: holding, address: {i}, type: uint16}}" for i, name in enumerate(names)),
    ]
    if alarm_over is not None:
        lines += [
            "rules:",
            "  - id: high",
            "    name: value high",
            f"    when: value > {alarm_over:g}",
            "    alarm:",
            "      severity: major",
            '      message: "value {value}"',
            "      chatter: off   # the benchmark raises it again and again on purpose",
        ]
    return "\n".join(lines) + "\n"


@dataclass
class Upstream:
    host: str
    port: int
    keepalive: str = "5s"


def write_site(
    root: Path,
    *,
    ports: list[int],
    registers: int,
    poll_interval: str = "1s",
    upstream: Upstream | None = None,
    sinks_yaml: str = "",
    alarm_over: float | None = None,
    flush_interval: str = "200ms",
    fsync: str = "full",
    timeout: str = "1s",
    log_level: str = "info",
) -> Path:
    """Write a site with one device per port (ids d0000...), all of one block profile."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "profiles").mkdir(exist_ok=True)
    (root / "devices").mkdir(exist_ok=True)
    (root / "rules").mkdir(exist_ok=True)
    (root / "profiles" / "bench_block.yaml").write_text(
        block_profile(registers, alarm_over=alarm_over), encoding="utf-8")
    entries = "".join(
        f"  - id: {device_id(i)}\n"
        f"    profile: bench_block\n"
        f"    connection: {{type: modbus_tcp, host: 127.0.0.1, port: {port}, unit: 1, timeout: {timeout}}}\n"
        f"    poll_interval: {poll_interval}\n"
        for i, port in enumerate(ports)
    )
    (root / "devices" / "bench.yaml").write_text("devices:\n" + entries, encoding="utf-8")
    up = ""
    if upstream is not None:
        up = (
            "upstream:\n"
            f"  host: {upstream.host}\n"
            f"  port: {upstream.port}\n"
            f"  gateway_id: {GATEWAY_ID}\n"
            f"  client_id: bench-{GATEWAY_ID}\n"
            "  topic_prefix: pm\n"
            f"  keepalive: {upstream.keepalive}\n"
        )
    site = (
        "site:\n"
        f"  id: {SITE_ID}\n"
        "  name: benchmark site\n"
        "data_dir: data\n"
        "outbox:\n"
        f"  flush_interval: {flush_interval}\n"
        f"  fsync: {fsync}\n"
        "logging:\n"
        f"  level: {log_level}\n"
        "  format: json\n"
        f"{sinks_yaml}"
        f"{up}"
    )
    (root / "site.yaml").write_text(site, encoding="utf-8")
    return root / "site.yaml"


def device_id(index: int) -> str:
    return f"d{index:04d}"


def device_index(device: str) -> int:
    return int(device[1:])


def influx_v2_sink(url: str, *, name: str = "influx", flush_interval: str = "200ms") -> str:
    return (
        "sinks:\n"
        "  - type: influxdb\n"
        f"    name: {name}\n"
        f"    url: {url}\n"
        "    api: v2\n"
        "    org: bench\n"
        "    bucket: bench\n"
        f"    flush_interval: {flush_interval}\n"
    )
