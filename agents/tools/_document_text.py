"""Plain text out of documents (txt, md, html, pdf), cut into overlapping chunks.

The `documents` agent indexes folders: it reads each file's bytes, turns them into text
here (sync and CPU-bound, so callers run it in `trio.to_thread`), and embeds the chunks.
Chunks end at the coarsest boundary that fits - paragraph, sentence, line, word - and
carry their exact offset in the extracted text, so a search hit can be quoted in place.
"""

from __future__ import annotations

import bisect
import html.parser
import io
import itertools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from agents.errors import DocumentUnreadable, UnsupportedDocument

_PLAIN_SUFFIXES = frozenset({".txt", ".md", ".markdown"})
_HTML_SUFFIXES = frozenset({".html", ".htm"})
SUPPORTED_SUFFIXES: frozenset[str] = _PLAIN_SUFFIXES | _HTML_SUFFIXES | {".pdf"}
MIN_CHUNK_CHARS = 50


@dataclass(frozen=True, slots=True)
class TextChunk:
    """A slice of extracted text: `text == full[offset : offset + len(text)]`."""

    offset: int
    text: str


def is_supported(path: Path) -> bool:
    """Whether `extract_text` reads files with this (case-insensitive) suffix."""
    return path.suffix.lower() in SUPPORTED_SUFFIXES


def extract_text(path: Path, data: bytes) -> str:
    """The text of the document `data` read from `path`, chosen by its suffix."""
    suffix = path.suffix.lower()
    if suffix in _PLAIN_SUFFIXES:
        return decode_text(data)
    if suffix in _HTML_SUFFIXES:
        return html_text(decode_text(data))
    if suffix == ".pdf":
        return _pdf_text(path, data)
    raise UnsupportedDocument(path, SUPPORTED_SUFFIXES)


def decode_text(data: bytes) -> str:
    """UTF-8 (a leading BOM dropped, bad bytes replaced by U+FFFD) with `\\n` newlines."""
    return _normalise_newlines(data.decode("utf-8-sig", errors="replace"))


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


# --- html -----------------------------------------------------------------------------


class _HtmlText(html.parser.HTMLParser):
    """Visible text of an HTML document; block elements break lines or paragraphs."""

    _SKIP = frozenset({"script", "style", "noscript", "template", "svg"})
    _LINE = frozenset({"br", "li", "tr", "dt", "dd", "option"})
    _CELL = frozenset({"td", "th"})
    _PARAGRAPH = frozenset(
        {
            *("address", "article", "aside", "blockquote", "caption", "details", "dialog"),
            *("div", "dl", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2"),
            *("h3", "h4", "h5", "h6", "header", "hgroup", "hr", "main", "nav", "ol", "p"),
            *("pre", "section", "summary", "table", "title", "ul"),
        }
    )

    def __init__(self, *, title_apart: bool = False) -> None:
        super().__init__(convert_charrefs=True)
        self._parts: list[str] = []
        self._skipping = 0
        self._title_apart = title_apart
        self._in_title = False
        self._title: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._in_title = tag == "title"
        if tag in self._SKIP:
            self._skipping += 1
        elif tag in self._LINE:
            self._parts.append("\n")
        self._boundary(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)  # `<br/>` is one break, not an open and a close

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False
        if tag in self._SKIP:
            self._skipping = max(0, self._skipping - 1)
        self._boundary(tag)

    def handle_data(self, data: str) -> None:
        if self._in_title and self._title_apart:
            self._title.append(data)
        elif not self._skipping:
            # Whitespace in markup is a space; only elements make line breaks.
            self._parts.append(_WHITESPACE.sub(" ", data))

    def _boundary(self, tag: str) -> None:
        if tag in self._PARAGRAPH:
            self._parts.append("\n\n")
        elif tag in self._CELL:
            self._parts.append(" ")

    def title(self) -> str:
        return " ".join("".join(self._title).split())

    def text(self) -> str:
        lines = (" ".join(line.split()) for line in "".join(self._parts).split("\n"))
        return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


_WHITESPACE = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n{3,}")


def html_text(markup: str) -> str:
    """Readable text of HTML: no scripts or styles, entities unescaped, spaces collapsed.

    Paragraph-like elements are separated by a blank line, list items and `<br>` by a
    line break, so `chunk_text` can cut at the document's own boundaries.
    """
    parser = _HtmlText()
    parser.feed(markup)
    parser.close()
    return parser.text()


def html_page(markup: str) -> tuple[str, str]:
    """(title, text) of an HTML page: as `html_text`, with the title kept apart."""
    parser = _HtmlText(title_apart=True)
    parser.feed(markup)
    parser.close()
    return parser.title(), parser.text()


# --- pdf ------------------------------------------------------------------------------


def _pdf_text(path: Path, data: bytes) -> str:
    """Every page's text, pages apart by a blank line; an image-only PDF gives ''."""
    import pypdf  # lazily: it is slow to import and only PDFs need it

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))  # tries the empty password itself
        pages = [page.extract_text() for page in reader.pages]
    # pypdf raises far more than its own errors on malformed input (KeyError,
    # ValueError, RecursionError...); only pypdf runs in this block, so every error
    # here is a statement about the file.
    except Exception as exc:
        raise DocumentUnreadable(path, _reason(exc)) from exc
    texts = (_normalise_newlines(page).strip() for page in pages)
    return "\n\n".join(text for text in texts if text)


def _reason(exc: Exception) -> str:
    import pypdf.errors

    if isinstance(exc, pypdf.errors.FileNotDecryptedError):
        return "the PDF is encrypted and needs a password"
    return str(exc) or type(exc).__name__


# --- chunks ---------------------------------------------------------------------------

# Ranks of the whitespace between two words: a chunk ends at the highest rank it can.
_WORD, _LINE, _SENTENCE, _PARAGRAPH = range(4)
# Sentence punctuation, then any closing quotes and brackets ("..." '...' \u201d \u2019).
_SENTENCE_END = re.compile(r"[.!?\u2026\u3002][\"'\u201d\u2019)\]]*\Z")


@dataclass(frozen=True, slots=True)
class _Gap:
    """A run of whitespace, text[start:end], and how strong a boundary it is."""

    start: int
    end: int
    rank: int


def chunk_text(text: str, *, max_chars: int = 1200, overlap: int = 150) -> list[TextChunk]:
    """`text` in chunks of at most `max_chars`, cut at the strongest boundary that fits.

    Each chunk repeats up to `overlap` characters (whole words) of the one before, so a
    passage cut in two is still found whole; whitespace-only text gives no chunk.
    """
    _check_chunk_arguments(max_chars, overlap)
    gaps = list(_gaps(text))
    bounds = _trimmed(text, gaps)
    if bounds is None:
        return []
    # Room is kept for the overlap, so adding it never takes a chunk past max_chars.
    splitter = _Splitter(budget=max_chars - overlap, max_chars=max_chars)
    spans = list(splitter.spans(bounds[0], bounds[1], gaps, _PARAGRAPH))
    starts = _overlapped_starts(spans, [gap.end for gap in gaps], max_chars, overlap)
    return [
        TextChunk(start, text[start:end]) for start, (_, end) in zip(starts, spans, strict=True)
    ]


def _check_chunk_arguments(max_chars: int, overlap: int) -> None:
    if max_chars < MIN_CHUNK_CHARS:
        raise ValueError(f"max_chars must be at least {MIN_CHUNK_CHARS}, got {max_chars}")
    if not 0 <= overlap < max_chars // 2:
        raise ValueError(
            f"overlap must be at least 0 and less than max_chars // 2 "
            f"({max_chars // 2}), got {overlap}"
        )


def _gaps(text: str) -> Iterator[_Gap]:
    for match in _WHITESPACE.finditer(text):
        yield _Gap(match.start(), match.end(), _rank(text, match.start(), match.group()))


def _rank(text: str, start: int, space: str) -> int:
    if space.count("\n") >= 2:
        return _PARAGRAPH
    if _SENTENCE_END.search(text, max(0, start - 4), start):
        return _SENTENCE
    return _LINE if "\n" in space else _WORD


def _trimmed(text: str, gaps: list[_Gap]) -> tuple[int, int] | None:
    """Bounds of `text` without leading and trailing whitespace; None if nothing is left."""
    start, end = 0, len(text)
    if gaps and gaps[0].start == 0:
        start = gaps[0].end
    if gaps and gaps[-1].end == end:
        end = gaps[-1].start
    return (start, end) if start < end else None


@dataclass(frozen=True, slots=True)
class _Splitter:
    """Cuts text into spans of at most `budget`, bar a word of up to `max_chars`."""

    budget: int
    max_chars: int

    def spans(
        self, start: int, end: int, gaps: Sequence[_Gap], rank: int
    ) -> Iterator[tuple[int, int]]:
        """Spans of text[start:end], whose gaps are all of `rank` or weaker.

        A word (no gap left) is cut only past `max_chars`: never inside a word that fits.
        """
        if end - start <= self.budget or (rank < _WORD and end - start <= self.max_chars):
            yield start, end
        elif rank < _WORD:
            step = self.max_chars
            yield from ((cut, min(cut + step, end)) for cut in range(start, end, step))
        else:
            yield from self._packed(start, end, gaps, rank)

    def _packed(
        self, start: int, end: int, gaps: Sequence[_Gap], rank: int
    ) -> Iterator[tuple[int, int]]:
        """Pieces between gaps of `rank` packed while they fit; a piece too long on its
        own is cut at the next weaker rank, starting a span of its own."""
        packed: tuple[int, int] | None = None
        for piece_start, piece_end, inner in _pieces(start, end, gaps, rank):
            if packed is not None and piece_end - packed[0] <= self.budget:
                packed = (packed[0], piece_end)
                continue
            if packed is not None:
                yield packed
            packed = None
            if piece_end - piece_start <= self.budget:
                packed = (piece_start, piece_end)
            else:
                yield from self.spans(piece_start, piece_end, inner, rank - 1)
        if packed is not None:
            yield packed


def _pieces(
    start: int, end: int, gaps: Sequence[_Gap], rank: int
) -> Iterator[tuple[int, int, list[_Gap]]]:
    """text[start:end] split at its gaps of `rank`: (start, end, the weaker gaps inside)."""
    inner: list[_Gap] = []
    for gap in gaps:
        if not start < gap.start < end:
            continue
        if gap.rank >= rank:
            yield start, gap.start, inner
            start, inner = gap.end, []
        else:
            inner.append(gap)
    yield start, end, inner


def _overlapped_starts(
    spans: list[tuple[int, int]], word_starts: list[int], max_chars: int, overlap: int
) -> list[int]:
    """Each chunk's start moved back over whole words of the one before, within limits."""
    starts = [spans[0][0]]
    for (previous_start, previous_end), (start, end) in itertools.pairwise(spans):
        earliest = max(previous_start + 1, previous_end - overlap, end - max_chars)
        index = bisect.bisect_left(word_starts, earliest)
        if index < len(word_starts) and word_starts[index] < previous_end:
            start = word_starts[index]
        starts.append(start)
    return starts
