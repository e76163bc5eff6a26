"""Load a site: site.yaml, the profile, device and rule files it includes, and its secrets.

Everything wrong in every file is collected before anything is raised: an engineer
who runs `gateway check` sees all their mistakes at once, each with file:line:col.
Checks that need more than one file (unique device ids, known profiles, the points and
devices rules name) happen here; checks of one value belong to the models.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, SecretStr, ValidationError

from gateway.config.energy_loader import check_energy
from gateway.config.errors import ConfigError, ConfigIssue, KeyPath, display_path
from gateway.config.explain import describe, did_you_mean, explain
from gateway.config.kpi_models import check_kpi
from gateway.config.models import (
    Device,
    HistorySinkConfig,
    Include,
    InfluxSinkConfig,
    MqttConnection,
    MqttSinkConfig,
    Profile,
    RuleFile,
    Secret,
    SiteConfig,
)
from gateway.config.patrol_loader import check_patrols
from gateway.config.rule_loader import RuleSources, check_rules, validate_rule_file
from gateway.config.yaml_source import YamlDocument, load_yaml, value_at

_SINK_TYPES: dict[Any, type[BaseModel]] = {
    "influxdb": InfluxSinkConfig, "history": HistorySinkConfig, "mqtt": MqttSinkConfig,
}
_CONNECTIONS_WITH_SECRETS: dict[Any, type[BaseModel]] = {"mqtt": MqttConnection}


def load_site(path: str | Path) -> SiteConfig:
    """The validated site with its profiles, devices, rule files and secrets resolved,
    and every rule checked.

    Raises ConfigError listing every issue in every file, or FileNotFoundError
    when the site file itself does not exist.
    """
    return _SiteLoader(Path(path)).load()


class _Issues:
    """Issues in reading order: files in the order they were read, then by line."""

    def __init__(self) -> None:
        self.items: list[ConfigIssue] = []
        self._order: dict[str, int] = {}

    def saw(self, file: Path) -> None:
        self._order.setdefault(str(file), len(self._order))

    def add(self, issue: ConfigIssue) -> None:
        self.items.append(issue)

    def extend(self, issues: Iterable[ConfigIssue]) -> None:
        self.items.extend(issues)

    def at(self, document: YamlDocument, path: KeyPath, message: str, *, key: bool = False) -> None:
        line, col = document.locate(path, key=key)
        self.add(ConfigIssue(document.path, line, col, path, message))

    def sorted(self) -> list[ConfigIssue]:
        last = len(self._order)
        return sorted(
            self.items,
            key=lambda i: (self._order.get(str(i.file), last), i.line or 0, i.col or 0),
        )


def _where(document: YamlDocument, path: KeyPath) -> str:
    line, col = document.locate(path)
    return f"{display_path(document.path)}:{line}:{col}"


class _SiteLoader:
    def __init__(self, site_path: Path) -> None:
        self.site_path = site_path
        self.site_dir = site_path.parent
        self.issues = _Issues()
        self.known_profiles: dict[str, YamlDocument] = {}  # every profile id seen, valid or not
        self.profiles: dict[str, Profile] = {}
        self.devices: list[Device] = []
        self.rule_files: list[RuleFile] = []
        self.sources = RuleSources()  # the documents rules were written in
        # A profile or device was left out (or is ambiguous): site rules would be checked
        # against part of the site and report points and devices that do exist.
        self.incomplete = False

    def load(self) -> SiteConfig:
        site_doc = self._read(self.site_path, missing_ok=False)
        site = self._site(site_doc) if site_doc is not None else None
        include = self._include(site_doc)
        for file in self._expand(site_doc, "profiles", include.profiles):
            self._profile_file(file)
        device_ids: dict[str, tuple[YamlDocument, KeyPath]] = {}
        for file in self._expand(site_doc, "devices", include.devices):
            self._device_file(file, device_ids)
        for file in self._expand(site_doc, "rules", include.rules):
            self._rule_file(file)
        self._check_rules(site)
        if site is not None and site_doc is not None:
            self.issues.extend(check_energy(site, site_doc, self.profiles, self.devices,
                                            self.known_profiles, incomplete=self.incomplete))
            self.issues.extend(check_patrols(site, site_doc, self.profiles, self.devices,
                                             incomplete=self.incomplete))
            self.issues.extend(check_kpi(site, site_doc, self.devices, self.profiles,
                                         incomplete=self.incomplete))
            self._check_sink_names(site, site_doc)
            site = self._resolve_secrets(site, site_doc)
        elif site_doc is not None:
            self._check_secrets_of_valid_parts(site_doc)
        if self.issues.items or site is None:
            raise ConfigError(self.issues.sorted())
        return site.model_copy(update={
            "profiles": self.profiles,
            "devices": self.devices,
            "rule_files": self.rule_files,
            "source": self.site_path,
            "data_dir": self._beside_site(site.data_dir),
        })

    # --- files --------------------------------------------------------------------

    def _read(self, file: Path, *, missing_ok: bool = True) -> YamlDocument | None:
        """The parsed file, or None after recording why it could not be read."""
        self.issues.saw(file)
        try:
            return load_yaml(file)
        except ConfigError as exc:
            self.issues.extend(exc.issues)
        except FileNotFoundError:
            if not missing_ok:
                raise
            self.issues.add(ConfigIssue(file, None, None, (), "the file disappeared while loading"))
        except OSError as exc:
            self.issues.add(ConfigIssue(file, None, None, (), f"cannot be read: {exc.strerror}"))
        return None

    def _beside_site(self, path: Path) -> Path:
        path = path.expanduser()
        return path if path.is_absolute() else self.site_dir / path

    def _mapping(self, document: YamlDocument, what: str) -> dict[str, Any] | None:
        """The document's top level as a mapping (an empty file is an empty mapping)."""
        if document.data is None:
            return {}
        if isinstance(document.data, dict):
            return document.data
        self.issues.at(document, (), f"{what} holds a mapping (key: value lines), not {describe(document.data)}")
        return None

    def _refuse(self, document: YamlDocument, data: dict[str, Any], keys: dict[str, str],
                prefix: KeyPath = ()) -> dict[str, Any]:
        """Report keys the loader fills in itself, and leave them out of validation."""
        for key, why in keys.items():
            if key in data:
                self.issues.at(document, (*prefix, key), why, key=True)
        return {k: v for k, v in data.items() if k not in keys}

    # --- site.yaml ----------------------------------------------------------------

    def _site(self, document: YamlDocument) -> SiteConfig | None:
        data = self._mapping(document, "site.yaml")
        if data is None:
            return None
        data = self._refuse(document, data, {
            "profiles": "profiles are not written in site.yaml; they are read from the files "
                        "include.profiles matches (default profiles/*.yaml)",
            "devices": "devices are not written in site.yaml; they are read from the files "
                       "include.devices matches (default devices/*.yaml)",
            "rule_files": "rule files are not written in site.yaml; they are read from the "
                          "files include.rules matches (default rules/*.yaml)",
            "source": "'source' is set by the loader; remove it",
        })
        if isinstance(data.get("rules"), list):
            data = self._refuse(document, data, {
                "rules": "site rules are written in rule files (include.rules, default "
                         "rules/*.yaml); rules: in site.yaml sets how the engine runs "
                         "(tick, maintenance_default, flood_window, flood_threshold)",
            })
        try:
            return SiteConfig.model_validate(data)
        except ValidationError as exc:
            self.issues.extend(explain(exc, SiteConfig, document, data))
            return None

    def _include(self, document: YamlDocument | None) -> Include:
        """The include patterns, or the defaults when site.yaml could not say."""
        raw = document.data.get("include") if document and isinstance(document.data, dict) else None
        try:
            return Include.model_validate(raw or {})
        except ValidationError:
            return Include()  # already reported while validating site.yaml

    def _expand(self, document: YamlDocument | None, kind: str, patterns: list[str]) -> list[Path]:
        """Files matched by the include patterns, each once, in a stable order."""
        written = (
            document is not None and isinstance(document.data, dict)
            and isinstance(document.data.get("include"), dict)
            and kind in document.data["include"]
        )
        files: list[Path] = []
        for index, pattern in enumerate(patterns):
            full = Path(pattern).expanduser()
            full = full if full.is_absolute() else self.site_dir / full
            matched = sorted(Path(p) for p in glob.glob(str(full), recursive=True) if Path(p).is_file())
            if not matched and written and document is not None:
                self.issues.at(document, ("include", kind, index),
                               f"'{pattern}' matches no files in {display_path(self.site_dir)}")
            files.extend(p for p in matched if p not in files)
        return files

    # --- profiles -----------------------------------------------------------------

    def _profile_file(self, file: Path) -> None:
        document = self._read(file)
        if document is None:
            self.incomplete = True
            self.known_profiles.setdefault(file.stem, YamlDocument(file, None))
            return
        data = self._mapping(document, "a profile file")
        if data is None:
            self.incomplete = True
            self.known_profiles.setdefault(file.stem, document)
            return
        data = self._refuse(document, data, {"source": "'source' is set by the loader; remove it"})
        notes = {}
        if "id" not in data:
            data = {"id": file.stem, **data}
            notes[("id",)] = "(the id defaults to the file name; add id: to choose one)"
        profile_id = data.get("id")
        if isinstance(profile_id, str):
            if profile_id in self.known_profiles:
                self.incomplete = True
                other = self.known_profiles[profile_id]
                self.issues.at(document, ("id",), f"profile id '{profile_id}' is already used by "
                               f"{_where(other, ('id',))}; profile ids must be unique")
            else:
                self.known_profiles[profile_id] = document
        try:
            profile = Profile.from_data(data)
        except ValidationError as exc:
            self.incomplete = True
            self.issues.extend(explain(exc, Profile, document, data, notes=notes))
            return
        if profile.id not in self.profiles:
            self.profiles[profile.id] = profile.model_copy(update={"source": str(file)})
            self.sources.add(document)

    # --- devices ------------------------------------------------------------------

    def _device_file(self, file: Path, ids: dict[str, tuple[YamlDocument, KeyPath]]) -> None:
        document = self._read(file)
        data = self._mapping(document, "a device file") if document is not None else None
        if document is None or data is None:
            self.incomplete = True
            return
        for key in data:
            if key != "devices":
                self.issues.at(document, (key,), f"'{key}' is not a known key here; a device file "
                               "holds one key, devices:, a list of devices" + did_you_mean(key, ["devices"]),
                               key=True)
        entries = data.get("devices")
        if entries is None:
            return
        if not isinstance(entries, list):
            self.incomplete = True
            self.issues.at(document, ("devices",), "expected a list of devices (one '- ' entry "
                           f"per device), got {describe(entries)}")
            return
        for index, entry in enumerate(entries):
            self._device(document, index, entry, ids)

    def _device(self, document: YamlDocument, index: int, entry: Any,
                ids: dict[str, tuple[YamlDocument, KeyPath]]) -> None:
        prefix: KeyPath = ("devices", index)
        if not isinstance(entry, dict):
            self.incomplete = True
            self.issues.at(document, prefix, f"expected a device (a mapping with id, profile, "
                           f"connection...), got {describe(entry)}")
            return
        entry = self._refuse(document, entry, {"source": "'source' is set by the loader; remove it"},
                             prefix)
        device_id, profile_id = entry.get("id"), entry.get("profile")
        if isinstance(device_id, str):
            if device_id in ids:
                self.incomplete = True
                other, other_path = ids[device_id]
                self.issues.at(document, (*prefix, "id"), f"device id '{device_id}' is already used by "
                               f"{_where(other, other_path)}; device ids must be unique across the site")
            else:
                ids[device_id] = (document, (*prefix, "id"))
        if isinstance(profile_id, str) and profile_id not in self.known_profiles:
            self.incomplete = True
            known = sorted(self.known_profiles)
            listed = ", ".join(known) if known else "none (no profile files were found)"
            self.issues.at(document, (*prefix, "profile"), f"'{profile_id}' is not a known profile; "
                           f"known profiles: {listed}{did_you_mean(profile_id, known)}")
        try:
            device = Device.model_validate(entry)
        except ValidationError as exc:
            self.incomplete = True
            self.issues.extend(explain(exc, Device, document, entry, prefix=prefix))
            connection = entry.get("connection")
            if isinstance(connection, dict):
                model = _CONNECTIONS_WITH_SECRETS.get(connection.get("type"))
                self._check_part_secrets(document, (*prefix, "connection"), connection, model)
            return
        profile = self.profiles.get(device.profile)
        protocol = {"bacnet_ip": "bacnet", "mqtt": "mqtt"}.get(device.connection.type, "modbus")
        if profile is not None and profile.protocol != protocol:
            self.incomplete = True
            self.issues.at(
                document, (*prefix, "connection", "type"),
                f"{device.connection.type} cannot read profile '{profile.id}', a "
                f"{profile.protocol} profile; use a {profile.protocol} connection or a "
                f"{protocol} profile",
            )
            return
        # a device's connection may log in (an MQTT broker): its secrets resolve like site.yaml's
        device = _replace_secrets(device, prefix, lambda secret, at: self._resolve(secret, document, at))
        self.devices.append(device.model_copy(update={"source": str(document.path)}))

    # --- rule files ---------------------------------------------------------------

    def _rule_file(self, file: Path) -> None:
        """A site rule file (rules: across devices, maintenance:), validated like a profile."""
        document = self._read(file)
        data = self._mapping(document, "a rule file") if document is not None else None
        if document is None or data is None:
            return
        rule_file, issues = validate_rule_file(document, data)
        self.issues.extend(issues)
        if rule_file is not None:
            self.sources.add(document)
            self.rule_files.append(rule_file)

    def _check_rules(self, site: SiteConfig | None) -> None:
        """Check every rule against the site as read; site rule files only when every
        profile and device was read, lest a device left out by its own mistake be
        reported again as unknown."""
        rule_files = [] if self.incomplete else self.rule_files
        self.issues.extend(check_rules(site, self.profiles, self.devices, rule_files, self.sources))

    # --- sinks and secrets --------------------------------------------------------

    def _check_sink_names(self, site: SiteConfig, document: YamlDocument) -> None:
        """Sink names key the outbox cursors, so two sinks may not share one."""
        seen: dict[str, KeyPath] = {}
        named = [(("sinks", i), sink.name) for i, sink in enumerate(site.sinks)]
        if site.upstream is not None:
            named.append((("upstream",), site.upstream.name))
        for path, name in named:
            if name in seen:
                self.issues.at(document, (*path, "name"), f"sink name '{name}' is already used by "
                               f"{_where(document, seen[name])}; give each sink its own name: "
                               "it keys the sink's place in the outbox")
            else:
                seen[name] = (*path, "name")

    def _resolve_secrets(self, site: SiteConfig, document: YamlDocument) -> SiteConfig:
        return _replace_secrets(site, (), lambda secret, at: self._resolve(secret, document, at))

    def _resolve(self, secret: Secret, document: YamlDocument, path: KeyPath) -> Secret:
        """The secret with its value read from the environment or its file."""
        raw = value_at(document.data, path)
        if isinstance(raw, dict) and "value" in raw:
            self.issues.at(document, (*path, "value"), "a secret's value is never written in "
                           "the YAML; remove value: and keep env: or file:", key=True)
        if secret.env is not None:
            return self._from_env(secret, document, path)
        return self._from_file(secret, document, path)

    def _check_secrets_of_valid_parts(self, document: YamlDocument) -> None:
        """site.yaml did not validate as a whole; still report each secret that did."""
        data = document.data if isinstance(document.data, dict) else {}
        parts: list[tuple[KeyPath, Any, type[BaseModel] | None]] = []
        if isinstance(data.get("sinks"), list):
            for index, item in enumerate(data["sinks"]):
                kind = item.get("type") if isinstance(item, dict) else None
                parts.append((("sinks", index), item, _SINK_TYPES.get(kind)))
        if "upstream" in data:
            parts.append((("upstream",), data["upstream"], MqttSinkConfig))
        for path, raw, model in parts:
            self._check_part_secrets(document, path, raw, model)

    def _check_part_secrets(self, document: YamlDocument, path: KeyPath, raw: Any,
                            model: type[BaseModel] | None) -> None:
        """Resolve each secret of a part that did not validate, to report its problems too."""
        if model is None or not isinstance(raw, dict):
            return
        for name, field in model.model_fields.items():
            if name not in raw or Secret not in get_args(field.annotation):
                continue
            try:
                secret = Secret.model_validate(raw[name])
            except ValidationError:
                continue  # already reported
            self._resolve(secret, document, (*path, name))

    def _from_env(self, secret: Secret, document: YamlDocument, path: KeyPath) -> Secret:
        name = secret.env or ""
        value = os.environ.get(name)
        if value is None:
            self.issues.at(document, (*path, "env"), f"environment variable {name} is not set; set it "
                           "where the gateway runs (e.g. EnvironmentFile= in the systemd unit) "
                           "or use {file: /path/to/secret}")
            return secret
        if not value.strip():
            self.issues.at(document, (*path, "env"), f"environment variable {name} is set but empty")
            return secret
        return secret.model_copy(update={"value": SecretStr(value)})

    def _from_file(self, secret: Secret, document: YamlDocument, path: KeyPath) -> Secret:
        file = self._beside_site(secret.file or Path())
        shown = display_path(file)
        problem = None
        try:
            value = file.read_text(encoding="utf-8").strip()
        except FileNotFoundError:
            problem = f"secret file {shown} does not exist"
        except IsADirectoryError:
            problem = f"secret file {shown} is a directory, not a file"
        except PermissionError:
            problem = f"secret file {shown} cannot be read by this user; give the gateway's user read access"
        except UnicodeDecodeError:
            problem = f"secret file {shown} is not UTF-8 text"
        except OSError as exc:
            problem = f"secret file {shown} cannot be read: {exc.strerror}"
        else:
            if not value:
                problem = f"secret file {shown} is empty"
        if problem is not None:
            self.issues.at(document, (*path, "file"), problem)
            return secret
        return secret.model_copy(update={"file": file, "value": SecretStr(value)})


def _secret_fields(model: type[BaseModel]) -> tuple[str, ...]:
    """The fields of `model` whose type may hold a Secret somewhere inside, found once per
    class: the loader walks only those (a thousand devices, a few fields each)."""
    fields = _SECRET_FIELDS.get(model)
    if fields is None:
        _SECRET_FIELDS[model] = tuple(model.model_fields)  # a model inside itself: walk all
        fields = _SECRET_FIELDS[model] = tuple(
            name for name, info in model.model_fields.items() if _may_hold_secret(info.annotation)
        )
    return fields


def _may_hold_secret(annotation: Any) -> bool:
    if isinstance(annotation, type):
        if issubclass(annotation, Secret):
            return True
        return issubclass(annotation, BaseModel) and bool(_secret_fields(annotation))
    return any(_may_hold_secret(arg) for arg in get_args(annotation))  # unions, lists, dicts


_SECRET_FIELDS: dict[type[BaseModel], tuple[str, ...]] = {}


def _replace_secrets(node: Any, path: KeyPath, resolve: Any) -> Any:
    """A copy of `node` with every Secret replaced by resolve(secret, path); frozen models are rebuilt."""
    if isinstance(node, Secret):
        return resolve(node, path)
    if isinstance(node, BaseModel):
        changes = {}
        for name in _secret_fields(type(node)):  # a Modbus device: none, nothing to walk
            value = getattr(node, name)
            new = _replace_secrets(value, (*path, name), resolve)
            if new is not value:
                changes[name] = new
        return node.model_copy(update=changes) if changes else node
    if isinstance(node, list):
        items = [_replace_secrets(v, (*path, i), resolve) for i, v in enumerate(node)]
        return items if any(a is not b for a, b in zip(items, node, strict=True)) else node
    if isinstance(node, dict):
        entries = {k: _replace_secrets(v, (*path, k), resolve) for k, v in node.items()}
        return entries if any(entries[k] is not node[k] for k in node) else node
    return node
