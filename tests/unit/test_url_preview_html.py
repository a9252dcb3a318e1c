"""What a link preview takes from an HTML page: OpenGraph first, then the fallbacks,
whatever state the page is in."""

from __future__ import annotations

import pytest

from homeserver.services.media.url_preview_html import (
    MAX_DESCRIPTION_CHARS,
    MAX_OG_KEYS,
    MAX_TITLE_CHARS,
    charset_of,
    decode_html,
    parse_html,
)

PAGE = "https://example.com/articles/one.html"


def test_opengraph_tags_win_over_fallbacks() -> None:
    og = parse_html(
        """<html><head><title>Plain title</title>
        <meta name="description" content="meta description">
        <meta property="og:title" content="OG title">
        <meta property="og:description" content="OG description">
        <meta property="og:image" content="../img/cover.jpg">
        <meta property="og:type" content="article">
        </head><body><img src="/other.png"></body></html>""",
        PAGE,
    )
    assert og == {
        "og:title": "OG title",
        "og:description": "OG description",
        "og:image": "https://example.com/img/cover.jpg",
        "og:type": "article",
    }


def test_first_occurrence_wins_and_name_attribute_counts() -> None:
    og = parse_html(
        '<meta name="og:title" content="first"><meta property="og:title" content="second">',
        PAGE,
    )
    assert og["og:title"] == "first"


def test_fallbacks_title_description_and_image() -> None:
    og = parse_html(
        """<html><head><title>  A
        page  </title><meta name="description" content="About &amp; more"></head>
        <body><svg><title>icon title</title></svg>
        <img src="data:image/png;base64,AAAA"><img src="logo.svg">
        <img src="/pixel.gif" width="1" height="1"><img src="photo.jpg"></body></html>""",
        PAGE,
    )
    assert og == {
        "og:title": "A page",
        "og:description": "About & more",
        "og:image": "https://example.com/articles/photo.jpg",
    }


def test_twitter_card_tags_are_fallbacks_too() -> None:
    og = parse_html(
        '<meta name="twitter:title" content="Tweet title">'
        '<meta name="twitter:description" content="Tweet text">'
        '<meta name="twitter:image" content="https://cdn.example.net/t.png">'
        "<title>Page title</title>",
        PAGE,
    )
    assert og == {
        "og:title": "Tweet title",
        "og:description": "Tweet text",
        "og:image": "https://cdn.example.net/t.png",
    }


def test_title_in_script_or_svg_is_not_the_page_title() -> None:
    og = parse_html(
        '<script>document.write("<title>fake</title>")</script><title>real</title>', PAGE
    )
    assert og == {"og:title": "real"}


def test_non_http_images_are_dropped_with_their_dimensions() -> None:
    og = parse_html(
        '<meta property="og:image" content="javascript:alert(1)">'
        '<meta property="og:image:width" content="100"><title>t</title>',
        PAGE,
    )
    assert og == {"og:title": "t"}


def test_values_and_keys_are_bounded_and_cleaned() -> None:
    many = "".join(f'<meta property="og:k{i}" content="v{i}">' for i in range(200))
    og = parse_html(
        f"<title>{'t' * 5000}</title>"
        f'<meta name="description" content="{"d " * 5000}">'
        '<meta property="og:bad\x00key" content="x">'
        '<meta property="og:site_name" content="nul\x00 and\ttabs">' + many,
        PAGE,
    )
    assert len(og["og:title"]) <= MAX_TITLE_CHARS
    assert len(og["og:description"]) <= MAX_DESCRIPTION_CHARS
    assert og["og:site_name"] == "nul and tabs"
    assert all("\x00" not in key for key in og)
    assert len([k for k in og if k.startswith("og:k")]) <= MAX_OG_KEYS


@pytest.mark.parametrize(
    "html",
    [
        "",
        "<<<<>>>>",
        "<html><head><title>unclosed",
        "<!-- never closed comment <title>x</title>",
        "<meta property='og:title' content>",
        "<![CDATA[ <title>x",
        "<img src=",
        "\x00\x01\x02<title>\ufffd</title>",
        "<title>" + "<b>" * 10000,
    ],
)
def test_malformed_html_gives_a_preview_not_an_error(html: str) -> None:
    og = parse_html(html, PAGE)
    assert isinstance(og, dict)
    assert all(isinstance(v, str) and "\x00" not in v for v in og.values())


def test_charset_from_header_then_meta_then_utf8() -> None:
    latin = "<title>Café</title>".encode("latin-1")
    assert "Café" in decode_html(latin, "text/html; charset=ISO-8859-1")
    assert "Café" in decode_html(b'<meta charset="windows-1252">' + latin, "text/html")
    assert "Café" in decode_html(
        b'<meta http-equiv="Content-Type" content="text/html; charset=latin1">' + latin, None
    )
    assert "Café" in decode_html("<title>Café</title>".encode(), "text/html")
    # An unknown charset falls back to UTF-8; bad bytes become U+FFFD, not an error.
    assert "\ufffd" in decode_html(latin, "text/html; charset=no-such-charset")
    # UTF-16 with a byte-order mark.
    assert "Café" in decode_html("<title>Café</title>".encode("utf-16"), "text/html")


def test_charset_of_header() -> None:
    assert charset_of('text/html; charset="UTF-8"') == "UTF-8"
    assert charset_of("text/html") is None
    assert charset_of(None) is None
