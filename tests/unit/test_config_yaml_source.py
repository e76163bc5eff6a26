"""YAML with positions, and how issues read."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.errors import ConfigError, ConfigIssue
from gateway.config.yaml_source import load_yaml, parse_yaml

PUMP = """\
id: pump
points:
  outlet_pressure:
    address: 2
    name: 出水压力
    unit: MPa
devices:
  - id: a
  - {id: b, port: 502}
"""


def test_every_key_and_value_keeps_its_line_and_column() -> None:
    document = parse_yaml(PUMP, "pump.yaml")

    assert document.data["points"]["outlet_pressure"] == {"address": 2, "name": "出水压力", "unit": "MPa"}
    assert document.values[("points", "outlet_pressure", "address")] == (4, 14)
    assert document.keys[("points", "outlet_pressure", "address")] == (4, 5)
    # columns count characters, so Chinese text does not shift what follows
    assert document.values[("points", "outlet_pressure", "name")] == (5, 11)
    assert document.values[("devices", 1, "port")] == (9, 19)
    assert document.values[("devices", 0)] == (8, 5)


def test_a_path_never_written_is_located_at_its_nearest_written_parent() -> None:
    document = parse_yaml(PUMP, "pump.yaml")

    assert document.locate(("points", "outlet_pressure", "type")) == (4, 5)
    assert document.locate_mapping(("points", "outlet_pressure")) == (3, 3)
    assert document.locate(("nowhere", "at", "all")) == (1, 1)


def test_keys_stay_text_so_yaml_booleans_do_not_rename_points() -> None:
    document = parse_yaml("points:\n  on: 1\n  no: 2\n  8: 3\n", "x.yaml")

    assert list(document.data["points"]) == ["on", "no", "8"]


def test_values_keep_yaml_types() -> None:
    document = parse_yaml("a: 1\nb: 1.5\nc: true\nd: 2024-05-31\ne: 5s\nf:\n", "x.yaml")

    assert document.data == {"a": 1, "b": 1.5, "c": True, "d": __import__("datetime").date(2024, 5, 31),
                             "e": "5s", "f": None}


def test_duplicate_keys_are_reported_with_the_line_of_the_first() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_yaml("a: 1\nb:\n  c: 1\n  c: 2\na: 3\n", "x.yaml")

    assert [str(i) for i in caught.value.issues] == [
        "x.yaml:4:3 b.c: duplicate key 'c': it is already set on line 3; "
        "YAML would silently keep only the last one, so remove one of them",
        "x.yaml:5:1 a: duplicate key 'a': it is already set on line 1; "
        "YAML would silently keep only the last one, so remove one of them",
    ]


def test_a_merge_key_may_be_overridden_without_a_duplicate_error() -> None:
    document = parse_yaml("base: &b {port: 502, unit: 1}\ndev:\n  <<: *b\n  unit: 2\n", "x.yaml")

    assert document.data["dev"] == {"port": 502, "unit": 2}
    assert document.values[("dev", "unit")] == (4, 9)


def test_tab_indentation_is_a_located_syntax_error_that_says_use_spaces() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_yaml("points:\n\tpump: 1\n", "x.yaml")

    [issue] = caught.value.issues
    assert (issue.line, issue.col) == (2, 1)
    assert "indent with spaces" in issue.message


def test_an_unclosed_quote_is_located_where_the_quote_opens() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_yaml('site:\n  name: "Sunshine\n  id: x\n', "x.yaml")

    [issue] = caught.value.issues
    assert (issue.line, issue.col) == (2, 9)
    assert "a quote or bracket is not closed" in issue.message


def test_an_empty_file_is_no_data() -> None:
    assert parse_yaml("# only a comment\n", "x.yaml").data is None


def test_a_gbk_encoded_file_is_reported_as_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "pump.yaml"
    path.write_bytes("name: 水泵\n".encode("gbk"))

    with pytest.raises(ConfigError) as caught:
        load_yaml(path)

    [issue] = caught.value.issues
    assert issue.line == 1  # the column is where UTF-8 decoding gave up, inside 水泵
    assert "GBK" in issue.message and "save it as UTF-8" in issue.message


def test_a_utf8_file_with_a_byte_order_mark_loads(tmp_path: Path) -> None:
    path = tmp_path / "pump.yaml"
    path.write_bytes("name: 水泵\n".encode("utf-8-sig"))

    assert load_yaml(path).data == {"name": "水泵"}


# --- how issues read -----------------------------------------------------------------


def test_an_issue_reads_file_line_col_key_path_and_message(monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    issue = ConfigIssue(tmp_path / "config/profiles/pump.yaml", 14, 9,
                        ("points", "outlet_pressure", "type"), "'flot32' is not a data type")

    assert str(issue) == "config/profiles/pump.yaml:14:9 points.outlet_pressure.type: 'flot32' is not a data type"


def test_an_issue_outside_the_current_directory_keeps_its_full_path(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    issue = ConfigIssue(tmp_path / "site.yaml", 3, 1, ("devices", 2, "id"), "is not unique")

    assert str(issue) == f"{tmp_path / 'site.yaml'}:3:1 devices[2].id: is not unique"


def test_an_issue_about_a_whole_file_has_no_key_path() -> None:
    assert str(ConfigIssue("/etc/gateway/site.yaml", 1, 1, (), "the file is empty")) == (
        "/etc/gateway/site.yaml:1:1: the file is empty"
    )


def test_a_config_error_lists_every_issue() -> None:
    error = ConfigError([ConfigIssue("/a.yaml", 1, 2, ("x",), "one"), ConfigIssue("/b.yaml", 3, 4, (), "two")])

    assert str(error) == "2 errors in the configuration:\n  /a.yaml:1:2 x: one\n  /b.yaml:3:4: two"
