import html

from interp.viz.text import plot_label, prose, visible


def test_bidi_overrides_and_invisible_characters_show_as_escapes():
    spoof = "Romeo gave a ring to \u202eteiluJ\u202c"
    assert visible(spoof) == "Romeo gave a ring to \\u202eteiluJ\\u202c"
    assert visible("a\u2066b\u2069c\u200bd\u200de\ufefff\u00adg") == "a\\u2066b\\u2069c\\u200bd\\u200de\\ufefff\\xadg"
    assert visible("\x00\x1b[31m\x7f") == "\\x00\\x1b[31m\\x7f"
    assert visible("line\u2028sep\U000e0041") == "line\\u2028sep\\U000e0041"  # line separator, a tag character
    assert visible("\n\t\r") == "↵⇥␍"


def test_printable_text_is_unchanged_and_the_result_has_nothing_hidden():
    text = "Où est le café? 東京 ÿ — <b>&amp;</b> émoji 🙂 "
    assert visible(text) == text
    import unicodedata

    every = "".join(chr(c) for c in range(0x3000) if not 0xD800 <= c < 0xE000)
    assert not [c for c in visible(every) if unicodedata.category(c) in {"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"}]
    assert html.escape(visible("<script>\u202e")) == "&lt;script&gt;\\u202e"  # it does not escape HTML itself


def test_prose_keeps_newlines_and_tabs_as_layout_and_plot_labels_are_escaped():
    assert prose("a\nb\tc\r\u202ed") == "a\nb\tc␍\\u202ed"
    assert plot_label("<b>\u202e</b>\n") == "&lt;b&gt;\\u202e&lt;/b&gt;↵"
