"""The audit summary as a PDF (ReportLab): the period's counts as tables, a bar chart of events
per day, the refused calls and failed sign-ins one by one, and on every page the signing key's
fingerprint (an auditor holding a printed page can tell which console's key signed its bundle)."""

from __future__ import annotations

import io
from typing import Any
from xml.sax.saxutils import escape

from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import KeepTogether, Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle
from reportlab.platypus.flowables import Flowable

TITLE = "Fleet Console — audit summary"
MARGIN = 18 * mm
WIDTH = A4[0] - 2 * MARGIN
ACCENT = colors.HexColor("#1f4e79")
BARS = colors.HexColor("#2e86c1")  # the chart's own colour (a test finds the bars by it)
GRID = TableStyle(
    [
        ("BACKGROUND", (0, 0), (-1, 0), ACCENT),
        ("TEXTCOLOR", (0, 0), (-1, 0), colors.white),
        ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
        ("FONTSIZE", (0, 0), (-1, -1), 8.5),
        ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.HexColor("#eef2f7")]),
        ("GRID", (0, 0), (-1, -1), 0.25, colors.HexColor("#b8c2cc")),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]
)
COUNT_COLUMN = TableStyle([("ALIGN", (-1, 1), (-1, -1), "RIGHT")])
_styles = getSampleStyleSheet()
CELL = _styles["BodyText"].clone("cell", fontSize=8.5, leading=10.5)


def _cell(value: Any) -> Paragraph:
    """Text that wraps inside its column (a long request id or username cannot overrun the page)."""
    return Paragraph(escape("—" if value in (None, "") else str(value)), CELL)


def table(header: list[str], rows: list[list[Any]], widths: list[float], counts: bool = False) -> Table:
    """A table whose header row repeats on each page it spans ("none" when there are no rows);
    ``counts``: the last column holds numbers, right-aligned."""
    body = [[_cell(v) for v in row] for row in rows] or [[_cell("none"), *[""] * (len(header) - 1)]]
    t = Table([header, *body], colWidths=[w * WIDTH for w in widths], repeatRows=1)
    t.setStyle(GRID)
    if counts:
        t.setStyle(COUNT_COLUMN)
    return t


def per_day_chart(per_day: list[tuple[str, int]], height: float = 55 * mm) -> Flowable:
    """Bars of events per day; the labels thin out so a long period stays readable."""
    drawing = Drawing(WIDTH, height)
    if not per_day:
        drawing.add(String(0, height / 2, "No events in this period.", fontName="Helvetica", fontSize=9))
        return drawing
    chart = VerticalBarChart()
    chart.x, chart.y, chart.width, chart.height = 30, 28, WIDTH - 40, height - 40
    chart.data = [[n for _, n in per_day]]
    step = max(1, len(per_day) // 12)
    chart.categoryAxis.categoryNames = [day[5:] if i % step == 0 else "" for i, (day, _) in enumerate(per_day)]
    chart.categoryAxis.labels.fontSize = 7
    chart.categoryAxis.labels.angle = 30 if len(per_day) > 6 else 0
    chart.categoryAxis.labels.boxAnchor = "ne" if len(per_day) > 6 else "n"
    chart.valueAxis.valueMin = 0
    chart.valueAxis.labels.fontSize = 7
    chart.bars[0].fillColor = BARS
    chart.bars[0].strokeColor = None
    drawing.add(chart)
    return drawing


def render(summary: dict, *, period: str, generated: str, fingerprint: str) -> bytes:
    """``summary`` as ``audit.exports.summary`` makes it. Returns the PDF's bytes."""
    h1, h2, p = _styles["Title"], _styles["Heading2"], _styles["BodyText"]
    total = summary["total"]
    span = f" (#{summary['first_seq']} to #{summary['last_seq']})" if total else ""
    story: list[Flowable] = [
        Paragraph(escape(TITLE), h1),
        table(
            ["Report", ""],
            [
                ["Period", period],
                ["Events", f"{total}{span}"],
                ["Access requests denied", summary["denied_access_requests"]],
                ["Gateway calls refused", sum(n for _, n in summary["refused_gateway_calls"])],
                ["Failed sign-ins", summary["failed_logins"]],
                ["Lockouts", summary["lockouts"]],
                ["Generated", generated],
                ["Signing key", fingerprint],
            ],
            [0.3, 0.7],
        ),
        Spacer(1, 4 * mm),
        KeepTogether([Paragraph("Events per day", h2), per_day_chart(summary["per_day"])]),
    ]
    for title, key, name in (
        ("By action", "by_action", "Action"),
        ("By department", "by_department", "Department"),
        ("By model (gateway calls)", "by_model", "Model"),
        ("Top users", "top_users", "User"),
        ("Refused gateway calls by status", "refused_gateway_calls", "Status"),
    ):
        rows = [list(r) for r in summary[key]]
        story += [Paragraph(title, h2), table([name, "Events"], rows, [0.8, 0.2], counts=True)]
    story += [
        Paragraph("Refused gateway calls", h2),
        _detail_note(summary["refusals"], summary["refusals_total"], p),
        table(
            ["#", "When (UTC)", "Who", "Model", "Status", "Request id"],
            _pick(summary["refusals"], "seq", "created_at", "actor", "model", "status", "request_id"),
            [0.08, 0.22, 0.18, 0.17, 0.08, 0.27],
        ),
        Paragraph("Failed sign-ins", h2),
        _detail_note(summary["failed_login_events"], summary["failed_logins"], p),
        table(
            ["#", "When (UTC)", "Username given", "From", "Channel"],
            _pick(summary["failed_login_events"], "seq", "created_at", "username", "source_ip", "channel"),
            [0.08, 0.27, 0.3, 0.2, 0.15],
        ),
    ]
    out = io.BytesIO()

    def footer(canvas: Any, doc: Any) -> None:
        canvas.saveState()
        canvas.setFont("Helvetica", 7.5)
        canvas.setFillColor(colors.HexColor("#555555"))
        canvas.drawString(MARGIN, 10 * mm, f"{period} · signing key {fingerprint}")
        canvas.drawRightString(A4[0] - MARGIN, 10 * mm, f"Page {doc.page}")
        canvas.restoreState()

    doc = SimpleDocTemplate(
        out, pagesize=A4, leftMargin=MARGIN, rightMargin=MARGIN, topMargin=MARGIN, bottomMargin=MARGIN,
        title=TITLE, author="Fleet Console", subject=period,
    )  # fmt: skip
    doc.build(story, onFirstPage=footer, onLaterPages=footer)
    return out.getvalue()


def _pick(events: list[dict], *keys: str) -> list[list[Any]]:
    return [[e[k] for k in keys] for e in events]


def _detail_note(shown: list, total: int, style: Any) -> Paragraph:
    text = f"{total} in this period."
    if total > len(shown):
        text += f" The first {len(shown)} are listed; the CSV export holds them all."
    return Paragraph(escape(text), style)
