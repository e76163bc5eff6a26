"""Where a character of a text value was written: YamlDocument.styles and locate_text,
which put an expression error at its character whatever way the value is written."""

from __future__ import annotations

import pytest

from gateway.config.yaml_source import parse_yaml

WHEN = ("rule", "when")


def located(yaml_text: str, target: str = "avrg") -> tuple[int, int]:
    """Where the first `target` in the value at rule.when was written."""
    document = parse_yaml(yaml_text, "rule.yaml")
    value = document.data["rule"]["when"]
    offset = value.index(target)
    before = value[:offset]
    line = before.count("\n") + 1
    col = offset - (before.rfind("\n") + 1) + 1
    return document.locate_text(WHEN, line, col)


@pytest.mark.parametrize(("yaml_text", "style"), [
    ("rule:\n  when: a < 1\n", None),
    ("rule:\n  when: \"a < 1\"\n", '"'),
    ("rule:\n  when: 'a < 1'\n", "'"),
    ("rule:\n  when: |\n    a < 1\n", "|"),
    ("rule:\n  when: >-\n    a < 1\n", ">"),
])
def test_each_scalar_keeps_its_style(yaml_text: str, style: str | None) -> None:
    document = parse_yaml(yaml_text, "rule.yaml")

    assert document.styles[WHEN] == style
    assert ("rule",) not in document.styles  # a mapping has no style


@pytest.mark.parametrize(("yaml_text", "position"), [
    ("rule:\n  when: a < 1\n", (2, 9)),
    ("rule:\n  when: \"a < 1\"\n", (2, 10)),
    ("rule:\n  when: 'a < 1'\n", (2, 10)),
    ("rule:\n  when: >-   # a comment on the header\n\n      a < 1\n", (4, 7)),
    ("rule:\n  when: &shared |\n    a < 1\n", (3, 5)),
])
def test_the_first_character_is_past_quotes_headers_and_anchors(yaml_text: str,
                                                               position: tuple[int, int]) -> None:
    assert parse_yaml(yaml_text, "rule.yaml").locate_text(WHEN) == position


def test_escapes_in_double_quotes_count_as_they_are_written() -> None:
    # \" is two characters in the file, one in the value; \t is a space in the value
    assert located('rule:\n  when: "x == \\"on\\"\\tand avrg(y)"\n') == (2, 27)


def test_a_double_quoted_value_folded_over_lines_is_followed() -> None:
    assert located('rule:\n  when: "x == 1\n    and avrg(y)"\n') == (3, 9)


def test_an_escaped_line_break_joins_lines_without_a_space() -> None:
    assert located('rule:\n  when: "x == 1 and \\\n    avrg(y)"\n') == (3, 5)


def test_windows_line_endings_count_as_one_break() -> None:
    assert located("rule:\r\n  when: >-\r\n    x == 1\r\n    and avrg(y)\r\n") == (4, 9)


def test_chinese_text_counts_one_column_per_character() -> None:
    assert located("rule:\n  when: 运行状态 == '故障' and avrg(y)\n") == (2, 26)


def test_the_end_of_a_value_is_just_past_its_last_character() -> None:
    document = parse_yaml("rule:\n  when: >\n    x <\n    \n", "rule.yaml")

    assert document.data["rule"]["when"] == "x <\n"
    assert document.locate_text(WHEN, 1, 4) == (3, 8)


def test_a_value_that_is_not_text_is_located_like_any_value() -> None:
    document = parse_yaml("rule:\n  when: 12\n  alarm: {severity: major}\n", "rule.yaml")

    assert document.locate_text(WHEN, 1, 2) == (2, 9)
    assert document.locate_text(("rule", "alarm")) == document.locate(("rule", "alarm"))
