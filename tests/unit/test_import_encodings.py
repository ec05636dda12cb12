"""Spreadsheets saved by Chinese Excel: UTF-8 with or without a byte-order mark, UTF-16
"Unicode text" (tab-separated), GBK/GB18030 and Big5, told apart by services.encodings;
CJK punctuation around titles trimmed; duplicates found after NFKC normalisation.

No app context is pushed: Flask-Babel answers in English outside one."""
from __future__ import annotations

import pytest

from webapp.services import encodings, imports
from webapp.services.validation import Errors, clean_title, parse_titles, title_key

LIMITS = {"max_bytes": 1024 * 1024, "max_rows": 1000, "max_title_length": 200}

SIMPLIFIED = ["春季新品发布会", "北京地铁延长运营时间", "如何在家做一杯好咖啡",
              "人工智能改变医疗行业", "2024年房价走势分析", "夏日旅游攻略：海边小镇",
              "儿童教育的十个误区", "熊猫宝宝首次亮相", "深圳科技园区扩建", "秋冬护肤指南",
              "云南普洱茶的故事", "足球世界杯预选赛前瞻"]
TRADITIONAL = ["春季新品發佈會", "台北捷運延長營運時間", "如何在家做一杯好咖啡",
               "人工智慧改變醫療產業", "2024年房價走勢分析", "夏日旅遊攻略：海邊小鎮",
               "兒童教育的十個誤區", "熊貓寶寶首次亮相", "高雄科技園區擴建", "秋冬護膚指南",
               "阿里山烏龍茶的故事", "棒球經典賽前瞻"]


def parse(data: bytes, filename: str = "titles.csv", **kwargs) -> imports.Preflight:
    return imports.parse_file(filename, data, **LIMITS, **kwargs)


def csv_text(titles, header="title,keywords", row="{},kw") -> str:
    return "\n".join([header] + [row.format(t) for t in titles]) + "\n"


@pytest.mark.parametrize("data, titles, read_as", [
    (csv_text(SIMPLIFIED).encode("utf-8"), SIMPLIFIED, "Read as UTF-8 (comma-separated)."),
    (csv_text(TRADITIONAL).encode("utf-8-sig"), TRADITIONAL, "Read as UTF-8 (comma-separated)."),
    # Excel's "Unicode text": UTF-16 LE with a byte-order mark, tabs, CRLF.
    (csv_text(TRADITIONAL, "title\tkeywords", "{}\t關鍵字").replace("\n", "\r\n").encode("utf-16"),
     TRADITIONAL, "Read as UTF-16 (tab-separated)."),
    (csv_text(SIMPLIFIED).encode("gbk"), SIMPLIFIED, "Read as GB18030 (comma-separated)."),
    (csv_text(SIMPLIFIED + ["表情符号😀"]).encode("gb18030"), SIMPLIFIED + ["表情符号😀"],
     "Read as GB18030 (comma-separated)."),
    (csv_text(TRADITIONAL, "title;keywords", "{};kw").encode("big5"), TRADITIONAL,
     "Read as Big5 (semicolon-separated)."),
], ids=["utf-8", "utf-8-bom", "utf-16-excel", "gbk", "gb18030", "big5"])
def test_each_encoding_is_read_with_the_right_titles(data, titles, read_as):
    pre = parse(data)
    assert pre.ok, (pre.file_error, pre.row_errors)
    assert [row.title for row in pre.rows] == titles
    assert pre.read_as == read_as and not pre.unsure
    assert not pre.text.startswith("\ufeff")  # the text carried to the confirm step


@pytest.mark.parametrize("title", SIMPLIFIED)
def test_one_short_simplified_title_in_gbk_is_not_taken_for_big5(title):
    pre = parse(f"title\n{title}\n".encode("gbk"))
    assert [row.title for row in pre.rows] == [title]
    assert pre.read_as == "Read as GB18030." and not pre.unsure


@pytest.mark.parametrize("title", TRADITIONAL)
def test_one_short_traditional_title_in_big5_is_not_taken_for_gb18030(title):
    # GB18030 decodes these bytes too, into rare characters and private-use code points.
    data = f"title\n{title}\n".encode("big5")
    assert data.decode("gb18030") != f"title\n{title}\n"
    pre = parse(data)
    assert [row.title for row in pre.rows] == [title]
    assert pre.read_as == "Read as Big5." and not pre.unsure


def test_a_wrong_reading_scores_low():
    for title in TRADITIONAL:
        wrong = title.encode("big5").decode("gb18030", "replace")
        assert encodings.chinese_score(wrong) < encodings.SURE_SCORE
        assert encodings.chinese_score(title) >= encodings.SURE_SCORE


def test_an_unsure_guess_says_so_and_offers_the_choice():
    # Windows-1252 French: not UTF-8, and GB18030 happens to decode it, into nonsense.
    pre = parse("title\nCrème brûlée\n".encode("cp1252"))
    assert pre.unsure
    assert pre.read_as.startswith("Read as GB18030 — not sure")
    assert "choose the file's encoding" in pre.read_as
    # Chosen by the person, it is read so, and not "unsure".
    pre = parse("title\nCrème brûlée\n".encode("cp1252"), encoding="gb18030")
    assert not pre.unsure and pre.read_as == "Read as GB18030."


def test_too_few_characters_to_tell_is_unsure():
    # 鑰匙 in Big5 is 芲巴 in GBK, and 巴 is a common character: two are not enough to tell.
    data = "title\n鑰匙\n".encode("big5")
    pre = parse(data)
    assert pre.unsure and pre.read_as.startswith("Read as GB18030 — not sure")
    pre = parse(data, encoding="big5")
    assert [row.title for row in pre.rows] == ["鑰匙"] and not pre.unsure


def test_a_chosen_encoding_is_used_as_chosen():
    data = csv_text(["經濟成長"]).encode("big5")
    pre = parse(data, encoding="big5")
    assert [row.title for row in pre.rows] == ["經濟成長"]
    assert pre.read_as == "Read as Big5 (comma-separated)."
    # UTF-16 without a byte-order mark is read as Windows writes it, little-endian.
    pre = parse("title\n經濟成長\n".encode("utf-16-le"), encoding="utf-16")
    assert [row.title for row in pre.rows] == ["經濟成長"]


def test_a_file_that_cannot_be_read_in_the_chosen_encoding_names_the_byte_and_line():
    data = "title\nfine\n經濟\n".encode("big5")
    pre = parse(data, encoding="utf-8")
    assert pre.file_error == ("The file cannot be read as UTF-8: byte 12 (line 3) is not UTF-8 "
                              "text.")
    assert parse(data, encoding="latin-1").file_error == "Choose the file's encoding from the list."


def test_a_file_in_no_known_encoding_names_the_byte_and_line():
    pre = parse("title\nCafé society\n".encode("latin-1"))
    assert pre.file_error == ("The file is not UTF-8, UTF-16, GB18030 or Big5 text: byte 10 "
                              "(line 2) is not UTF-8. Save it as “CSV UTF-8” and try again.")
    assert not pre.rows and not pre.read_as


def test_binary_and_empty_files_are_still_refused():
    assert parse(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR").file_error == \
        "This is a binary file, not CSV or JSON text."
    assert parse("title\nA\x00B\n".encode("utf-16")).file_error == \
        "This is a binary file, not CSV or JSON text."
    assert parse("  \n".encode("utf-16")).file_error == "The file is empty."


def test_the_delimiter_comes_from_the_header_line():
    # Commas in titles do not outvote the header's tabs.
    pre = parse("title\tnotes\nRain, wind, then sun\tcheck\n".encode())
    assert [row.title for row in pre.rows] == ["Rain, wind, then sun"]
    assert pre.read_as == "Read as UTF-8 (tab-separated)."
    # One column: each line is one title, an unquoted comma included.
    pre = parse("title\n雨，然后晴, then sun\n".encode("utf-16"))
    assert [row.title for row in pre.rows] == ["雨，然后晴, then sun"]
    assert pre.read_as == "Read as UTF-16."


def test_json_is_read_in_any_encoding_too():
    pre = parse('[{"title": "經濟成長"}]'.encode("utf-16"), filename="rows.json")
    assert [row.title for row in pre.rows] == ["經濟成長"] and pre.read_as == "Read as UTF-16."


# -- titles --------------------------------------------------------------------------------------

@pytest.mark.parametrize("raw, clean", [
    ("\u3000春季新品发布会\u3000", "春季新品发布会"),
    ("春季新品发布会，", "春季新品发布会"),
    ("、。；：春季新品发布会。", "春季新品发布会"),
    ("「經濟成長」", "經濟成長"),
    ("　『經濟成長』，", "經濟成長"),
    ("“咖啡的故事”。", "咖啡的故事"),
    ("“甲”与“乙”", "“甲”与“乙”"),  # the quotes do not wrap the whole title
    ("《三体》", "《三体》"),  # a book's title marks
    ("为什么？", "为什么？"),
    ("Q&A: tides.", "Q&A: tides."),  # ASCII punctuation is the person's
    ("「」", "「」"),
    ("，。", ""),
])
def test_cjk_spaces_punctuation_and_wrapping_quotes_are_trimmed(raw, clean):
    assert clean_title(raw) == clean


def test_trimmed_titles_in_an_import():
    pre = parse("title\n\u3000「經濟成長」，\n咖啡。\n".encode("big5"))
    assert [row.title for row in pre.rows] == ["經濟成長", "咖啡"]
    pre = parse("title\n　，\n".encode("utf-8"))
    assert pre.row_errors == [(2, "title is empty")]


def test_duplicates_are_found_after_nfkc_normalisation():
    assert title_key("ＡＢＣ") == title_key("abc") == title_key("ABC")
    assert title_key("第１２期") == title_key("第12期")
    assert title_key("Tides  and\u3000harbours") == title_key("tides and harbours")
    assert title_key("經濟") != title_key("经济")  # Traditional and Simplified stay apart
    pre = parse("title\nＡＢＣ 新闻\nabc  新闻\n第１期\n第1期\n".encode("gbk"))
    assert pre.row_errors == [(3, "duplicate title (same as row 2)"),
                              (5, "duplicate title (same as row 4)")]
    pre = parse("title\nＡＢＣ 新闻\n第１期\n".encode("gbk"))
    # The stored title keeps the person's own characters.
    assert [row.title for row in pre.rows] == ["ＡＢＣ 新闻", "第１期"]


def test_typed_titles_are_trimmed_and_compared_the_same_way():
    errors = Errors()
    titles = parse_titles("「經濟成長」\n\u3000ＡＢＣ，\nabc\n", 10, 200, errors)
    assert titles == ["經濟成長", "ＡＢＣ", "abc"]
    assert errors.fields["titles"] == ["Duplicate titles: “abc” (lines 2 and 3)."]
