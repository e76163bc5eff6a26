"""The report as a PDF, drawn with reportlab (pure Python, BSD, maintained since 2000):
the same document as the HTML page, its charts redrawn from the same shapes.

Device names are Chinese even in an English report, so the text needs a CJK font. A
TrueType font found on the box (WenQuanYi, Noto/Droid Sans Fallback, or the one given)
is embedded, subset to the characters used, so the file reads the same everywhere;
without one, reportlab's STSong-Light is named instead (no glyphs embedded: Adobe
Reader and most viewers bring their own; a viewer without CJK fonts shows boxes).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gateway.equipment import charts
from gateway.equipment.document import Document, Table
from gateway.textable import cell_width

# TrueType/TTC fonts with Chinese glyphs, looked for in this order (Debian, Ubuntu, Alpine)
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/wqy-microhei/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/usr/share/fonts/truetype/arphic/uming.ttc",
)
CID_FONT = "STSong-Light"
PAGE_ROWS = 200  # a table longer than this is cut in the PDF; the xlsx has every row


def register_font(path: str | Path | None = None) -> str:
    """The font name to draw with: `path`, else the first candidate found, else STSong-Light."""
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.cidfonts import UnicodeCIDFont
    from reportlab.pdfbase.pdfmetrics import registerFontFamily
    from reportlab.pdfbase.ttfonts import TTFont

    for candidate in ([path] if path else []) + list(FONT_CANDIDATES):
        if candidate and Path(candidate).exists():
            name = "ReportCJK"
            if name not in pdfmetrics.getRegisteredFontNames():
                pdfmetrics.registerFont(TTFont(name, str(candidate), subfontIndex=0))
                # <b> in a paragraph keeps the CJK font (else it falls back to Helvetica-Bold)
                registerFontFamily(name, normal=name, bold=name, italic=name, boldItalic=name)
            return name
    if path:
        raise FileNotFoundError(f"no font at {path}")
    if CID_FONT not in pdfmetrics.getRegisteredFontNames():
        pdfmetrics.registerFont(UnicodeCIDFont(CID_FONT))
        registerFontFamily(CID_FONT, normal=CID_FONT, bold=CID_FONT, italic=CID_FONT,
                           boldItalic=CID_FONT)
    return CID_FONT


def drawing(fig: charts.Figure, font: str, width: float) -> Any:
    """A chart as a reportlab Drawing scaled to `width` points (y flipped: PDF grows up)."""
    from reportlab.graphics.shapes import Drawing, PolyLine, Rect, String
    from reportlab.lib.colors import HexColor

    scale = width / fig.width
    d = Drawing(width, fig.height * scale)

    def y(v: float) -> float:
        return (fig.height - v) * scale

    for s in fig.shapes:
        if isinstance(s, charts.Rect):
            d.add(Rect(s.x * scale, y(s.y + s.h), s.w * scale, s.h * scale,
                       fillColor=HexColor(s.fill), strokeColor=None))
        elif isinstance(s, charts.Line):
            points = [c for x, yy in s.points for c in (x * scale, y(yy))]
            d.add(PolyLine(points, strokeColor=HexColor(s.stroke), strokeWidth=s.width * scale,
                           strokeDashArray=[4, 3] if s.dash else None))
        else:
            d.add(String(s.x * scale, y(s.y), s.text, fontName=font, fontSize=s.size * scale,
                         fillColor=HexColor(s.fill), textAnchor=s.anchor))
    return d


def write_pdf(doc: Document, path: str | Path, font_path: str | Path | None = None) -> None:
    from reportlab.lib import colors
    from reportlab.lib.enums import TA_RIGHT
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.lib.units import mm
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer
    from reportlab.platypus import Table as PdfTable

    font = register_font(font_path)
    page = landscape(A4)
    margin = 12 * mm
    width = page[0] - 2 * margin
    styles = {
        "h1": ParagraphStyle("h1", fontName=font, fontSize=18, leading=22, textColor=colors.HexColor("#1f5fa8")),
        "h2": ParagraphStyle("h2", fontName=font, fontSize=14, leading=18, spaceBefore=10, spaceAfter=4,
                             keepWithNext=True,
                             textColor=colors.HexColor("#1f5fa8")),
        "h3": ParagraphStyle("h3", fontName=font, fontSize=11, leading=14, spaceBefore=6, spaceAfter=3,
                             keepWithNext=True),
        "body": ParagraphStyle("body", fontName=font, fontSize=9, leading=12),
        "cell": ParagraphStyle("cell", fontName=font, fontSize=7.5, leading=9),
        "num": ParagraphStyle("num", fontName=font, fontSize=7.5, leading=9, alignment=TA_RIGHT),
        "note": ParagraphStyle("note", fontName=font, fontSize=8, leading=10, textColor=colors.grey),
    }
    story: list[Any] = [Paragraph(_esc(f"{doc.title} — {doc.subtitle}"), styles["h1"]),
                        Paragraph(_esc(" · ".join(doc.meta)), styles["note"]), Spacer(1, 4 * mm)]
    cards = [[Paragraph(_esc(c.label), styles["cell"]) for c in doc.cards],
             [Paragraph(f"<b>{_esc(c.value)}</b>", styles["h3"]) for c in doc.cards],
             [Paragraph(_esc(c.note), styles["cell"]) for c in doc.cards]]
    card_table = PdfTable(cards, colWidths=[width / len(doc.cards)] * len(doc.cards))
    card_table.setStyle([("BOX", (0, 0), (-1, -1), 0.5, colors.HexColor("#d9dde3")),
                         ("INNERGRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#d9dde3")),
                         ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#f7f9fb")),
                         ("VALIGN", (0, 0), (-1, -1), "TOP")])
    story.append(card_table)
    for section in doc.sections:
        story.append(Paragraph(_esc(section.title), styles["h2"]))
        for fig in section.figures:
            story.append(drawing(fig, font, min(width, 720)))
        if section.note:
            story.append(Paragraph(_esc(section.note), styles["note"]))
        for table in section.tables:
            story.append(Paragraph(_esc(table.title), styles["h3"]))  # kept with its table
            story += _table(table, doc, styles, width)
    story.append(Spacer(1, 6 * mm))
    story.append(Paragraph(_esc(doc.words("sources") + ": " + "; ".join(doc.sources)), styles["note"]))
    SimpleDocTemplate(str(path), pagesize=page, leftMargin=margin, rightMargin=margin,
                      topMargin=margin, bottomMargin=margin, title=f"{doc.title} {doc.subtitle}",
                      author="site gateway").build(story)


def _table(table: Table, doc: Document, styles: dict[str, Any], width: float) -> list[Any]:
    """The table (or its empty note), then a note if rows were cut."""
    from reportlab.lib import colors
    from reportlab.platypus import Paragraph
    from reportlab.platypus import Table as PdfTable

    if not table.rows:
        return [Paragraph(_esc(table.empty), styles["note"])]
    text = doc.words.text
    numeric = {"pct", "hours", "minutes", "number", "int"}
    rows = [[Paragraph(f"<b>{_esc(h)}</b>", styles["cell"]) for h in table.headers]]
    for row in table.rows[:PAGE_ROWS]:
        rows.append([Paragraph(_esc(text(kind, v)), styles["num" if kind in numeric else "cell"])
                     for (_, kind), v in zip(table.columns, row, strict=True)])
    # columns as wide as what they hold (within limits), so names wrap less than numbers
    weights = [min(24, max(6, min(cell_width(h), 14),
                           *(cell_width(text(kind, r[i])) for r in table.rows[:50])))
               for i, ((_, kind), h) in enumerate(zip(table.columns, table.headers, strict=True))]
    pdf = PdfTable(rows, colWidths=[width * w / sum(weights) for w in weights], repeatRows=1)
    style = [("LINEBELOW", (0, 0), (-1, -1), 0.25, colors.HexColor("#e3e6ea")),
             ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#eef2f7")),
             ("VALIGN", (0, 0), (-1, -1), "TOP"), ("TOPPADDING", (0, 0), (-1, -1), 1.5),
             ("BOTTOMPADDING", (0, 0), (-1, -1), 1.5)]
    pdf.setStyle(style)
    out = [pdf]
    if len(table.rows) > PAGE_ROWS:
        out.append(Paragraph(_esc(doc.words("more_rows", n=len(table.rows) - PAGE_ROWS)), styles["note"]))
    return out


def _esc(text: str) -> str:
    return (text or "").replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
