"""Lengths that fit the language (webapp/generation/lengths.py): Chinese and Japanese in
characters, everything else in words; reading time in each unit; the "short" review flag
and its place after the other flags; the unit in the default prompt."""
from __future__ import annotations

import pytest

from webapp.generation import prompts
from webapp.generation.lengths import (CHARACTERS, WORDS, Length, measure, reading_minutes,
                                       unit_for_language)
from webapp.generation.provider import review_flag

SIMPLIFIED = "# 城市里的安静角落\n\n图书馆是读书的好地方。公园里也有很多长椅，适合阅读。"
TRADITIONAL = "# 城市裡的安靜角落\n\n圖書館是讀書的好地方。公園裡也有很多長椅，適合閱讀。"
JAPANESE = "# 街の静かな場所\n\n図書館は本を読むのに最適です。カフェもおすすめ！"


@pytest.mark.parametrize("language", [
    "Chinese", "chinese (simplified)", "中文", "简体中文", "繁體中文", "汉语", "zh", "zh-TW",
    "zh_Hans", "Japanese", "日本語", "ja", "ja-JP", "Cantonese"])
def test_chinese_and_japanese_targets_are_in_characters(language):
    assert unit_for_language(language) == CHARACTERS


@pytest.mark.parametrize("language", ["English", "en", "en-GB", "German", "Korean", "", None])
def test_other_targets_are_in_words(language):
    assert unit_for_language(language) == WORDS


def test_simplified_chinese_counts_each_character_not_punctuation_or_marks():
    # 8 in the heading, 10 + 9 + 4 in the paragraph; "#", "。" and "，" count nothing.
    assert measure(SIMPLIFIED, "Chinese") == Length(31, CHARACTERS)
    assert len(SIMPLIFIED.split()) == 3  # what counting words made of it


def test_traditional_chinese_counts_the_same():
    assert measure(TRADITIONAL, "繁體中文") == Length(31, CHARACTERS)


def test_japanese_counts_kanji_and_kana_including_the_long_vowel_mark():
    assert measure("ラーメン", "Japanese") == Length(4, CHARACTERS)
    # 7 in the heading, 14 + 8 in the paragraph; "。" and "！" count nothing.
    assert measure(JAPANESE, "日本語") == Length(29, CHARACTERS)


def test_latin_words_and_numbers_inside_chinese_count_one_each():
    text = "新款 iPhone 15 售价 999 美元，state-of-the-art 设计。"
    # 新款 售价 美元 设计 (8) + iPhone, 15, 999, state-of-the-art (4)
    assert measure(text, "zh-CN") == Length(12, CHARACTERS)


def test_english_is_counted_in_words_as_before():
    text = "# Quiet places\n\nThe city's libraries, parks and cafés — all open late."
    assert measure(text, "English") == Length(len(text.split()), WORDS)


def test_an_english_batch_answered_in_chinese_is_counted_in_characters():
    assert measure(SIMPLIFIED, "English") == Length(31, CHARACTERS)
    # With no language at all, the script decides too.
    assert measure(JAPANESE) == Length(29, CHARACTERS)


def test_a_few_chinese_words_in_english_text_leave_it_in_words():
    text = "The greeting 你好 means hello, and 谢谢 means thank you."
    assert measure(text, "English") == Length(len(text.split()), WORDS)


def test_a_chinese_batch_answered_in_english_counts_each_english_word_as_one():
    assert measure("Written in English after all.", "Chinese") == Length(5, CHARACTERS)


@pytest.mark.parametrize("language", ["English", "Chinese", None])
def test_empty_text_has_no_length(language):
    assert measure("", language).count == 0
    assert measure("  \n ", language).count == 0
    assert measure("", language).unit == unit_for_language(language)


def test_reading_time_in_each_unit():
    assert reading_minutes(0, WORDS) == 0
    assert reading_minutes(50, WORDS) == 1  # never "0 min" for a text
    assert reading_minutes(230 * 4, WORDS) == 4
    assert reading_minutes(400 * 3, CHARACTERS) == 3
    assert reading_minutes(1200, CHARACTERS) < reading_minutes(1200, WORDS)
    assert reading_minutes(460, None) == 2  # rows from before the unit: words


def _flag(text: str, language: str, target: int, finish: str = "stop", refusal: str = ""):
    return review_flag(refusal, text, finish, measure(text, language), target)


def test_a_chinese_answer_under_half_its_target_is_short():
    assert _flag("字" * 399, "Chinese", 800) == "short"
    assert _flag("字" * 400, "Chinese", 800) is None  # half exactly is not under half
    assert _flag("字" * 900, "中文", 800) is None


def test_an_english_answer_under_half_its_target_is_short():
    assert _flag("word " * 99, "English", 200) == "short"
    assert _flag("word " * 100, "English", 200) is None
    # The same 840 characters of Chinese are no "one word" answer to a 1,000 target.
    assert _flag("字" * 840, "English", 1000) is None


def test_short_comes_after_every_other_flag():
    tiny = "字" * 10
    assert _flag(tiny, "Chinese", 800, refusal="I can't help with that.") == "refused"
    assert _flag(tiny, "Chinese", 800, finish="length") == "length"
    assert _flag(tiny, "Chinese", 800, finish="content_filter") == "content_filter"
    assert _flag("  ", "Chinese", 800) == "empty"
    # Without a measured length or a target, no "short" (the old call).
    assert review_flag("", tiny, "stop") is None
    assert review_flag("", tiny, "stop", measure(tiny), None) is None


def test_the_default_prompt_names_the_unit():
    row = {"title": "安静的角落", "words": 800, "tone": "friendly"}
    chinese = prompts.build_prompt("", **row, language="简体中文").user_text
    assert "about 800 characters (字) with this title." in chinese
    english = prompts.build_prompt("", **row, language="English").user_text
    assert "about 800 words with this title." in english


def test_templates_may_use_the_unit_but_no_row_sets_it():
    assert "unit" in prompts.VARIABLES and "unit" not in prompts.ROW_VARIABLES
    assert prompts.check("{{ words }} {{ unit }}") is None
    text = prompts.render("{{ words }} {{ unit }}", {"words": 600, "language": "ja",
                                                     "unit": "words"})
    assert text == "600 characters"  # from the language, whatever a row says


def test_an_edit_and_a_restore_are_measured_in_the_article_language(db_app):
    import uuid

    from sqlalchemy import select

    from webapp.extensions import db
    from webapp.models import Article, ArticleStatus, ArticleVersion, Batch, Role, User
    from webapp.services import review

    user = User(email="lengths@example.test", password_hash="x", role=Role.EDITOR)
    db.session.add(user)
    db.session.flush()
    batch = Batch(user_id=user.id, name="中文", provider="offline", model="m", target_words=200,
                  tone="neutral", language="Chinese", status="succeeded")
    db.session.add(batch)
    db.session.flush()
    english = "# T\n\nA short English body."
    article = Article(batch_id=batch.id, position=1, title="T", status=ArticleStatus.SUCCEEDED,
                      task_id=str(uuid.uuid4()), body=english, words=5)
    db.session.add(article)
    db.session.flush()
    ArticleVersion.keep(article.id, english, "generated", None)
    db.session.commit()

    review.edit(user, article, "# 标题\n\n正文很短。")
    assert (article.words, article.length_unit) == (6, CHARACTERS)  # 标题 + 正文很短
    assert review.reading_minutes(article) == 1

    first = db.session.scalar(select(ArticleVersion.id).where(ArticleVersion.number == 1))
    review.restore(user, article, first)
    db.session.refresh(article)
    # Back to the English text, still counted as the batch's language counts: one a word.
    assert (article.body, article.words, article.length_unit) == (english, 5, CHARACTERS)
