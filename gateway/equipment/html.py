"""The report as one self-contained HTML page: the template `report.html.j2` (a site can
restyle it), inline SVG charts, no scripts and nothing fetched, so it opens from a mail
attachment or a USB stick and prints as it shows. Jinja2 escapes every value: device
names and alarm messages are text people typed."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup

from gateway.equipment import charts
from gateway.equipment.document import Document

TEMPLATE = "report.html.j2"
NUMERIC = ("pct", "hours", "minutes", "number", "int")


def render_html(doc: Document, template_dir: Path | None = None) -> str:
    """The page; `template_dir` holds a site's own `report.html.j2` instead of ours."""
    env = Environment(loader=FileSystemLoader(str(template_dir or Path(__file__).parent)),
                      autoescape=select_autoescape(["html", "j2"]), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters["svg"] = lambda fig: Markup(charts.svg(fig))  # noqa: S704 (charts.svg escapes its text)
    words = doc.words
    return env.get_template(TEMPLATE).render(
        doc=doc, zip=zip, numeric=NUMERIC, cell=words.text, sources=words("sources"),
        more=lambda n: words("more_rows", n=n))


def write_html(doc: Document, path: str | Path) -> None:
    Path(path).write_text(render_html(doc), encoding="utf-8")
