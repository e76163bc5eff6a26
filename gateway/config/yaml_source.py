"""YAML that remembers where each key and value was written.

`yaml.safe_load` forgets positions, so an error found later by validation could only
name a key, not a line. Here the file is composed into nodes (which carry marks) and
turned into plain Python data while recording, for every key path such as
`("points", "outlet_pressure", "type")`, the 1-based line and column of the value and
of its key. Duplicate keys, which PyYAML would silently resolve to the last one, are
reported, and so are syntax errors, all as located `ConfigIssue`s.

Rule expressions are checked character by character, so an error inside one must point
at a character in the file, not at the start of the value: for each text value the
document also keeps its style (plain, quoted or block) and where its text was written,
and `locate_text` maps a position inside the value back to the file.

Mapping keys are kept as the text written (`on:` stays "on", not True): every key in
a gateway config is a name, and YAML 1.1's booleans would otherwise turn a point named
`on` or `no` into True/False.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.scanner import Scanner

from gateway.config.errors import ConfigError, ConfigIssue, KeyPath

Position = tuple[int, int]  # (line, col), both 1-based

# The pure-Python loader is the reference: its messages are clearer, and the same on
# every machine whether or not libyaml is installed. libyaml, where PyYAML has it, only
# speeds up files that load cleanly (a 1,000-device file: 0.1 s instead of 0.65 s); a
# file it finds anything wrong with is read again by the reference loader, whose
# messages the user sees. Where the two differ, the reference decides: libyaml is not
# asked about text with a tab, a byte-order mark inside or a `?` before a non-space (it
# accepts some of those the reference refuses, and counts columns past a BOM
# differently), and an empty plain value (which libyaml places after the spaces that
# follow its key, not before) sends the file to the reference too.
_Loader = yaml.SafeLoader
_FastLoader: type[Any] | None = getattr(yaml, "CSafeLoader", None)
_NOT_FOR_LIBYAML = re.compile(r"[\t\ufeff]|\?\S")


# The constructors of the scalars configs are made of, called directly: construct_object
# would only add its bookkeeping for aliases and recursion, which scalars do not need.
_PLAIN_SCALARS: dict[str, Callable[[Any, ScalarNode], Any]] = {
    f"tag:yaml.org,2002:{name}": _Loader.yaml_constructors[f"tag:yaml.org,2002:{name}"]
    for name in ("str", "int", "float", "bool", "null")
}


class _AskTheReference(Exception):
    """libyaml would place or accept this differently from the reference loader."""


_MERGE_TAG = "tag:yaml.org,2002:merge"

# Plain-language hints for PyYAML's most common complaints.
_SYNTAX_HINTS = {
    "found character '\\t' that cannot start any token": (
        "indent with spaces; YAML does not allow tab characters"
    ),
    "mapping values are not allowed here": (
        "a ':' is where YAML expected a value: check this line's indentation, "
        "or put a value that contains ': ' in quotes"
    ),
    "could not find expected ':'": "a key is missing its ':' or the indentation is off",
    "found unexpected end of stream": "a quote or bracket is not closed",
    "expected <block end>, but found": (
        "this line's indentation does not match the lines above it"
    ),
    "expected a single document in the stream": (
        "a config file holds one document; remove the extra '---'"
    ),
    "expected ',' or ']'": "a '[' is not closed",
    "expected ',' or '}'": "a '{' is not closed",
    "could not determine a constructor": (
        "the gateway reads plain YAML without '!' tags; a secret is {env: NAME} or {file: path}"
    ),
}


@dataclass(slots=True)
class YamlDocument:
    """Plain data from one YAML file plus where each part of it was written."""

    path: Path
    data: Any
    values: dict[KeyPath, Position] = field(default_factory=dict)
    keys: dict[KeyPath, Position] = field(default_factory=dict)
    # Scalars: None for plain, '"' or "'" for quoted, '|' or '>' for block; and the
    # [start, end) character range of each in `text`, from its first mark to its last.
    styles: dict[KeyPath, str | None] = field(default_factory=dict)
    spans: dict[KeyPath, tuple[int, int]] = field(default_factory=dict)
    text: str = ""

    def locate(self, path: KeyPath, *, key: bool = False) -> Position:
        """Where `path` was written: its key when `key` and it has one, else its value.

        A path that was never written (a missing key, a default) falls back to the
        nearest enclosing part that was, and to 1:1 for an empty file.
        """
        if key and path in self.keys:
            return self.keys[path]
        for end in range(len(path), -1, -1):
            prefix = path[:end]
            if prefix in self.values:
                return self.values[prefix]
        return (1, 1)

    def locate_mapping(self, path: KeyPath) -> Position:
        """Where a mapping is introduced: its key line (`connection:`), else its first entry."""
        if path in self.keys:
            return self.keys[path]
        return self.locate(path)

    def locate_text(self, path: KeyPath, line: int = 1, col: int = 1) -> Position:
        """Where the character at (line, col) of the text value at `path` was written.

        (line, col) are 1-based inside the value as the program sees it (quotes and
        escapes resolved, a block scalar's indentation stripped and its lines folded);
        (1, 1) is the value's first character: one past a quote, or the first content
        line of a `|` or `>` block. Anything but a text value is located as `locate`.
        """
        span = self.spans.get(path)
        value = value_at(self.data, path)
        if span is None or not isinstance(value, str):
            return self.locate(path)
        index = _written_index(self.text, span, self.styles.get(path), value, _offset(value, line, col))
        return _index_position(self.text, index)


def load_yaml(path: str | Path) -> YamlDocument:
    """Read one UTF-8 YAML file; raise ConfigError with every located problem in it.

    A missing file raises FileNotFoundError, which the caller reports as it sees fit.
    """
    path = Path(path)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError([_encoding_issue(path, raw, exc)]) from None
    return parse_yaml(text, path)


def parse_yaml(text: str, path: str | Path) -> YamlDocument:
    """Parse YAML text as if read from `path` (used for messages only)."""
    path = Path(path)
    if _FastLoader is not None and not _NOT_FOR_LIBYAML.search(text):
        try:
            return _parse(text, path, _FastLoader)
        except Exception:  # whatever libyaml objects to, the reference loader says
            pass
    return _parse(text, path, _Loader)


def _parse(text: str, path: Path, loader_class: type[Any]) -> YamlDocument:
    try:
        loader = loader_class(text)
    except yaml.reader.ReaderError as exc:
        raise ConfigError([_reader_issue(path, text, exc)]) from None
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            raise ConfigError([_syntax_issue(path, exc)]) from None
        builder = _Builder(loader, path, reference=loader_class is _Loader)
        data = builder.build(root, ()) if root is not None else None
    finally:
        loader.dispose()
    if builder.issues:
        raise ConfigError(sorted(builder.issues, key=lambda i: (i.line or 0, i.col or 0)))
    document = YamlDocument(path, data, builder.values, builder.keys, builder.styles,
                            builder.spans, text)
    document.values.setdefault((), (1, 1))
    return document


def _position(node: Node) -> Position:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    """Turns a node tree into plain data, recording positions and collecting issues."""

    def __init__(self, loader: Any, path: Path, *, reference: bool = True) -> None:
        self.loader = loader
        self.path = path
        self.reference = reference  # False: libyaml's nodes, see _NOT_FOR_LIBYAML
        self.values: dict[KeyPath, Position] = {}
        self.keys: dict[KeyPath, Position] = {}
        self.styles: dict[KeyPath, str | None] = {}
        self.spans: dict[KeyPath, tuple[int, int]] = {}
        self.issues: list[ConfigIssue] = []
        self._open: set[int] = set()  # nodes being built: an alias to one of them is a cycle

    def issue(self, position: Position, path: KeyPath, message: str) -> None:
        self.issues.append(ConfigIssue(self.path, position[0], position[1], path, message))

    def build(self, node: Node, path: KeyPath) -> Any:
        self.values[path] = _position(node)
        if id(node) in self._open:
            self.issue(_position(node), path, "this alias refers to a mapping or list that contains it")
            return None
        if isinstance(node, ScalarNode):
            return self._scalar(node, path)
        self._open.add(id(node))
        try:
            if isinstance(node, SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            if isinstance(node, MappingNode):
                return self._mapping(node, path)
        finally:
            self._open.discard(id(node))
        return None

    def _scalar(self, node: ScalarNode, path: KeyPath) -> Any:
        if not self.reference and not node.style and node.start_mark.index == node.end_mark.index:
            raise _AskTheReference(path)  # an empty value: libyaml's mark is a few columns on
        self.styles[path] = node.style or None  # libyaml says '' for plain
        self.spans[path] = (node.start_mark.index, node.end_mark.index)
        try:
            plain = _PLAIN_SCALARS.get(node.tag)  # text, numbers, booleans, null
            if plain is not None:
                return plain(self.loader, node)
            return self.loader.construct_object(node, deep=True)
        except yaml.MarkedYAMLError as exc:
            self.issues.append(_syntax_issue(self.path, exc, path))
            return None

    def _mapping(self, node: MappingNode, path: KeyPath) -> dict[str, Any]:
        seen: dict[str, Position] = {}
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG or not isinstance(key_node, ScalarNode):
                continue
            key, where = key_node.value, _position(key_node)
            if key in seen:
                line, _col = seen[key]
                self.issue(
                    where, (*path, key),
                    f"duplicate key '{key}': it is already set on line {line}; "
                    "YAML would silently keep only the last one, so remove one of them",
                )
            else:
                seen[key] = where
        try:
            self.loader.flatten_mapping(node)  # resolves `<<: *anchor` merges in place
        except yaml.MarkedYAMLError as exc:
            self.issues.append(_syntax_issue(self.path, exc, path))
            return {}
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, ScalarNode):
                self.issue(_position(key_node), path, "a key must be a plain name, not a list or mapping")
                continue
            key = key_node.value
            self.keys[(*path, key)] = _position(key_node)
            result[key] = self.build(value_node, (*path, key))
        return result


def _syntax_issue(path: Path, exc: yaml.MarkedYAMLError, keys: KeyPath = ()) -> ConfigIssue:
    problem = (exc.problem or exc.context or "invalid YAML").strip()
    context = (exc.context or "").strip()
    # Where the parser gave up is often the next line or the end of the file; the
    # mistake is where the unfinished key, quote or bracket started.
    at_start = exc.context_mark is not None and (
        "end of stream" in problem or "<stream end>" in problem
        or context.startswith("while scanning a simple key")
    )
    mark = exc.context_mark if at_start else (exc.problem_mark or exc.context_mark)
    message = f"YAML syntax: {problem}"
    if context and exc.problem and exc.context_mark is not None and not at_start:
        message += f" ({context} on line {exc.context_mark.line + 1})"
    for start, hint in _SYNTAX_HINTS.items():
        if problem.startswith(start) or context.startswith(start):
            message += f"; {hint}"
            break
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
    return ConfigIssue(path, line, col, keys, message)


def _reader_issue(path: Path, text: str, exc: yaml.reader.ReaderError) -> ConfigIssue:
    before = text[: exc.position]
    line = before.count("\n") + 1
    col = exc.position - (before.rfind("\n") + 1) + 1
    char = exc.character if isinstance(exc.character, str) else chr(exc.character)
    message = f"the character U+{ord(char):04X} cannot appear in YAML; delete it (it is often pasted in invisibly)"
    return ConfigIssue(path, line, col, (), message)


def _encoding_issue(path: Path, raw: bytes, exc: UnicodeDecodeError) -> ConfigIssue:
    before = raw[: exc.start]
    line = before.count(b"\n") + 1
    col = len(before[before.rfind(b"\n") + 1 :].decode("utf-8", errors="replace")) + 1
    message = f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02x} cannot start a character)"
    try:
        raw.decode("gb18030")
    except UnicodeDecodeError:
        message += "; save it as UTF-8"
    else:
        message += "; it looks GBK-encoded, as Chinese Windows editors save by default: save it as UTF-8"
    return ConfigIssue(path, line, col, (), message)


# --- positions inside text values ---------------------------------------------------

_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")  # PyYAML's line breaks
_QUOTES = ('"', "'")
_BLOCKS = ("|", ">")


def value_at(data: Any, path: KeyPath) -> Any:
    """The plain data at `path`, or None where the path leads nowhere."""
    for step in path:
        in_mapping = isinstance(data, dict) and step in data
        in_list = isinstance(data, list) and isinstance(step, int) and 0 <= step < len(data)
        if not (in_mapping or in_list):
            return None
        data = data[step]
    return data


def _offset(value: str, line: int, col: int) -> int:
    """The index in `value` of its (line, col), clamped to the value."""
    lines = value.split("\n")
    line = max(1, min(line, len(lines)))
    offset = sum(len(text) + 1 for text in lines[: line - 1]) + col - 1
    return max(0, min(offset, len(value)))


def _written_index(text: str, span: tuple[int, int], style: str | None, value: str, offset: int) -> int:
    """The index in the file text of the value's character at `offset`.

    YAML changes only whitespace between the file and the value (indentation, folded
    line breaks), besides quotes and escapes: the value's non-space characters are the
    file's, in order. A space, or the end of the value, maps to just after the non-space
    character before it, where an editor's cursor would be.
    """
    start, end = span
    begin = _content_start(text, start, end, style)
    stop = end - 1 if style in _QUOTES else end
    written = list(_written_characters(text, begin, stop, style))
    if len(written) != sum(1 for c in value if not c.isspace()):
        return min(begin + offset, stop)  # an escape not followed: count characters instead
    before = sum(1 for c in value[:offset] if not c.isspace())
    if offset < len(value) and not value[offset].isspace():
        return written[before]
    return written[before - 1] + 1 if before else begin


def _content_start(text: str, start: int, end: int, style: str | None) -> int:
    """Where a scalar's text begins: past its anchor and tag, its quote, its block header."""
    i = start
    while i < end and text[i] in "&!":  # `&anchor` or `!tag` before the value
        while i < end and not text[i].isspace():
            i += 1
        while i < end and text[i].isspace():
            i += 1
    if style in _QUOTES:
        return i + 1
    if style in _BLOCKS:  # `>-  # comment` ends its line; the text starts on the next
        match = _LINE_BREAK.search(text, i, end)
        i = match.end() if match else end
        while i < end and text[i].isspace():
            i += 1
    return i


def _written_characters(text: str, begin: int, stop: int, style: str | None) -> Iterator[int]:
    """The index of each file character that is a non-space character of the value."""
    i = begin
    while i < stop:
        char = text[i]
        if style == "'" and text.startswith("''", i):
            yield i
            i += 2
        elif style == '"' and char == "\\":
            length, space = _escape(text, i)
            if not space:
                yield i
            i += length
        else:
            if not char.isspace():
                yield i
            i += 1


def _escape(text: str, i: int) -> tuple[int, bool]:
    """The length of the escape at `i` in a double-quoted scalar, and whether it is a space."""
    code = text[i + 1 : i + 2]
    joined = _LINE_BREAK.match(text, i + 1)
    if joined:  # an escaped line break joins two lines: no character at all
        return 1 + len(joined.group()), True
    if code in Scanner.ESCAPE_CODES:
        length = 2 + Scanner.ESCAPE_CODES[code]
        try:
            decoded = chr(int(text[i + 2 : i + length], 16))
        except ValueError:
            decoded = "?"
    else:
        length, decoded = 2, Scanner.ESCAPE_REPLACEMENTS.get(code, code)
    return length, decoded.isspace()


def _index_position(text: str, index: int) -> Position:
    """The 1-based (line, col) of a character index, as PyYAML's marks count them."""
    line, line_start = 1, 0
    for match in _LINE_BREAK.finditer(text, 0, index):
        line, line_start = line + 1, match.end()
    return line, index - line_start + 1
