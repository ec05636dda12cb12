"""An article's length, in the unit its language is counted in: words, or characters for
Chinese and Japanese.

Chinese and Japanese leave no spaces between words, so `len(text.split())` counts an
840-character paragraph as one word; their writers and editors count characters (字)
instead. The rule, in one place for the worker, the pages, the API and the exports:

- The unit is characters when the language asked for is Chinese or Japanese
  (unit_for_language), or when the text itself is Chinese or Japanese: its CJK characters
  outnumber its other words, so an English batch answered in Chinese is still counted in
  characters. Otherwise it is words.
- Words are the whitespace-separated pieces, as Pressroom always counted them.
- Characters: each Han character and each kana counts one; each run of other letters or
  digits ("iPhone", "2024", "don't", an English word in a Chinese batch) counts one, as
  Word's 字数 does; punctuation, symbols, Markdown marks and spaces count nothing.

A target length (a batch's or row's `words`) is in the unit of its language. Pure code,
cheap enough for the worker's live count (one regular-expression pass over the text).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

WORDS = "words"
CHARACTERS = "characters"
UNITS = (WORDS, CHARACTERS)

# Reading speeds of an average adult: words a minute, and characters a minute for Chinese
# and Japanese.
READING_PER_MINUTE = {WORDS: 230, CHARACTERS: 400}

# Han characters (the main block, extension A, compatibility ideographs and the
# supplementary-plane extensions), hiragana and katakana (half-width too), and the
# iteration and closing marks 々 〆 〇 〻. Not the ideographic punctuation (、。・「」).
_CJK = re.compile("[\u3005-\u3007\u303b\u3041-\u3096\u309d-\u309f\u30a1-\u30fa\u30fc-\u30ff"
                  "\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\uff66-\uff9f"
                  "\U00020000-\U000323af]")
# A word of any other script: letters or digits, with inner apostrophes, hyphens or dots
# ("don't", "state-of-the-art", "3.14") kept as one.
_OTHER_WORD = re.compile(r"[^\W_]+(?:['’.\-][^\W_]+)*")

# How people name Chinese and Japanese: language codes (the first part of a tag such as
# zh-TW or ja_JP), and names in English or in the languages themselves.
_CODES = {"zh", "ja", "jp", "cmn", "yue"}
_NAMES = ("chinese", "mandarin", "cantonese", "japanese", "中文", "汉语", "漢語", "华语", "華語",
          "普通话", "普通話", "国语", "國語", "粤语", "粵語", "广东话", "廣東話", "日本語", "日语",
          "日語", "日文")


@dataclass(frozen=True)
class Length:
    count: int
    unit: str  # WORDS or CHARACTERS


def unit_for_language(language: Optional[str]) -> str:
    """The unit a target length in `language` is counted in, before any text exists."""
    name = (language or "").strip().lower()
    code = re.split(r"[-_\s(]", name, maxsplit=1)[0]
    if code in _CODES or any(n in name for n in _NAMES):
        return CHARACTERS
    return WORDS


def measure(text: str, language: Optional[str] = None) -> Length:
    """The length of `text`, written for a batch or row in `language` (see the module's
    rule); with no language, the text's own script decides."""
    rest, cjk = _CJK.subn(" ", text or "")
    by_language = unit_for_language(language)
    if not cjk and by_language == WORDS:  # the common case: no second pass
        return Length(len(text.split()) if text else 0, WORDS)
    others = len(_OTHER_WORD.findall(rest))
    if by_language == CHARACTERS or cjk > others:
        return Length(cjk + others, CHARACTERS)
    return Length(len(text.split()), WORDS)


def reading_minutes(count: int, unit: Optional[str]) -> int:
    """About how long a text of `count` in `unit` takes to read (0 for nothing)."""
    if not count:
        return 0
    return max(1, round(count / READING_PER_MINUTE.get(unit, READING_PER_MINUTE[WORDS])))


def is_short(length: Length, target: Optional[int]) -> bool:
    """Under half its target. The count is compared as it is, without converting between
    units: a target in words met by an answer counted in characters (or the other way)
    is a rare case, and only a hint for review."""
    return bool(target) and length.count * 2 < target
