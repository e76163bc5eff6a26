"""Loading a big site fast: libyaml reads the files that load cleanly, and whatever it
reads gives the same data, positions and messages as the pure-Python reference loader."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gateway.config import yaml_source
from gateway.config.errors import ConfigError
from gateway.config.yaml_source import parse_yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_FILES = sorted((ROOT / "config").rglob("*.yaml"))


def many_devices(count: int) -> str:
    return "devices:\n" + "".join(
        f"  - id: d{i:04d}\n    profile: meter\n"
        f"    connection: {{type: modbus_tcp, host: 10.0.{i // 250}.{i % 250 + 1}, port: 502, unit: 1}}\n"
        f"    poll_interval: 5s\n    location: {{building: 1号楼, floor: '{i % 30}', room: \"B{i}\"}}\n"
        for i in range(count)
    )


def reference(text: str, monkeypatch: pytest.MonkeyPatch):
    """What the pure-Python loader alone makes of `text`: the document or the ConfigError."""
    with monkeypatch.context() as patch:
        patch.setattr(yaml_source, "_FastLoader", None)
        return outcome(text)


def outcome(text: str):
    try:
        document = parse_yaml(text, "site.yaml")
    except ConfigError as exc:
        return [str(issue) for issue in exc.issues]
    return (document.data, document.values, document.keys, document.styles, document.spans)


@pytest.fixture
def libyaml_used(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The texts libyaml was given."""
    given: list[str] = []

    class Counting(yaml.CSafeLoader):
        def __init__(self, stream: str) -> None:
            given.append(stream)
            super().__init__(stream)

    monkeypatch.setattr(yaml_source, "_FastLoader", Counting)
    return given


@pytest.mark.parametrize("path", EXAMPLE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_example_file_reads_the_same_through_libyaml(path, monkeypatch, libyaml_used):
    text = path.read_text(encoding="utf-8")
    assert outcome(text) == reference(text, monkeypatch)


def test_a_thousand_devices_are_read_by_libyaml_with_every_position(monkeypatch, libyaml_used):
    text = many_devices(1000)
    fast = outcome(text)

    assert libyaml_used == [text]
    assert fast == reference(text, monkeypatch)
    lines = text.splitlines()
    line = lines.index("  - id: d0999") + 3  # 1-based: the connection line after id and profile
    assert fast[1][("devices", 999, "connection", "port")] == (line, lines[line - 1].index("502") + 1)


@pytest.mark.parametrize(("text", "why"), [
    ("outbox:\n  fsyn\tc: full\n", "a tab, which libyaml takes as part of a key"),
    ("a: {x: , y: 1}\n", "an empty value in braces, which libyaml places after the space"),
    ("enum: {1: door, 2: b?arrier}\n", "a ? inside braces, which libyaml reads as text"),
    ("ke\ufeffy: v\n", "a byte-order mark inside, whose column the two count differently"),
])
def test_where_libyaml_differs_the_reference_decides(text, why, monkeypatch, libyaml_used):
    assert outcome(text) == reference(text, monkeypatch), why


def test_a_broken_file_gets_the_reference_message(monkeypatch, libyaml_used):
    text = "site:\n  id: a\n  name: [unclosed\nlogging: {}\n"
    messages = outcome(text)

    assert libyaml_used == [text]  # libyaml tried, objected, and the reference explained
    assert messages == reference(text, monkeypatch)
    assert "a '[' is not closed" in messages[0]
