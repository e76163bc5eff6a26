"""Expression errors that say where: inside the expression, and in the YAML file.

A site engineer types a rule condition into a profile; an error is only useful if it
points at the character that is wrong and says what would be right. When the caller
says where the expression was written (`Source`), the error carries the file, line and
column of the offending character itself, like every other configuration error, and
can be handed to the config loader as a `ConfigIssue`.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from gateway.config.errors import ConfigIssue, KeyPath, display_path, format_key_path


class Source(NamedTuple):
    """Where an expression's first character was written.

    `line` and `col` are 1-based. For a quoted YAML scalar that is one past the quote.
    `path` is the key path of the value (`("rules", 0, "when")`); a plain
    `(file, line, col)` tuple is accepted wherever a `Source` is.
    """

    file: str | Path | None
    line: int
    col: int
    path: KeyPath = ()


class ExpressionError(ValueError):
    """One problem in one expression.

    `line` and `col` (1-based) are inside the expression text; `location()` maps them
    into the file when a `Source` was given.
    """

    def __init__(
        self, message: str, *, text: str, line: int = 1, col: int = 1,
        source: Source | None = None,
    ) -> None:
        self.message = message
        self.text = text
        self.line = line
        self.col = col
        self.source = Source(*source) if source is not None else None
        super().__init__(str(self))

    def file_position(self) -> tuple[int, int] | None:
        """(line, col) in the file, or None without a source.

        On the expression's first line columns add to the source column; a later line
        of a multi-line (block) scalar keeps its own column, which YAML's indentation
        stripping makes approximate.
        """
        if self.source is None:
            return None
        if self.line == 1:
            return self.source.line, self.source.col + self.col - 1
        return self.source.line + self.line - 1, self.col

    def to_issue(self) -> ConfigIssue:
        """This error as a located config issue, for the loader's list of problems."""
        position = self.file_position()
        file = self.source.file if self.source else None
        path = self.source.path if self.source else ()
        if position is None:
            return ConfigIssue(file, None, None, path, f"{self.message} (column {self.col})")
        return ConfigIssue(file, position[0], position[1], path, self.message)

    def pointer(self) -> str:
        """The offending line of the expression with a caret under the bad character."""
        lines = self.text.splitlines() or [""]
        line = lines[min(self.line, len(lines)) - 1]
        return f"{line}\n{' ' * (self.col - 1)}^"

    def __str__(self) -> str:
        if self.source is None:
            where = f"column {self.col}" if self.line == 1 else f"line {self.line} column {self.col}"
            return f"{where}: {self.message}"
        line, col = self.file_position()  # type: ignore[misc]
        where = f"{display_path(self.source.file)}:{line}:{col}"
        keys = format_key_path(self.source.path)
        return f"{where} {keys}: {self.message}" if keys else f"{where}: {self.message}"
