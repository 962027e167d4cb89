"""Process settings applied before Kivy opens its window (Kivy reads its own only once).

Touch input comes from exactly one provider: two providers for one touchscreen (the SDL
window's synthesised mouse events plus ``hidinput``, say) deliver every touch twice.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import functools
import gc
import os
from pathlib import Path
from typing import Any

from edge.station.displays import parse_size

# glibc's mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def input_providers(
    provider: str,
    device: str,
    rotation: int = 0,
    invert_x: bool = False,
    invert_y: bool = False,
) -> dict[str, str]:
    """The ``[input]`` section: one entry, for the configured provider, with how the touch
    panel is mounted (rotated, an axis reversed) for the providers that read it raw."""
    if provider == "mouse":
        # SDL turns touches into mouse events; no red multitouch-emulation dots
        return {"mouse": "mouse,disable_multitouch"}
    mount = [
        f"{name}={value}"
        for name, value, given in (
            ("rotation", rotation, rotation != 0),
            ("invert_x", 1, invert_x),
            ("invert_y", 1, invert_y),
        )
        if given
    ]
    if provider == "probesysfs":
        # probesysfs hands each param=... to the hidinput provider it makes for the device
        return {"touch": ",".join(["probesysfs,provider=hidinput,select_all=0"]
                                  + [f"param={m}" for m in mount])}  # fmt: skip
    if not device:
        raise ValueError(f"the {provider} provider needs ui.touch_device (e.g. /dev/input/event0)")
    return {"touch": ",".join([provider, device, *mount])}


def window_size(text: str) -> tuple[int, int]:
    """``--size WxH`` for argparse: the size, or a one-line error saying what is wrong."""
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def tune_allocator() -> bool:
    """Makes glibc's allocator give freed memory back instead of keeping it for later.

    The app's slow work runs on short-lived threads, and glibc gives threads arenas of their
    own that keep what they freed. A staff sign-in's scrypt needs 16 MB; with glibc's
    default, the mmap threshold climbs after the first such block is freed, so the next ones
    come from an arena and stay resident. Two arenas, a fixed 256 kB mmap threshold and a
    1 MB trim threshold keep the resident set near what is really in use (about 40 MB less
    after the full tour). Returns False where the C library is not glibc.
    """
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    return all(
        mallopt(param, value) == 1
        for param, value in (
            (M_ARENA_MAX, 2),
            (M_MMAP_THRESHOLD, 256 * 1024),
            (M_TRIM_THRESHOLD, 1024 * 1024),
        )
    )


def give_back_memory() -> None:
    """Collects unreachable objects and returns the C heap's free pages to the system.

    Kivy's widgets reference each other in cycles, so a released screen is only freed by
    the cycle collector; glibc then keeps the freed pages (in the middle of its heap, where
    the trim threshold does not reach) until ``malloc_trim`` hands them back.
    """
    gc.collect()
    trim = _libc_function("malloc_trim")
    if trim is not None:
        trim(0)


def drop_text_surfaces() -> None:
    """Makes text cost only the pixels it covers: labels let go of their drawing surface, and
    a wrapped label's texture is only as wide as its longest line.

    Kivy's SDL2 text provider draws a label's text on an SDL surface, copies it into the
    label's texture, and keeps the surface for as long as the label lives: every label on
    screen held its text's pixels twice (a full-width line of large text, about 230 kB).

    A label wrapped to a width (``text_size``) gets a texture of that whole width from Kivy,
    however short its text: on a 1080 px wide portrait screen a two-character button or a
    short line is a 1000 px wide texture, mostly transparent (the attract screen's text was
    2.9 MB of textures, 1.3 MB of it text). Centred text is drawn on a texture as wide as its
    longest line instead, which the label draws centred just the same; left-aligned text too
    for labels whose rule places the texture at the left of their text box
    (:data:`TIGHT_LEFT`, set by :class:`kiosk.screens.base.KLabel`). Markup labels keep
    Kivy's layout (their references are placed on the whole width).

    A label whose text is emptied (a notice cleared, the idle warning gone) shows nothing,
    but Kivy keeps its last texture with it until the next text: it is let go too.

    Call after :func:`configure_kivy`; labels made afterwards use the providers below.
    """
    import kivy.core.text as core_text
    import kivy.core.text.markup as core_markup
    import kivy.uix.label as uix_label

    if getattr(uix_label.CoreLabel, "drops_surface", False):
        return

    def surface_free(provider: type) -> type:
        class SurfaceFree(provider):  # type: ignore[misc]
            drops_surface = True

            def _render_end(self) -> Any:
                data = super()._render_end()
                self._surface = None
                return data

        SurfaceFree.__name__ = SurfaceFree.__qualname__ = f"SurfaceFree{provider.__name__}"
        return SurfaceFree

    class TightText(surface_free(core_text.Label)):  # type: ignore[misc]
        def render(self, real: bool = False) -> Any:
            size = super().render(real)
            return size if real else tight_size(self, size)

    TightText.__name__ = TightText.__qualname__ = "TightText"
    core_text.Label = core_text.Text = uix_label.CoreLabel = TightText
    # markup labels subclass the provider Kivy chose; the label widget makes them from its own
    # name for the class (markup's module keeps its name: its methods call super() by it)
    uix_label.CoreMarkupLabel = surface_free(core_markup.MarkupLabel)

    kivy_update = uix_label.Label.texture_update

    def texture_update(self: Any, *args: Any) -> None:
        kivy_update(self, *args)
        if self.texture is None:  # no text: Kivy leaves the core label its last texture
            self._label.texture = None

    # labels bind their update when made: those made afterwards use this one
    uix_label.Label.texture_update = texture_update


# Set on a core label whose widget draws its texture at the left of its text box (not
# centred, as Kivy's own label rule does): its left-aligned text may be cropped too.
TIGHT_LEFT = "tight_left"
# transparent columns kept either side of the longest line
TIGHT_MARGIN_PX = 2


def tight_size(label: Any, size: tuple[int, int]) -> tuple[int, int]:
    """The texture size for ``label`` (a core label just laid out by ``render``): ``size``,
    Kivy's, narrowed to the longest line where the text is wrapped to a width and the
    texture is drawn centred, or at the left of the text box for left-aligned text."""
    width, height = size
    wrap_width = label.text_size[0]
    halign = label.options["halign"]
    lines = getattr(label, "_cached_lines", None)
    if not wrap_width or not lines or width <= 1 or height <= 1:
        return size
    if halign != "center" and not (halign == "left" and getattr(label, TIGHT_LEFT, False)):
        return size
    padding = label.options["padding"]
    widest = max(line.w for line in lines)
    tight = int(widest + padding[0] + padding[2]) + 2 * TIGHT_MARGIN_PX
    # an even difference keeps centred text on the same pixel column
    tight += (width - tight) % 2
    return (tight, height) if tight < width else size


@functools.cache  # find_library runs ``ldconfig -p``: once per process is enough
def _libc_function(name: str) -> Any:
    path = ctypes.util.find_library("c")
    try:
        return getattr(ctypes.CDLL(path), name) if path else None
    except (OSError, AttributeError):
        return None


def configure_kivy(
    *,
    kivy_home: Path,
    provider: str,
    device: str = "",
    fullscreen: bool,
    size: tuple[int, int],
    rotation: int = 0,
    touch_rotation: int = 0,
    touch_invert_x: bool = False,
    touch_invert_y: bool = False,
) -> None:
    """Sets Kivy's environment and config; call before anything imports ``kivy.core``.

    ``rotation`` turns what is drawn (a monitor mounted on its side); the touch panel's own
    mounting is given apart, as the two are often mounted differently."""
    os.environ["KIVY_NO_ARGS"] = "1"
    os.environ["KIVY_NO_CONSOLELOG"] = "1"
    os.environ["KIVY_NO_CONFIG"] = "1"
    os.environ["KIVY_NO_FILELOG"] = "1"
    os.environ.setdefault("KIVY_LOG_MODE", "PYTHON")
    # the screens draw no image files: SDL2 reads and writes PNG (screenshots), so Kivy's
    # Pillow provider, and with it Pillow and NumPy, stay out of the process
    os.environ["KIVY_IMAGE"] = "sdl2,tex"
    kivy_home.mkdir(parents=True, exist_ok=True)
    os.environ["KIVY_HOME"] = str(kivy_home)
    from kivy.config import Config

    Config.set("kivy", "exit_on_escape", "0")
    Config.set("kivy", "keyboard_mode", "system")
    Config.set("kivy", "log_enable", "0")
    Config.set("graphics", "fullscreen", "auto" if fullscreen else "0")
    Config.set("graphics", "borderless", "1" if fullscreen else "0")
    Config.set("graphics", "resizable", "0" if fullscreen else "1")
    Config.set("graphics", "width", str(size[0]))
    Config.set("graphics", "height", str(size[1]))
    Config.set("graphics", "rotation", str(rotation))
    Config.set("graphics", "multisamples", "0")
    Config.set("graphics", "show_cursor", "1" if provider == "mouse" else "0")
    for name in list(Config.options("input")):
        Config.remove_option("input", name)
    touch = input_providers(provider, device, touch_rotation, touch_invert_x, touch_invert_y)
    for name, value in touch.items():
        Config.set("input", name, value)
