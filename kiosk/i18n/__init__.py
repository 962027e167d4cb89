"""All screen text goes through one translator: gettext catalogues, Chinese by default.

In ``.kv`` rules text is written ``_("Scan your member code")``; the kv language binds any
rule that calls ``_`` to the translator, so switching the language re-evaluates every such
rule on every screen at once. Python code marks texts with :func:`N_` and translates them
when it shows them.
"""

from __future__ import annotations

import gettext
from pathlib import Path

from kivy.event import EventDispatcher
from kivy.properties import StringProperty

from kiosk.i18n.catalog import LANGUAGES, load_catalog


def N_(msgid: str) -> str:  # noqa: N802 - the gettext convention for "mark, translate later"
    """Marks ``msgid`` for the catalogues; it is translated where it is shown."""
    return msgid


class Translator(EventDispatcher):  # type: ignore[misc]
    """Translates with the catalogue of :attr:`language`.

    kv rules that call ``_(...)`` bind to a property called ``_`` on this object (that is how
    the kv language tracks translation); it mirrors :attr:`language`.
    """

    language = StringProperty("zh_CN")
    _ = StringProperty("zh_CN")

    def __init__(self, cache_dir: Path, language: str = "zh_CN") -> None:
        super().__init__()
        self._catalogs: dict[str, gettext.GNUTranslations] = {
            lang: load_catalog(lang, cache_dir) for lang in LANGUAGES
        }
        self.language = language

    def on_language(self, _instance: object, value: str) -> None:
        if value not in self._catalogs:
            raise ValueError(f"no catalogue for {value!r}")
        setattr(self, "_", value)  # noqa: B010 - the property is literally named "_"

    def __call__(self, msgid: str) -> str:
        return self._catalogs[self.language].gettext(msgid)

    def toggle(self) -> None:
        self.language = "en" if self.language == "zh_CN" else "zh_CN"


__all__ = ["LANGUAGES", "N_", "Translator"]
