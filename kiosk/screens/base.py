"""Widgets every screen uses, and the screen base classes (a view-model each, panels by stage)."""

from __future__ import annotations

import gc
from collections.abc import Callable
from typing import Any, ClassVar

from kivy.clock import Clock
from kivy.factory import Factory
from kivy.graphics import Color, InstructionGroup, Line
from kivy.lang import Builder
from kivy.properties import BooleanProperty, ColorProperty, ObjectProperty, StringProperty
from kivy.uix.behaviors import ButtonBehavior
from kivy.uix.boxlayout import BoxLayout
from kivy.uix.button import Button
from kivy.uix.gridlayout import GridLayout
from kivy.uix.label import Label
from kivy.uix.screenmanager import Screen
from kivy.uix.widget import Widget

from kiosk.boot import TIGHT_LEFT


class KButton(Button):  # type: ignore[misc]
    """A large touch target; ``tid`` names it for tests and the demo tour.

    In high contrast (``outlined``, bound to the app's large-text switch in widgets.kv) it
    has an outline. The outline's instructions are on the canvas only then: the GL driver
    keeps about 64 kB for every vertex instruction drawn, a transparent line or one with
    no points included.
    """

    tid = StringProperty("")
    vm = ObjectProperty(None, rebind=True)
    kind = StringProperty("primary")  # primary, secondary, danger, quiet
    outlined = BooleanProperty(False)
    outline_color = ColorProperty((1, 1, 1, 1))

    def __init__(self, **kwargs: Any) -> None:
        self._outline: tuple[InstructionGroup, Color, Line] | None = None
        super().__init__(**kwargs)

    def on_outlined(self, _instance: Any, outlined: bool) -> None:
        if outlined and self._outline is None:
            colour, line = Color(rgba=self.outline_color), Line(width=1.5)
            group = InstructionGroup()
            group.add(colour)
            group.add(line)
            self.canvas.after.add(group)
            self._outline = (group, colour, line)
            self.fbind("pos", self._place_outline)
            self.fbind("size", self._place_outline)
            self._place_outline()
        elif not outlined and self._outline is not None:
            self.funbind("pos", self._place_outline)
            self.funbind("size", self._place_outline)
            self.canvas.after.remove(self._outline[0])
            self._outline = None

    def on_outline_color(self, _instance: Any, rgba: Any) -> None:
        if self._outline is not None:
            self._outline[1].rgba = rgba

    def _place_outline(self, *_args: Any) -> None:
        if self._outline is not None:
            self._outline[2].rectangle = (self.x, self.y, self.width, self.height)


class KLabel(Label):  # type: ignore[misc]
    """Text that wraps to its width and grows to its text's height.

    Its rule (widgets.kv) draws left-aligned text at the left of its text box, so that text
    is drawn on a texture only as wide as its longest line (:func:`kiosk.boot.tight_size`).
    """

    tid = StringProperty("")

    def _create_label(self) -> None:
        super()._create_label()
        setattr(self._label, TIGHT_LEFT, True)


class Notice(Label):  # type: ignore[misc]
    """The view-model's notice, translated (the kv rule is in widgets.kv)."""

    vm = ObjectProperty(None, rebind=True)


class Panel(BoxLayout):  # type: ignore[misc]
    """A part of a screen over the screen's view-model, and the row data it shows.

    The properties rebind: kv rules such as ``root.vm.phone`` follow a view-model (or a
    row's data) set after the panel was built.
    """

    vm = ObjectProperty(None, rebind=True)
    tile = ObjectProperty(None, rebind=True)
    status = ObjectProperty(None, rebind=True)
    line = ObjectProperty(None, rebind=True)


class PanelGrid(GridLayout):  # type: ignore[misc]
    vm = ObjectProperty(None, rebind=True)


class TileButton(ButtonBehavior, Panel):  # type: ignore[misc]
    state_code = StringProperty("ok")


class Keypad(GridLayout):  # type: ignore[misc]
    """A large numeric keypad: digits, back and OK; ``on_key`` fires with the key."""

    ok_text = StringProperty("OK")

    __events__ = ("on_key",)

    def on_key(self, key: str) -> None:
        pass


class HoldArea(Label):  # type: ignore[misc]
    """Fires ``on_hold`` when held for ``hold_s`` (the technician's hidden gesture)."""

    hold_s = ObjectProperty(3.0)

    __events__ = ("on_hold",)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._timer: Any = None

    def on_touch_down(self, touch: Any) -> bool:
        if self.collide_point(*touch.pos):
            touch.grab(self)
            self._timer = Clock.schedule_once(lambda _dt: self.dispatch("on_hold"), self.hold_s)
            return True
        return bool(super().on_touch_down(touch))

    def on_touch_up(self, touch: Any) -> bool:
        if touch.grab_current is self:
            touch.ungrab(self)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return True
        return bool(super().on_touch_up(touch))

    def on_hold(self) -> None:
        pass


def _collect(_dt: float) -> None:
    gc.collect()


# Kivy's widgets refer to each other in cycles, so widgets taken off the screen are freed by
# the cycle collector only. Left to its own schedule it runs a full collection seldom, and a
# customer's dropped panels and screens pile up meanwhile: the allocator then takes fresh
# memory for the next ones, and what a tour leaves behind in that memory keeps it with the
# process. So a collection runs a quarter of a second after widgets are dropped (the touch
# that dropped them, which refers to the button it pressed, has ended by then); with the
# start-up objects frozen (``edge.process.freeze_startup_objects``) it takes a few milliseconds.
# A second collection a second and a half later frees what was still referred to at the
# first (a loop slowed down by a busy machine can end the touch after the quarter second).
_collect_soon = Clock.create_trigger(_collect, 0.25)
_collect_again = Clock.create_trigger(_collect, 1.5)


def collect_soon() -> None:
    """Collects the widgets just dropped a quarter second from now, and once more later."""
    _collect_soon()
    _collect_again()


def clear(container: Widget) -> None:
    """Takes every child off ``container``; the collection that follows frees them."""
    if container.children:
        container.clear_widgets()
        collect_soon()


def make(name: str, **props: Any) -> Widget:
    """A kv-declared widget with its properties set (kv classes take no constructor kwargs)."""
    widget: Widget = getattr(Factory, name)()
    for key, value in props.items():
        setattr(widget, key, value)
    return widget


class KioskScreen(Screen):  # type: ignore[misc]
    """A screen over one view-model; ``entered`` is called each time it is shown.

    A screen listens to the app and its view-model through :meth:`listen`, so that
    :meth:`release` can take every such callback back: a view-model outlives the screens
    built over it, and a callback left bound would keep a released screen's widgets alive.
    """

    vm = ObjectProperty(None, rebind=True)
    app = ObjectProperty(None)
    title = StringProperty("")

    def __init__(self, **kwargs: Any) -> None:
        self._listening: list[tuple[Any, str, Callable[..., Any]]] = []
        super().__init__(**kwargs)

    def listen(self, dispatcher: Any, **callbacks: Callable[..., Any]) -> None:
        """Binds ``callbacks`` to ``dispatcher``'s properties or events until :meth:`release`."""
        for name, callback in callbacks.items():
            dispatcher.fbind(name, callback)
            self._listening.append((dispatcher, name, callback))

    def release(self) -> None:
        """Makes the screen inert before it is dropped; it is not shown again.

        Unbinds what :meth:`listen` bound and every kv rule of its widgets: a rule such as
        ``app.session.member`` is bound to the app, and would still run (and find its screen
        gone) for as long as the widgets wait for the cycle collector.
        """
        for dispatcher, name, callback in self._listening:
            dispatcher.funbind(name, callback)
        self._listening.clear()
        for widget in list(self.walk(restrict=True)):
            Builder.unbind_widget(widget.uid)
        collect_soon()

    def entered(self) -> None:
        pass


class StagedScreen(KioskScreen):
    """A screen whose body shows one panel per stage of its view-model.

    Only the current panel is in the widget tree: hidden widgets would still catch touches.
    """

    stage_property = "stage"
    panels: ClassVar[dict[str, str]] = {}

    def on_vm(self, _instance: Any, vm: Any) -> None:
        self.listen(vm, **{self.stage_property: lambda *_a: self.show_stage()})
        Clock.schedule_once(lambda _dt: self.show_stage(), 0)

    def show_stage(self) -> None:
        body = self.ids.get("body")
        if body is None or self.vm is None:
            return
        stage = getattr(self.vm, self.stage_property)
        name = self.panels.get(stage)
        current = body.children[0] if body.children else None
        if current is not None and getattr(current, "panel_name", None) == name:
            return
        clear(body)
        if name:
            panel = make(name, vm=self.vm)
            panel.panel_name = name
            body.add_widget(panel)


def _register() -> None:
    for cls in (KButton, KLabel, Keypad, HoldArea, Notice, Panel, PanelGrid, TileButton):
        Factory.register(cls.__name__, cls=cls)


_register()
