"""Text a template shows without a translation call: words between tags or in attributes people read (title,
placeholder, aria-label, alt, a button's value). Used by the test suite and `cellfactory translations check`."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

# Abbreviations, symbols and units said the same way in Italian and English (GLOSSARY-it.md keeps QP, QA, QC,
# OOS, CAPA, DIN, SEC untranslated), and the name of the product.
UNTRANSLATED = frozenset({
    "cellfactory", "QP", "QA", "QC", "OOS", "CAPA", "DIN", "SEC", "PD", "GMP", "ISBT", "PDF", "CSV", "JSON", "API",
    "SOP", "SAR", "SAE", "UTC", "mL", "µL", "L", "°C", "h", "min", "kg", "g", "mg", "EU", "CFU", "x", "×", "CO₂",
    "pH", "ID", "FIN", "HLA", "CIK", "MSC", "HSC", "OK", "e-mail", "P", "n", "N", "A", "B", "C", "D",
})
READ_ATTRIBUTES = frozenset({"title", "placeholder", "aria-label", "alt"})
WORD = re.compile(r"[^\W\d_](?:[\w°µ₂⁰-⁹'’.-]*\w)?")
# A Jinja expression stands for a value (no letters); a statement or a comment for nothing.
JINJA = re.compile(r"\{\{.*?\}\}|\{%.*?%\}|\{#.*?#\}", re.S)


class _Reader(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[int, str]] = []
        self._skip = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        values = dict(attrs)
        for name, value in attrs:
            read = name in READ_ATTRIBUTES or (
                name == "value" and tag in ("input", "button") and values.get("type") in ("submit", "button"))
            if read and value:
                self._note(value)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self._note(data)

    def _note(self, text: str) -> None:
        for word in WORD.findall(text):
            if word not in UNTRANSLATED:
                self.found.append((self.getpos()[0], word))


def untranslated_words(source: str) -> list[tuple[int, str]]:
    """(line, word) of each word shown as it is written in the template."""
    without_jinja = JINJA.sub(lambda match: "§" + "\n" * match.group(0).count("\n"), source)
    reader = _Reader()
    reader.feed(without_jinja)
    reader.close()
    return reader.found


def template_files(root: Path) -> Iterator[Path]:
    yield from sorted(root.rglob("*.html"))


def check(root: Path) -> dict[str, list[tuple[int, str]]]:
    return {str(path.relative_to(root)): found for path in template_files(root)
            if (found := untranslated_words(path.read_text(encoding="utf-8")))}
