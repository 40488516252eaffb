"""A small PDF writer for text reports (A4, Helvetica): enough for the audit summary, no dependency."""

from __future__ import annotations

STYLES = {"h1": ("F2", 16, 26, 0), "h2": ("F2", 12, 22, 0), "p": ("F1", 10, 14, 0), "li": ("F1", 10, 13, 14)}
WIDTH, HEIGHT, MARGIN = 595, 842, 50


def _text(value: str) -> bytes:
    raw = value.encode("cp1252", errors="replace")  # the standard fonts' WinAnsi encoding
    return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")


def _wrap(text: str, size: int, indent: int) -> list[str]:
    per_line = max(20, int((WIDTH - 2 * MARGIN - indent) / (size * 0.5)))  # Helvetica averages ~0.5 em
    words, lines, current = text.split(), [], ""
    for word in words:
        if current and len(current) + 1 + len(word) > per_line:
            lines.append(current)
            current = word
        else:
            current = f"{current} {word}".strip()
    return lines + [current] if current or not lines else lines


def render(lines: list[tuple[str, str]]) -> bytes:
    """``lines``: (style, text) with style one of h1, h2, p, li. Returns the PDF's bytes."""
    pages: list[list[bytes]] = [[]]
    y = HEIGHT - MARGIN
    for style, text in lines:
        font, size, lead, indent = STYLES[style]
        for i, part in enumerate(_wrap(("• " if style == "li" else "") + text, size, indent)):
            if y - lead < MARGIN:
                pages.append([])
                y = HEIGHT - MARGIN
            y -= lead
            x = MARGIN + indent + (8 if style == "li" and i else 0)
            pages[-1].append(b"BT /%s %d Tf %d %d Td (%s) Tj ET" % (font.encode(), size, x, y, _text(part)))
    objects: list[bytes] = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"",  # the page tree, once the pages' numbers are known
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>",
    ]
    kids = []
    for number, ops in enumerate(pages, 1):
        ops.append(
            b"BT /F1 8 Tf %d %d Td (Page %d of %d) Tj ET" % (WIDTH - MARGIN - 60, MARGIN / 2, number, len(pages))
        )
        stream = b"\n".join(ops)
        objects.append(b"<< /Length %d >>\nstream\n%s\nendstream" % (len(stream), stream))
        objects.append(
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 %d %d] /Contents %d 0 R "
            b"/Resources << /Font << /F1 3 0 R /F2 4 0 R >> >> >>" % (WIDTH, HEIGHT, len(objects))
        )
        kids.append(len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(b"%d 0 R" % k for k in kids), len(kids))
    out, offsets = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n"), []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)
