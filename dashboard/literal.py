"""Text from data shown as text: escaping for Streamlit's Markdown and for Plotly's labels.

Patients' sex and country, therapy and side-effect names, quarantine reasons, job errors, alert
messages and query results are text someone else wrote. Streamlit renders Markdown in captions,
alerts, metric values and labels (GitHub-flavoured, plus LaTeX between ``$``, emoji and Material
icon shortcodes, ``:red[...]``-style directives and typographic arrows); Plotly renders a subset
of HTML (``<a href>``, ``<b>``, ``<br>``, ``<span style>``, ``<sub>``...) and HTML entities in
titles, tick labels, legends, annotations and hovers. Such text reaches either only through
:func:`markdown_literal` or :func:`plotly_literal`. Tables (``st.dataframe``) and select options
show text as it is and need neither.
"""

from __future__ import annotations

import string
from typing import Final

# CommonMark lets every ASCII punctuation character be escaped with a backslash
MARKDOWN_PUNCTUATION: Final = frozenset(string.punctuation)
# Invisible, and no line break: it keeps apart what Streamlit would turn into something else
WORD_JOINER: Final = "\u2060"
# Streamlit draws " -> ", " <- ", " <-> ", " -- ", " >= ", " <= ", " ~= " as arrows and symbols
_ARROW_PARTS: Final = frozenset("-<>=~")


def markdown_literal(text: object) -> str:
    """``text`` as Markdown that Streamlit shows exactly as written, on one line.

    Every ASCII punctuation character is backslash-escaped (no emphasis, link, image, HTML,
    code, heading, list, table, strikethrough, math or directive can start). Streamlit also
    rewrites the text *after* parsing, where escapes are gone: emoji and icon shortcodes
    (``:smile:``, ``:streamlit:``, ``:material/home:``), arrows (``->``) and GitHub's
    autolinks (``www.evil.test``, ``https://…``, ``mailto:``, ``xmpp:``, ``nurse@evil.test``); a
    word joiner (U+2060, invisible) after each colon followed by a non-space (so no scheme
    ``https:``, ``mailto:``, ``xmpp:`` is followed by its link), between two arrow characters,
    before each ``@`` and between ``www`` (any case) and the dot after it keeps them as typed.
    Runs of white space, line breaks included, become one space.

    Args:
        text: text from data (anything else is shown as its ``str``).
    """
    words = " ".join(str(text).split())
    out: list[str] = []
    for index, char in enumerate(words):
        if char == "@" or (
            char == "." and index >= 3 and words[index - 3 : index].lower() == "www"
        ):
            out.append(WORD_JOINER)  # no e-mail autolink, no www. autolink
        out.append("\\" + char if char in MARKDOWN_PUNCTUATION else char)
        following = words[index + 1 : index + 2].strip()  # "" at a space or the end
        if following and (char == ":" or (char in _ARROW_PARTS and following in _ARROW_PARTS)):
            out.append(WORD_JOINER)
    return "".join(out)


def plotly_literal(text: object) -> str:
    """``text`` as Plotly text that is shown exactly as written: ``&``, ``<`` and ``>`` as HTML
    entities (Plotly draws entities as their characters), and ``%`` too, so that the text can
    sit in a hover template without ``%{...}`` being filled in.

    Args:
        text: text from data (anything else is shown as its ``str``).
    """
    return (
        str(text)
        .replace("&", "&amp;")
        .replace("<", "&lt;")
        .replace(">", "&gt;")
        .replace("%", "&#37;")
    )
