"""Rules checked against the whole site once it is read, each problem at its character.

Profiles and site rule files are validated as data like every other file; whether an
expression names a point that exists, a message a point of its device, or a site rule
a device of the site, can only be known once all of them are read. `RuleSources` keeps
the documents the rules came from, so `rules/compile.py` can say where a value, or a
character inside an expression, was written: every rule mistake is then a located
config issue like any other, reported with the rest by one `gateway check`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.config.errors import ConfigIssue, KeyPath
from gateway.config.explain import explain
from gateway.config.models import Device, Profile, RuleFile, SiteConfig
from gateway.config.yaml_source import YamlDocument
from rules.compile import compile_rules
from rules.expression import Source


class RuleSources:
    """The YAML documents of profiles and rule files, by the file name rules carry."""

    def __init__(self) -> None:
        self._documents: dict[str, YamlDocument] = {}

    def add(self, document: YamlDocument) -> None:
        self._documents[str(document.path)] = document

    def locate(self, file: str | Path | None, path: KeyPath) -> Source | None:
        """Where the value at `path` was written: its first character for text (past a
        quote, on the first content line of a block), else where it starts."""
        return self.place(file, path, 1, 1)

    def place(self, file: str | Path | None, path: KeyPath, line: int, col: int) -> Source | None:
        """Where the character at (line, col) of the text value at `path` was written."""
        document = self._documents.get(str(file)) if file is not None else None
        if document is None:
            return None
        at_line, at_col = document.locate_text(path, line, col)
        return Source(document.path, at_line, at_col, path)


def validate_rule_file(document: YamlDocument, data: dict[str, Any]) -> tuple[RuleFile | None, list[ConfigIssue]]:
    """A rule file's `rules:` and `maintenance:` validated (None if they are not), and
    every problem in them, located like a profile's."""
    issues: list[ConfigIssue] = []
    if "source" in data:
        line, col = document.locate(("source",), key=True)
        issues.append(ConfigIssue(document.path, line, col, ("source",),
                                  "'source' is set by the loader; remove it"))
        data = {k: v for k, v in data.items() if k != "source"}
    try:
        rule_file = RuleFile.model_validate(data)
    except ValidationError as exc:
        return None, [*issues, *explain(exc, RuleFile, document, data)]
    return rule_file.model_copy(update={"source": str(document.path)}), issues


def check_rules(site: SiteConfig | None, profiles: dict[str, Profile], devices: list[Device],
                rule_files: list[RuleFile], sources: RuleSources) -> list[ConfigIssue]:
    """Every problem in the rules and maintenance plans of these profiles and rule files,
    located in its file.

    Profile rules need only their profile, so they are checked even when site.yaml did
    not validate (`site` None).
    """
    config = (site or SiteConfig.model_construct()).model_copy(update={
        "profiles": profiles, "devices": devices, "rule_files": rule_files,
    })
    return compile_rules(config, sources.locate, place=sources.place).issues
