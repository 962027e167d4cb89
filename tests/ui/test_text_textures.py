"""Wrapped text is drawn on a texture as wide as its longest line, where Kivy would draw it."""

from __future__ import annotations

from typing import Any

import pytest

from tests.ui.conftest import Kiosk

TEXT = "请扫描您的会员码"
BOX = 900  # the width the text wraps to, far wider than the text


def _core_pair(**options: Any) -> tuple[Any, Any]:
    """The same text laid out by the app's text provider and by the one it narrows."""
    import kivy.core.text as core_text

    tight_class = core_text.Label
    full_class = tight_class.__mro__[1]
    assert full_class.render is not tight_class.render
    tight, full = tight_class(**options), full_class(**options)
    tight.refresh()
    full.refresh()
    return tight, full


def _columns(texture: Any, start: int, width: int) -> bytes:
    """The RGBA bytes of ``width`` columns of ``texture`` from column ``start``, row by row."""
    rows = []
    pixels = texture.pixels
    stride = texture.width * 4
    for row in range(texture.height):
        offset = row * stride + start * 4
        rows.append(pixels[offset : offset + width * 4])
    return b"".join(rows)


@pytest.mark.parametrize("halign", ["center", "left"])
def test_a_wrapped_line_keeps_every_pixel_on_a_narrower_texture(kiosk: Kiosk, halign: str):
    from kiosk.boot import TIGHT_LEFT

    options = {"text": TEXT, "font_size": 40, "text_size": (BOX, None), "halign": halign}
    tight, full = _core_pair(**options)
    if halign == "left":
        # left-aligned text is narrowed only for a widget that draws it at the box's left
        assert tight.texture.size == full.texture.size
        setattr(tight, TIGHT_LEFT, True)
        tight.refresh()
    assert full.texture.width == BOX
    assert tight.texture.height == full.texture.height
    line = max(line.w for line in tight._cached_lines)
    assert line <= tight.texture.width <= line + 5
    # the narrow texture is the full one's columns where the text is: nothing cut off,
    # and drawn centred (or at the box's left) the text lands on the same pixels
    start = (BOX - tight.texture.width) // 2 if halign == "center" else 0
    assert _columns(full.texture, start, tight.texture.width) == _columns(
        tight.texture, 0, tight.texture.width
    )
    # and outside those columns the full texture held nothing
    assert set(_columns(full.texture, 0, start)) <= {0}
    end = start + tight.texture.width
    assert set(_columns(full.texture, end, BOX - end)) <= {0}


def test_markup_and_unwrapped_text_keep_kivys_texture(kiosk: Kiosk):
    from kivy.uix.label import Label

    marked = Label(text="[b]积分[/b] 100", markup=True, text_size=(BOX, None), halign="center")
    marked.texture_update()
    assert marked.texture_size[0] == BOX
    plain = Label(text=TEXT, font_size=40)
    plain.texture_update()
    assert plain.texture_size[0] == max(line.w for line in plain._label._cached_lines)


def test_the_attract_screen_draws_its_text_on_narrow_textures_where_kivy_would(kiosk: Kiosk):
    from kivy.core.window import Window
    from kivy.graphics import Rectangle
    from kivy.uix.label import Label

    from kiosk.screens.base import KLabel

    def wrapped_labels() -> list[Any] | None:
        found, stack = [], list(Window.children)
        while stack:
            widget = stack.pop()
            stack.extend(widget.children)
            if isinstance(widget, Label) and widget.text and widget.text_size[0]:
                found.append(widget)
        return found if found and all(w.texture is not None for w in found) else None

    labels = kiosk.wait_for(wrapped_labels, what="the attract screen's text drawn")
    kiosk.pump(0.1)
    narrowed = 0
    for label in labels:
        box = int(label.text_size[0])
        width = label.texture_size[0]
        narrowed += width < box
        drawn = [i for i in label.canvas.children if isinstance(i, Rectangle)]
        (rect,) = [i for i in drawn if i.texture is label.texture]
        if label.halign == "left" and isinstance(label, KLabel):
            # at the left of the text box, as Kivy draws a texture of the box's width
            assert rect.pos[0] == int(label.center_x - box / 2), label.text
        else:
            assert rect.pos[0] == int(label.center_x - width / 2), label.text
        assert tuple(rect.size) == tuple(label.texture_size)
    # every heading, line and button of the attract screen is narrower than its box
    assert narrowed == len(labels) > 10


def test_a_label_whose_text_is_emptied_lets_go_of_its_texture(kiosk: Kiosk):
    from kivy.uix.label import Label

    label = Label(text=TEXT, font_size=40)
    label.texture_update()
    assert label.texture is not None and label._label.texture is label.texture
    label.text = ""
    label.texture_update()
    # Kivy itself would keep the last texture with the core label until the next text
    assert label.texture is None and label._label.texture is None
    label.text = TEXT
    label.texture_update()
    assert label.texture is not None and label.texture_size[0] > 0
