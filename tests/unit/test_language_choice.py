"""Which interface language a tag or an Accept-Language header asks for (webapp/i18n.py)."""
from __future__ import annotations

import pytest

from webapp.i18n import from_accept_language, from_tag, tag_of


@pytest.mark.parametrize("tag, locale", [
    ("zh-CN", "zh_Hans"), ("zh-SG", "zh_Hans"), ("zh-Hans", "zh_Hans"), ("zh-Hans-CN", "zh_Hans"),
    ("zh", "zh_Hans"), ("ZH_cn", "zh_Hans"),
    ("zh-TW", "zh_Hant"), ("zh-HK", "zh_Hant"), ("zh-MO", "zh_Hant"), ("zh-Hant", "zh_Hant"),
    ("zh-Hant-TW", "zh_Hant"), ("zh-hk", "zh_Hant"),
    # The script wins over the region: Simplified as written in Hong Kong is Simplified.
    ("zh-Hans-HK", "zh_Hans"), ("zh-Hant-CN", "zh_Hant"),
    ("en", "en"), ("en-GB", "en"),
    ("fr", None), ("", None), (None, None), ("zhx", None), ("de-CH", None),
])
def test_a_tag_names_one_of_our_locales(tag, locale):
    assert from_tag(tag) == locale


@pytest.mark.parametrize("header, locale", [
    ("zh-TW,zh;q=0.9,en;q=0.8", "zh_Hant"),
    ("en-US,en;q=0.9,zh-CN;q=0.8", "en"),
    ("fr-FR,fr;q=0.9,zh-CN;q=0.5", "zh_Hans"),   # the first one we speak, by quality
    ("en;q=0.2, zh-HK;q=0.7", "zh_Hant"),          # quality, not order, decides
    ("zh-CN;q=0, en;q=0.1", "en"),                 # q=0 means "not this"
    ("fr, de", None),
    ("", None),
    ("zh-Hant;q=abc, zh-SG", "zh_Hans"),           # an unreadable quality counts as 0
])
def test_accept_language_picks_by_quality(header, locale):
    assert from_accept_language(header) == locale


def test_html_lang_tags():
    assert [tag_of(x) for x in ("en", "zh_Hans", "zh_Hant", "xx")] == [
        "en", "zh-Hans", "zh-Hant", "en"]
