"""Every text the console shows has its Chinese, with the same placeholders."""

from __future__ import annotations

from hq.web import i18n


def test_every_text_of_the_console_is_translated() -> None:
    table = i18n.chinese()
    missing = sorted(t for t in i18n.texts() if not table.get(t))
    assert missing == [], "run python -m hq.web.i18n and translate: " + ", ".join(missing)


def test_the_language_follows_the_switch_then_the_browser() -> None:
    assert i18n.pick("en", "zh-CN") == "en"
    assert i18n.pick(None, "en-GB,en;q=0.8") == "en"
    assert i18n.pick(None, "zh-CN,zh") == "zh"
    assert i18n.pick("fr", None) == "zh"
    assert i18n.translator("zh")("Fleet") == "设备总览"
    assert i18n.translator("en")("Fleet") == "Fleet"
