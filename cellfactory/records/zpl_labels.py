"""Unit labels in ZPL II for Zebra label printers (203 dpi): 4 x 2 in and 2 x 2 in.

No Python ZPL library is kept up to date, so the few commands are written here: ``^XA``/``^XZ`` open and close a
label, ``^CI28`` reads the text as UTF-8, ``^PW``/``^LL`` set its width and length, ``^FO`` places a field, ``^BY``
``^BC`` draw Code 128, ``^A0`` writes text, ``^FB`` wraps it and ``^GB`` draws the black bars (``^FR`` prints white
on them). The same content as the PDF label; what does not fit goes on a second label, the accompanying sheet.
"""

from __future__ import annotations

from dataclasses import dataclass

from cellfactory.core.i18n import _
from cellfactory.records.unit_labels import UnitLabel

DOTS_PER_INCH = 203


@dataclass(frozen=True)
class Stock:
    name: str
    width: int  # dots
    length: int  # dots


STOCKS = {"4x2": Stock("4x2", 4 * DOTS_PER_INCH, 2 * DOTS_PER_INCH),
          "2x2": Stock("2x2", 2 * DOTS_PER_INCH, 2 * DOTS_PER_INCH)}


def barcode_data(data: str) -> str:
    """Field data of a Code 128 barcode (``^BC`` without a mode): ``>`` starts an invocation code, so a ``>`` in the
    data is written ``>0``; the ISBT 128 data identifiers use only printable ASCII."""
    if not data.isascii() or not data.isprintable():
        raise ValueError("Code 128 data must be printable ASCII")
    return _escape(data).replace(">", ">0")


def _escape(text: str) -> str:
    """Text for ``^FH_^FD``: ``^``, ``~`` and ``_`` (the escape itself) as hexadecimal."""
    return "".join(f"_{ord(char):02X}" if char in "^~_" else char for char in text)


def _text(x: int, y: int, text: str, height: int, *, width: int | None = None, lines: int = 1,
          reverse: bool = False) -> str:
    block = f"^FB{width},{lines},0,L,0" if width else ""
    return f"^FO{x},{y}^A0N,{height},{height}{block}{'^FR' if reverse else ''}^FH_^FD{_escape(text)}^FS"


def _barcode(x: int, y: int, data: str, height: int, module: int = 2) -> str:
    return f"^FO{x},{y}^BY{module},3,{height}^BCN,{height},N,N,N^FH_^FD{barcode_data(data)}^FS"


def _start(stock: Stock) -> list[str]:
    return ["^XA", "^CI28", f"^PW{stock.width}", f"^LL{stock.length}", "^LH0,0"]


def _chars_for(width: int, height: int) -> int:
    """How many characters of ``^A0`` text of this height fit `width` dots (a conservative 0.55 em each)."""
    return max(1, int(width / (height * 0.55)))


def _fit(lines: list[str], width: int, height: int, overflow: list[str]) -> list[str]:
    kept = []
    for line in lines:
        if len(line) <= _chars_for(width, height):
            kept.append(line)
        else:
            overflow.append(line)
    return kept


def _label_4x2(label: UnitLabel, stock: Stock) -> tuple[list[str], list[str]]:
    overflow: list[str] = []
    out = _start(stock)
    half = stock.width // 2
    out.append(_barcode(20, 15, label.din_barcode, 60))
    din = f"{label.din_text} {label.flags_text}".strip()
    out.append(_text(20, 82, din, 26))
    out.append(f"^FO{20 + len(din) * 15 + 8},78^GB30,32,2^FS")
    out.append(_text(20 + len(din) * 15 + 14, 82, label.check_character, 26))
    out.append(_barcode(half + 10, 15, label.product_barcode, 60))
    out.append(_text(half + 10, 82, f"{label.product_code} {label.division}", 26))
    y = 118
    for line in _fit([label.product, label.facility], stock.width - 40, 20, overflow):
        out.append(_text(20, y, line, 20))
        y += 22
    out.append(_barcode(20, y, label.expiry_barcode, 50))
    # The expiry written out wraps within the left column: the content is beside it.
    out.append(_text(20, y + 54, label.expiry, 18, width=half - 30, lines=2))
    content_y = y
    content = _fit(label.content, half - 30, 18, overflow)
    for line in content[:4]:
        out.append(_text(half + 10, content_y, line, 18))
        content_y += 20
    overflow.extend(content[4:])
    y = max(y + 100, content_y) + 2
    for line in _fit(label.details, stock.width - 40, 18, overflow):
        if y > stock.length - 110:
            overflow.append(line)
            continue
        out.append(_text(20, y, line, 18))
        y += 20
    bars = _fit(label.statements, stock.width - 40, 20, overflow)
    for index, statement in enumerate(bars):
        if index >= 2 or y > stock.length - 80:
            overflow.append(statement)
            continue
        out.append(f"^FO15,{y}^GB{stock.width - 30},26,26^FS")
        out.append(_text(20, y + 3, statement, 20, width=stock.width - 40, reverse=True))
        y += 30
    if label.sec:
        out.append(_text(20, stock.length - 52, label.sec, 18))
    out.append(_text(20, stock.length - 26, _("Unit %(identifier)s", identifier=label.identifier), 18))
    if overflow:
        out.append(_text(half + 60, stock.length - 26, _("Sheet: next label"), 18))
    out.append("^XZ")
    return out, overflow


def _label_2x2(label: UnitLabel, stock: Stock) -> tuple[list[str], list[str]]:
    """The small label carries the three barcodes, the DIN, the expiry and the first bar; the rest on the sheet."""
    overflow: list[str] = [label.product, label.facility, *label.content, *label.details]
    out = _start(stock)
    out.append(_barcode(14, 10, label.din_barcode, 50))
    din = f"{label.din_text} {label.flags_text}".strip()
    out.append(_text(14, 64, din, 22))
    out.append(f"^FO{14 + len(din) * 12 + 6},60^GB26,28,2^FS")
    out.append(_text(14 + len(din) * 12 + 11, 64, label.check_character, 22))
    out.append(_barcode(14, 94, label.product_barcode, 50))
    out.append(_text(14, 148, f"{label.product_code} {label.division}", 22))
    out.append(_barcode(14, 176, label.expiry_barcode, 50))
    out.append(_text(14, 230, label.expiry, 18))
    y = 256
    for index, statement in enumerate(label.statements):
        if index >= 1 or len(statement) > _chars_for(stock.width - 28, 18):
            overflow.append(statement)
            continue
        out.append(f"^FO10,{y}^GB{stock.width - 20},24,24^FS")
        out.append(_text(14, y + 3, statement, 18, width=stock.width - 28, reverse=True))
        y += 28
    if label.sec:
        overflow.append(label.sec)
    out.append(_text(14, stock.length - 48, _("Unit %(identifier)s", identifier=label.identifier), 16))
    out.append(_text(14, stock.length - 26, _("Sheet: next label"), 16))
    out.append("^XZ")
    return out, overflow


def _sheet(label: UnitLabel, stock: Stock, lines: list[str]) -> list[str]:
    out = _start(stock)
    out.append(_text(14, 10, label.sheet_heading or _("Accompanying sheet"), 20))
    out.append(_text(14, 34, _("Unit %(identifier)s", identifier=label.identifier), 18))
    out.append(_barcode(14, 58, label.din_barcode, 44))
    y = 110
    height = 16
    for line in lines:
        rows = max(1, -(-len(line) // _chars_for(stock.width - 28, height)))
        if y + rows * (height + 2) > stock.length - 10:
            break
        out.append(_text(14, y, line, height, width=stock.width - 28, lines=rows))
        y += rows * (height + 2) + 4
    out.append("^XZ")
    return out


def render(labels: list[UnitLabel], stock_name: str) -> str:
    """The ZPL of the labels (each ``^XA`` … ``^XZ``), followed by its accompanying sheet where one is needed."""
    stock = STOCKS[stock_name]
    out: list[str] = []
    for label in labels:
        commands, overflow = (_label_4x2 if stock.name == "4x2" else _label_2x2)(label, stock)
        out.extend(commands)
        if overflow or label.extra:
            out.extend(_sheet(label, stock, overflow + label.extra))
    return "\n".join(out) + "\n"
