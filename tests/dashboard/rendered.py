"""What a reader sees of Streamlit Markdown, by markdown-it-py (a CommonMark parser like the
micromark of Streamlit's react-markdown), for the tests of text from data."""

from __future__ import annotations

import html
import re

from markdown_it import MarkdownIt

from dashboard.literal import WORD_JOINER

COMMONMARK = MarkdownIt("commonmark").enable(["table", "strikethrough"])


def rendered(markdown: str) -> str:
    """The HTML ``markdown`` renders to."""
    return str(COMMONMARK.render(markdown))


def tags(markdown: str) -> list[str]:
    """The HTML tags ``markdown`` renders to (``["<p>", "</p>"]`` for plain text)."""
    return re.findall(r"<[^>]*>", rendered(markdown))


def text_nodes(markdown: str) -> str:
    """The text a Markdown renderer hands to its rewrites: the rendered paragraphs' text."""
    return html.unescape(re.sub(r"<[^>]*>", "", rendered(markdown))).strip()


def shown(markdown: str) -> str:
    """The text a reader sees: the rendered text, without the invisible word joiners."""
    return text_nodes(markdown).replace(WORD_JOINER, "")
