"""What a link preview shows of an HTML page, found with the standard library's
tolerant parser: OpenGraph `og:*` meta tags first, then Twitter card tags, `<title>`,
the meta description and the first image that looks like content.

Pure functions over bytes and strings, so that hostile pages (broken markup, wrong
charsets, huge attribute values) are tested without a network.
"""

from __future__ import annotations

import codecs
import re
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

# Bounds on what one page can put into a preview (and into the cache).
MAX_TITLE_CHARS = 300
MAX_DESCRIPTION_CHARS = 500
MAX_VALUE_CHARS = 1000
MAX_OG_KEYS = 50
# Where a <meta charset> must appear to count (the HTML standard's prescan looks at 1024
# bytes; pages in the wild put it a little later).
CHARSET_SNIFF_BYTES = 4096
# Images declared smaller than this on either side are icons, spacers or trackers.
MIN_IMAGE_SIDE = 32

_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9._:-]+)""", re.I)
_SPACE = re.compile(r"\s+")
# Control characters: never useful in a preview, and NUL cannot be stored in PostgreSQL.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0e-\x1f\x7f]")
# The OpenGraph keys worth passing on: plain names, no room for surprises in JSON keys.
_OG_KEY = re.compile(r"og:[a-z0-9_.:-]{1,64}")
_IGNORED_TEXT_PARENTS = frozenset({"script", "style", "noscript", "svg", "template"})


def charset_of(content_type: str | None) -> str | None:
    """The `charset` parameter of a Content-Type header, if any."""
    if not content_type:
        return None
    for param in content_type.split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            return value.strip().strip("\"'") or None
    return None


def _codec(name: str | None) -> str | None:
    """A Python codec for a declared charset, or None when it names nothing we know."""
    if not name:
        return None
    try:
        return codecs.lookup(name).name
    except LookupError:
        return None


def decode_html(body: bytes, content_type: str | None) -> str:
    """The page as text: a byte-order mark wins, then the HTTP header's charset, then a
    <meta> declaration near the top, then UTF-8; undecodable bytes become U+FFFD rather
    than failing the preview."""
    for bom, name in ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16")):
        if body.startswith(bom):
            return body.decode(name, errors="replace")
    if body.startswith(codecs.BOM_UTF16_BE):
        return body.decode("utf-16", errors="replace")
    encoding = _codec(charset_of(content_type))
    if encoding is None:
        match = _META_CHARSET.search(body[:CHARSET_SNIFF_BYTES])
        if match is not None:
            encoding = _codec(match.group(1).decode("ascii", "replace"))
    # A page cannot really be UTF-16 without a BOM: an ASCII-compatible <meta> claiming
    # so is wrong (the HTML standard says to read it as UTF-8).
    if encoding is None or encoding.startswith("utf-16") or encoding.startswith("utf-32"):
        encoding = "utf-8"
    return body.decode(encoding, errors="replace")


def _clean(text: str, limit: int) -> str:
    """Control characters dropped, whitespace collapsed, length bounded."""
    text = _SPACE.sub(" ", _CONTROL.sub("", text)).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def _http_url(base_url: str, ref: str) -> str | None:
    """`ref` made absolute against the page, if it is an http(s) URL."""
    ref = ref.strip()
    if not ref or len(ref) > MAX_VALUE_CHARS:
        return None
    try:
        absolute = urljoin(base_url, ref)
        scheme = urlsplit(absolute).scheme
    except ValueError:
        return None
    return absolute if scheme in ("http", "https") else None


def _side(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class _PageParser(HTMLParser):
    """Collects meta tags, the first <title> and the first content-like <img>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.og: dict[str, str] = {}
        self.meta: dict[str, str] = {}
        self.title: str | None = None
        self.image: str | None = None
        self._open: list[str] = []
        self._title_parts: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {name: value or "" for name, value in attrs}
        if tag == "meta":
            self._meta(attributes)
        elif tag == "title" and self.title is None and not self._ignored():
            self._title_parts = []
        elif tag == "img" and self.image is None and not self._ignored():
            self._img(attributes)
        if tag in _IGNORED_TEXT_PARENTS:
            self._open.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        # <meta ... /> and <img ... />: the same as without the slash, and nothing opens.
        if tag in ("meta", "img"):
            self.handle_starttag(tag, attrs)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._title_parts is not None:
            self.title = "".join(self._title_parts)
            self._title_parts = None
        if tag in _IGNORED_TEXT_PARENTS and tag in self._open:
            while self._open and self._open.pop() != tag:
                pass

    def handle_data(self, data: str) -> None:
        if self._title_parts is not None and sum(map(len, self._title_parts)) < MAX_VALUE_CHARS:
            self._title_parts.append(data)

    def _ignored(self) -> bool:
        return bool(self._open)

    def _meta(self, attributes: dict[str, str]) -> None:
        content = attributes.get("content")
        if content is None:
            return
        # OpenGraph says `property`; many pages use `name`, which is also where
        # `description` and the Twitter card tags live.
        for key in (attributes.get("property"), attributes.get("name")):
            if not key:
                continue
            key = key.strip().lower()
            if _OG_KEY.fullmatch(key):
                if key not in self.og and len(self.og) < MAX_OG_KEYS:
                    self.og[key] = content[:MAX_VALUE_CHARS]
            elif key in ("description", "twitter:title", "twitter:description", "twitter:image"):
                self.meta.setdefault(key, content[:MAX_VALUE_CHARS])

    def _img(self, attributes: dict[str, str]) -> None:
        src = attributes.get("src", "").strip()
        if not src or src.startswith("data:") or src.lower().endswith(".svg"):
            return
        width, height = _side(attributes.get("width")), _side(attributes.get("height"))
        if (width is not None and width < MIN_IMAGE_SIDE) or (
            height is not None and height < MIN_IMAGE_SIDE
        ):
            return
        self.image = src


def parse_html(text: str, page_url: str) -> dict[str, Any]:
    """The preview of a page: `og:*` keys (strings) with `og:title`, `og:description`
    and `og:image` filled from fallbacks when the page has no OpenGraph for them.
    `og:image` is an absolute http(s) URL here; the caller fetches it."""
    parser = _PageParser()
    try:
        parser.feed(text)
        parser.close()
    except (AssertionError, ValueError, IndexError):
        # The parser is tolerant, but a few pathological inputs still raise inside it;
        # what was collected up to there is still a fine preview.
        pass
    og: dict[str, Any] = {}
    for key, value in parser.og.items():
        cleaned = _clean(value, MAX_VALUE_CHARS)
        if cleaned:
            og[key] = cleaned
    title = og.get("og:title") or parser.meta.get("twitter:title") or parser.title
    if title and _clean(title, MAX_TITLE_CHARS):
        og["og:title"] = _clean(title, MAX_TITLE_CHARS)
    description = (
        og.get("og:description")
        or parser.meta.get("twitter:description")
        or parser.meta.get("description")
    )
    if description and _clean(description, MAX_DESCRIPTION_CHARS):
        og["og:description"] = _clean(description, MAX_DESCRIPTION_CHARS)
    og.pop("og:image", None)
    for candidate in (parser.og.get("og:image"), parser.meta.get("twitter:image"), parser.image):
        image = _http_url(page_url, candidate) if candidate else None
        if image is not None:
            og["og:image"] = image
            break
    if "og:image" not in og:
        for key in [k for k in og if k.startswith("og:image:")]:
            del og[key]
    return og
