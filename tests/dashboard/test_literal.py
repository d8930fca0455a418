"""Text from data shown as text: the Markdown escaping against what Streamlit's renderer does, the
Plotly escaping against what plotly.js does.

Streamlit's renderer is react-markdown (CommonMark and GitHub's extensions, parsed by micromark):
the CommonMark part is checked with markdown-it-py, another CommonMark parser. Streamlit then
rewrites the parsed text (where escapes are gone); its rewrites are copied below from its
frontend bundle (``streamlit/static/static/js/StreamlitMarkdown.*.js``, ``remark-emoji.*.js``)
and must find nothing, GitHub's autolinks (``www.``, ``https://``, e-mail addresses) included
(tests/dashboard/rendered.py). The browser test (tests/browser/test_hostile_text_browser.py)
checks the real thing.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dashboard.literal import WORD_JOINER, markdown_literal, plotly_literal
from tests.dashboard.rendered import autolinks, rendered, tags, text_nodes

HOSTILE = [
    "**bold**",
    "__bold__ _it_ *it*",
    "![x](http://evil.test/p.png)",
    "[link](http://evil.test) [ref][1] [^1]",
    "<img src=http://evil.test/i.png>",
    '<a href="http://evil.test">x</a> <b>bold</b> <span style="color:red">r</span>',
    "<http://evil.test> http://evil.test www.evil.test mail@evil.test",
    "`code` ``co`de``",
    "$x^2$ and $$E=mc^2$$ and \\$5",
    "~~strike~~ ~one~",
    "# heading",
    "| a | b |",
    "back\\slash \\*not bold\\*",
    "line\nbreak\n\n# second paragraph\r\n> quote",
    "    indented code",
    "1. list",
    "- item",
    "+ item",
    ":smile: :+1: :-1: ::",
    ":streamlit: :material/home: :material_home:",
    ":red[red] :blue-background[x] :small[s] :help[h] :rainbow-badge[b]",
    "a -> b <- c <-> d -- e >= f <= g ~= h",
    "&amp; &lt;b&gt; &#60;b&#62; &copy;",
    "{curly} (round) 50% @user #tag ^sup 'single' \"double\"",
    "trailing two spaces  \nhard break",
    "12:30 Europe/Berlin",
    "",
    "   ",
    # GitHub's autolinks, made after parsing where the escapes are gone
    "www.evil.test",
    "WWW.EVIL.TEST/path",
    "www.e.t",
    "foo@bar.baz.qux",
    "nurse@evil.test",
    "see www.evil.test/login",
    "www.evil.test。x",
    "(www.evil.test) *wWw.evil.test* ~www.evil.test_ wwww.evil.test",
    "https://evil.test HTTP://EVIL.TEST/x http://x",
    "mailto:nurse@evil.test xmpp:foo@bar.baz/txt",
    "a.b-c_d+e@x-y.z_w.q @start a@b@c.d",
]

# Streamlit's rewrites of the parsed text (text nodes), and its tests on the raw source
EMOJI_SHORTCODE = re.compile(r":\+1:|:-1:|:[A-Za-z0-9_-]+:")  # remark-emoji
EMOJI_NEEDED = re.compile(r":(?!material/|streamlit:)[A-Za-z0-9_+-][A-Za-z0-9_+-]*:")
STREAMLIT_LOGO = ":streamlit:"
MATERIAL_ICON = ":material/"  # replaced in the raw source, before parsing
ARROWS = [
    re.compile(rf"(^|\s){arrow}(\s|$)") for arrow in ("<->", "->", "<-", "--", ">=", "<=", "~=")
]
ESCAPED_MATH_CHARACTERS = re.compile(r"\\[\\$`]")
BLOCK_MATH = re.compile(r"(?<!\$)\$\$+(?!\$)[\s\S]*?\$\$")
INLINE_MATH = re.compile(r"(?<!\$)\$(?![\s$])[^$\n]*?[^\s$]\$(?!\d)")
TEXT_DIRECTIVE = re.compile(r"(?<!\\):[a-z][a-z0-9-]*\[")


def _shown(text: str) -> str:
    """What a reader sees of ``text``: runs of white space as one space (as HTML shows them)."""
    return " ".join(text.split())


def _assert_shown_as_written(text: str) -> None:
    markdown = markdown_literal(text)
    assert tags(markdown) in ([], ["<p>", "</p>"]), (text, rendered(markdown))
    words = text_nodes(markdown)
    assert words.replace(WORD_JOINER, "") == _shown(text), (text, rendered(markdown))
    # Streamlit's rewrites after parsing find nothing to turn into emoji, icons or arrows
    assert not EMOJI_SHORTCODE.search(words), words
    assert STREAMLIT_LOGO not in words
    assert not any(arrow.search(words) for arrow in ARROWS), words
    assert not autolinks(markdown), (text, autolinks(markdown))
    # ... and its tests on the source load no emoji, icon, math or directive
    assert not EMOJI_NEEDED.search(markdown), markdown
    assert MATERIAL_ICON not in markdown
    unescaped = ESCAPED_MATH_CHARACTERS.sub("_", markdown)
    assert "$" not in unescaped and not BLOCK_MATH.search(unescaped)
    assert not INLINE_MATH.search(unescaped)
    assert not TEXT_DIRECTIVE.search(markdown)


@pytest.mark.parametrize("text", HOSTILE)
def test_markdown_literal_is_shown_exactly_as_written(text: str) -> None:
    _assert_shown_as_written(text)


# NUL is replaced by CommonMark; a word joiner in the text would be taken for an added one
@given(st.text(alphabet=st.characters(blacklist_characters="\x00\u2060"), max_size=60))
def test_any_text_is_shown_exactly_as_written(text: str) -> None:
    _assert_shown_as_written(text)


@given(st.text(alphabet="*_[]()!<>`$~#|\\:-=+.&@/ \nabcwW", max_size=40))
def test_markdown_characters_in_any_order_are_shown_as_written(text: str) -> None:
    _assert_shown_as_written(text)


def test_markdown_literal_escapes_every_markdown_character() -> None:
    assert markdown_literal("**bold**") == r"\*\*bold\*\*"
    assert markdown_literal("![x](http://evil.test/p.png)") == (
        rf"\!\[x\]\(http\:{WORD_JOINER}\/\/evil\.test\/p\.png\)"
    )
    assert markdown_literal("$x$ <b>") == r"\$x\$ \<b\>"
    assert markdown_literal(":red[x]") == rf"\:{WORD_JOINER}red\[x\]"
    assert markdown_literal("a -> b") == rf"a \-{WORD_JOINER}\> b"
    assert markdown_literal("WWW.x a@b") == rf"WWW{WORD_JOINER}\.x a{WORD_JOINER}\@b"
    assert markdown_literal("two\nlines") == "two lines"
    assert markdown_literal(1975) == "1975"


# plotly.js (svg_text_utils): the entities it draws as characters, and its tags
PLOTLY_ENTITIES = {
    "mu": "μ",
    "amp": "&",
    "lt": "<",
    "gt": ">",
    "nbsp": "\xa0",
    "times": "×",
    "plusmn": "±",
    "deg": "°",
}
PLOTLY_ENTITY = re.compile(r"&(#\d+|#x[\da-fA-F]+|[a-z]+);")
PLOTLY_TAG = re.compile(r"<[^<>]*>")
PLOTLY_TEMPLATE = re.compile(r"%{([^\s%{}:]*)([:|\|][^}]*)?}")


def _plotly_draws(text: str) -> str:
    """The characters plotly.js draws for ``text`` (its entity conversion)."""

    def character(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("#x"):
            return chr(int(name[2:], 16))
        if name.startswith("#"):
            return chr(int(name[1:]))
        return PLOTLY_ENTITIES.get(name, match.group(0))

    return PLOTLY_ENTITY.sub(character, text)


PLOTLY_HOSTILE = [
    '<a href="http://evil.test">x</a>',
    "<b>bold</b><br><i>it</i><sub>2</sub><sup>3</sup>",
    '<span style="font-size:80px">big</span>',
    "&lt;b&gt; is not <b>",
    "&amp;times; &times; &#60;",
    "%{x} %{customdata[0]} 50%",
    "plain therapy",
]


@pytest.mark.parametrize("text", PLOTLY_HOSTILE)
def test_plotly_literal_is_drawn_exactly_as_written(text: str) -> None:
    escaped = plotly_literal(text)
    assert not PLOTLY_TAG.search(escaped)
    assert "<" not in escaped and ">" not in escaped
    assert not PLOTLY_TEMPLATE.search(escaped)  # safe inside a hover template too
    assert _plotly_draws(escaped) == text


@given(st.text(max_size=60))
def test_any_text_is_drawn_by_plotly_as_written(text: str) -> None:
    escaped = plotly_literal(text)
    assert "<" not in escaped and ">" not in escaped and "%{" not in escaped
    assert _plotly_draws(escaped) == text


def test_plotly_literal_uses_entities() -> None:
    assert plotly_literal("<b>&</b> 5%") == "&lt;b&gt;&amp;&lt;/b&gt; 5&#37;"
