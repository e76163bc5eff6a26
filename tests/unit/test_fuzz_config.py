"""Fuzzed site configurations: whatever an engineer's editor leaves in a YAML file, loading
either succeeds or fails with located errors — never a traceback, never a silent half-load.

Each example copies the example site, damages one of its files (a value replaced by a
random scalar, a line deleted, duplicated, re-indented or replaced by random text) and loads
it. Every issue must name a file and a line, so the engineer knows where to look.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from gateway.config.errors import ConfigError
from gateway.config.loader import load_site
from gateway.config.models import SiteConfig

REPO = Path(__file__).resolve().parents[2]
# the files an engineer edits most, one of each kind
TARGETS = (
    "site.yaml",
    "profiles/booster_pump.yaml",
    "profiles/elevator_iot_box.yaml",
    "devices/plant.yaml",
    "rules/site_rules.yaml",
)
YAMLISH = st.characters(codec="utf-8", exclude_categories=("Cs",))
SCALARS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(["", "~", "null", "yes", "no", "on", "[]", "{}", "-", "&a", "*a", "!!int x",
                     "|", ">-", "'", '"', "{env: NOPE_NOT_SET}", "{file: /nonexistent}",
                     "1e400", "0x1F", "10m", "-5s", "无", "水泵", "%", "@", "`"]),
    st.text(YAMLISH, max_size=24),
)


@pytest.fixture(scope="module")
def site_copy() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fuzz-config-") as tmp:
        root = Path(tmp) / "config"
        shutil.copytree(REPO / "config", root, ignore=shutil.ignore_patterns("data", "grafana"))
        yield root


@st.composite
def damaged(draw: st.DrawFn, lines: list[str]) -> list[str]:
    """The file's lines with one random edit an editor could leave behind."""
    lines = list(lines)
    index = draw(st.integers(0, len(lines) - 1))
    how = draw(st.sampled_from(["value", "delete", "duplicate", "indent", "dedent", "garbage"]))
    line = lines[index]
    if how == "value" and ":" in line:
        key = line.split(":", 1)[0]
        lines[index] = f"{key}: {draw(SCALARS)}"
    elif how == "delete":
        del lines[index]
    elif how == "duplicate":
        lines.insert(index, line)
    elif how == "indent":
        lines[index] = "  " + line
    elif how == "dedent":
        lines[index] = line[2:] if line.startswith("  ") else line.lstrip()
    else:
        lines[index] = draw(st.text(YAMLISH, max_size=40)).replace("\n", " ")
    return lines


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), target=st.sampled_from(TARGETS))
def test_a_damaged_file_loads_or_fails_with_located_errors(
        site_copy: Path, data: st.DataObject, target: str) -> None:
    path = site_copy / target
    original = (REPO / "config" / target).read_text(encoding="utf-8")
    edited = data.draw(damaged(original.splitlines()))
    path.write_text("\n".join(edited) + "\n", encoding="utf-8")
    try:
        config = load_site(site_copy / "site.yaml")
    except ConfigError as error:
        event("refused with located errors")
        assert error.issues, "a ConfigError with no issue tells the engineer nothing"
        for issue in error.issues:
            assert issue.file is not None, f"an issue without a file: {issue}"
            assert issue.line is not None, f"an issue without a line: {issue}"
            assert issue.message.strip(), f"an issue without a message at {issue.location()}"
    else:
        event("still a valid site")
        assert isinstance(config, SiteConfig)
    finally:
        path.write_text(original, encoding="utf-8")


@settings(max_examples=40, deadline=None)
@given(text=st.text(YAMLISH, max_size=200))
def test_any_text_as_a_profile_loads_or_fails_with_located_errors(
        site_copy: Path, text: str) -> None:
    path = site_copy / "profiles" / "fuzzed.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        load_site(site_copy / "site.yaml")
    except ConfigError as error:
        assert error.issues, "a ConfigError with no issue tells the engineer nothing"
        assert all(issue.file is not None and issue.message.strip() for issue in error.issues)
    finally:
        path.unlink()


def test_a_file_that_is_not_utf8_is_a_located_error(site_copy: Path) -> None:
    path = site_copy / "profiles" / "latin1.yaml"
    path.write_bytes("id: pompe\nname: pompe à eau\n".encode("latin-1"))
    try:
        with pytest.raises(ConfigError) as caught:
            load_site(site_copy / "site.yaml")
    finally:
        path.unlink()
    assert "latin1.yaml" in str(caught.value)
