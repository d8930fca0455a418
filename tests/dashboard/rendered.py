"""What a reader sees of Streamlit Markdown, by markdown-it-py (a CommonMark parser like the
micromark of Streamlit's react-markdown), for the tests of text from data; and the GitHub autolinks
Streamlit's renderer would make of the parsed text."""

from __future__ import annotations

import html
import re

from markdown_it import MarkdownIt

from dashboard.literal import WORD_JOINER

COMMONMARK = MarkdownIt("commonmark").enable(["table", "strikethrough"])

# GitHub-flavoured autolinks (the GFM spec's "Autolinks (extension)": www., http://, https://,
# mailto:, xmpp: and e-mail addresses). Streamlit's react-markdown finds them in the parsed text,
# where the backslash escapes are gone (remark-gfm's mdast-util-gfm-autolink-literal): its two
# patterns, copied from Streamlit's frontend bundle (StreamlitMarkdown.*.js), come first. They
# are applied here without the bundle's further conditions (a space or punctuation before, a
# valid domain after), so any match counts; and the spec's triggers must not survive contiguous.
# (markdown-it-py's linkify is no model of this: it runs before escaped characters rejoin the
# text around them, so it never sees "www.evil.test" in "www\.evil\.test", and its links
# without a scheme follow a list of top-level domains where GFM's follow "www.".)
GFM_AUTOLINKS = (
    re.compile(r"(https?:\/\/|www(?=\.))([-.\w]+)([^ \t\r\n]*)", re.IGNORECASE),
    re.compile(r"([-.\w+]+)@([-\w]+(?:\.[-\w]+)+)"),
    re.compile(r"www\.", re.IGNORECASE),
    re.compile(rf"(https?|mailto|xmpp):(?![\s{WORD_JOINER}])", re.IGNORECASE),
    re.compile(r"[-.\w+]@"),
)


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


def autolinks(markdown: str) -> list[str]:
    """What GitHub-flavoured autolinking would find in the text ``markdown`` renders to: the
    matches of :data:`GFM_AUTOLINKS` (none for text shown as text)."""
    words = text_nodes(markdown)
    return [match.group(0) for pattern in GFM_AUTOLINKS for match in pattern.finditer(words)]
