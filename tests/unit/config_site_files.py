"""A small valid site written into a temporary folder, for the config tests to break."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from gateway.config.errors import ConfigError
from gateway.config.loader import load_site

SITE = """\
site:
  id: test-site
  name: Test site
"""

PROFILE = """\
name: booster pump
system: water_supply
points:
  outlet_pressure:
    address: 2
    type: uint16
    scale: 0.001
"""

DEVICES = """\
devices:
  - id: pump_1
    profile: pump
    connection:
      host: 127.0.0.1
"""


def write_site(root: Path, files: dict[str, str | None]) -> Path:
    """Write a site into `root`: the defaults, with `files` replacing or adding files."""
    layout = {"site.yaml": SITE, "profiles/pump.yaml": PROFILE, "devices/b1.yaml": DEVICES, **files}
    for name, text in layout.items():
        if text is None:
            continue
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root / "site.yaml"


def errors_of(site: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_site(site)
    return [str(issue) for issue in caught.value.issues]
