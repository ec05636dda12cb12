"""The zip export written as it streams: readable by zipfile and unzip, past 65,535 entries
(ZIP64), in the batch's order, and with memory that does not grow with the batch."""
from __future__ import annotations

import io
import tracemalloc
import zipfile
from datetime import datetime
from types import SimpleNamespace

from webapp.services import exports

CREATED = datetime(2026, 3, 4, 5, 6, 7)


def _article(position: int, body: str = "") -> SimpleNamespace:
    return SimpleNamespace(
        position=position, title=f"Article {position}: growth", keywords="", status="queued",
        review_status=None, words=0, length_unit="words", prompt_tokens=0,
        completion_tokens=0, cost_usd=0.0, created_at=CREATED, finished_at=None, body=body)


def _batch(total: int) -> SimpleNamespace:
    return SimpleNamespace(model="gpt-4o-mini", total=total)


def _archive(articles, total: int) -> zipfile.ZipFile:
    data = b"".join(exports._zip(iter(articles), _batch(total)))
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None  # every entry's CRC checks out
    return archive


def test_entries_hold_front_matter_and_body_with_the_article_time():
    finished = SimpleNamespace(**{**vars(_article(2, "# Done\n\nText é")),
                                  "finished_at": datetime(2026, 3, 5, 1, 2, 4)})
    archive = _archive([_article(1), finished], total=2)
    names = archive.namelist()
    assert names == ["00001-article-1-growth.md", "00002-article-2-growth.md"]
    text = archive.read(names[1]).decode("utf-8")
    assert text.startswith("---\ntitle: ") and text.endswith("---\n# Done\n\nText é")
    assert archive.getinfo(names[0]).date_time == (2026, 3, 4, 5, 6, 6)  # 2-second steps
    assert archive.getinfo(names[1]).date_time == (2026, 3, 5, 1, 2, 4)
    assert archive.getinfo(names[1]).compress_type == zipfile.ZIP_DEFLATED
    assert _archive([], total=0).namelist() == []


def test_names_sort_in_position_order_past_99999():
    archive = _archive([_article(99_999), _article(100_000)], total=100_000)
    names = archive.namelist()
    assert names == sorted(names)
    assert names[0].startswith("099999-") and names[1].startswith("100000-")


def test_more_than_65535_entries_with_flat_memory(tmp_path):
    count = 70_000
    path = tmp_path / "big.zip"
    entries = ((f"{n:05d}.md", b"Body %d" % n, CREATED) for n in range(1, count + 1))
    tracemalloc.start()
    try:
        with path.open("wb") as out:
            for piece in exports._zip_stream(entries):
                out.write(piece)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # zipfile.ZipFile kept about a kilobyte per entry until the end (70 MB here).
    assert peak < 8 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB for {count} entries"
    assert b"PK\x06\x06" in path.read_bytes()[-200:]  # the ZIP64 end record
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        assert len(infos) == count
        assert infos[-1].filename == "70000.md" and archive.read(infos[-1]) == b"Body 70000"
        assert infos[-1].header_offset > infos[-2].header_offset
