"""Exports that open right for Chinese users: file names in the zip keep Chinese titles (and
stay safe), the download's name goes in RFC 5987's filename*, and the CSV starts with a
UTF-8 byte-order mark so that Excel reads it as UTF-8."""
from __future__ import annotations

import io
import re
import zipfile
from datetime import datetime
from types import SimpleNamespace
from urllib.parse import unquote

import pytest
from werkzeug.http import parse_options_header

from webapp.services import exports

CREATED = datetime(2026, 3, 4, 5, 6, 7)


def article(position: int, title: str, id: int = 0) -> SimpleNamespace:
    return SimpleNamespace(id=id or 100 + position, position=position, title=title)


def names(titles, total=None) -> list[str]:
    rows = [article(n, t) for n, t in enumerate(titles, 1)]
    return [name for name, _ in exports.zip_names(iter(rows), total or len(rows))]


@pytest.mark.parametrize("title, name", [
    ("春季新品發佈會", "春季新品發佈會"),
    ("2024年房价走势分析：上海", "2024年房价走势分析-上海"),
    ("Café Ünïcode — Ελληνικά", "Café-Ünïcode-Ελληνικά"),
    ("ＡＢＣ　１２", "ＡＢＣ-１２"),  # full-width letters and digits are letters and digits
    ("../../etc/passwd", "etc-passwd"),
    ("a/b\\c", "a-b-c"),
    ("..", ""),
    (".hidden", "hidden"),
    ('<a>:"b"|c?*', "a-b-c"),
    ("tab\tnew\nline\x7f", "tab-new-line"),
    ("\u202egpj.exe", "gpj-exe"),  # a right-to-left override cannot disguise the name
    ("CON", ""), ("nul", ""), ("Com1", ""), ("LPT9", ""), ("CONSOLE", "CONSOLE"),
    ("", ""), ("？！……", ""),
])
def test_safe_name(title, name):
    assert exports.safe_name(title) == name


def test_a_long_name_is_cut_to_100_bytes_between_characters():
    for title in ("中" * 80, "a" + "中" * 80, "x" * 300, "é" * 90):
        name = exports.safe_name(title)
        raw = name.encode("utf-8")
        assert 97 <= len(raw) <= 100, (title[:5], len(raw))
        assert raw.decode("utf-8") == name and title.startswith(name)
    assert exports.safe_name("中" * 40 + "-" + "文" * 40, max_bytes=121) == "中" * 40


def test_zip_names_keep_chinese_titles_and_fall_back_to_the_article_id():
    assert names(["春季新品發佈會", "../../etc/passwd", "CON", "？？", "Plain Title"]) == [
        "00001-春季新品發佈會.md", "00002-etc-passwd.md", "00003-article-103.md",
        "00004-article-104.md", "00005-plain-title.md"]
    for name in names(["中" * 200, "a/b", "..", "x" * 500]):
        assert "/" not in name and "\\" not in name and ".." not in name
        assert not name.startswith(".") and len(name.encode("utf-8")) <= 100 + 12


def test_zip_names_are_unique_even_ignoring_case():
    # Duplicate titles at different positions differ by position already.
    assert names(["同名", "同名"]) == ["00001-同名.md", "00002-同名.md"]
    # Two rows at one position (never made by Pressroom, but nothing in the schema forbids
    # it) are numbered, as Windows and macOS would otherwise see one file.
    rows = [article(3, "Tides"), article(3, "TIDES"), article(3, "tides"), article(4, "Tides")]
    assert [n for n, _ in exports.zip_names(iter(rows), 4)] == [
        "00003-tides.md", "00003-tides-2.md", "00003-tides-3.md", "00004-tides.md"]


def test_zip_entries_flag_utf8_names():
    rows = [SimpleNamespace(id=1, position=1, title="春季新品發佈會", keywords="", status="queued",
                            review_status=None, words=0, length_unit="words", prompt_tokens=0,
                            completion_tokens=0, cost_usd=0.0, created_at=CREATED,
                            finished_at=None, body="正文"),
            SimpleNamespace(id=2, position=2, title="Plain", keywords="", status="queued",
                            review_status=None, words=0, length_unit="words", prompt_tokens=0,
                            completion_tokens=0, cost_usd=0.0, created_at=CREATED,
                            finished_at=None, body="Body")]
    data = b"".join(exports._zip(iter(rows), SimpleNamespace(model="m", total=2)))
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        chinese, plain = archive.infolist()
        # zipfile reads a name as UTF-8 only with bit 11 set (else as code page 437).
        assert chinese.filename == "00001-春季新品發佈會.md" and chinese.flag_bits & 0x800
        assert plain.filename == "00002-plain.md"
        assert archive.read(chinese).decode("utf-8").endswith("正文")


def _filename_star(header: str) -> str:
    """RFC 5987 ext-value, read back by hand: charset'language'percent-encoded."""
    match = re.search(r"filename\*=([^;]*)", header)
    charset, _language, value = match.group(1).split("'", 2)
    assert charset.upper() == "UTF-8"
    return unquote(value, encoding="utf-8", errors="strict")


def test_content_disposition_for_a_chinese_name():
    header = exports.content_disposition("batch-7-春季新品發佈會.csv", "batch-7.csv")
    assert header.isascii()
    assert header.startswith('attachment; filename="batch-7.csv"; filename*=UTF-8\'\'')
    assert _filename_star(header) == "batch-7-春季新品發佈會.csv"
    # Werkzeug's parser (what a Flask client would use) reads filename* first, as browsers do.
    _value, options = parse_options_header(header)
    assert options["filename"] == "batch-7-春季新品發佈會.csv"


def test_content_disposition_for_a_plain_name_has_no_filename_star():
    assert exports.content_disposition("batch-7-Spring.csv", "batch-7.csv") == \
        'attachment; filename="batch-7-Spring.csv"'


def test_content_disposition_cannot_be_broken_by_a_name():
    for name in ('a"; filename="evil.exe', "a\r\nSet-Cookie: x=1", "a\\b\".csv", "名\"\r\n.csv"):
        header = exports.content_disposition(name, 'fallback"\r\n.csv')
        assert "\r" not in header and "\n" not in header
        plain = re.fullmatch(r'attachment; filename="([^"]*)"(; filename\*=UTF-8\'\'[^;"\s]*)?',
                             header)
        assert plain, header
        assert _filename_star(header) == name


def test_csv_starts_with_a_byte_order_mark_and_json_does_not():
    batch = SimpleNamespace(id=1, name="春季", model="m", provider="openai")
    csv_bytes = b"".join(exports._csv(iter([]), batch))
    assert csv_bytes.startswith(b"\xef\xbb\xbfid,position,title,")
    assert csv_bytes.count(b"\xef\xbb\xbf") == 1
    json_bytes = b"".join(exports._json(iter([]), batch))
    assert json_bytes.startswith(b'{"batch"')
