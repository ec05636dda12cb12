"""Chinese spreadsheets through the real pages and worker: a Big5 file is recognised on the
pre-flight and stored with its titles; an unsure reading can be uploaded again in a chosen
encoding; the CSV export opens in Excel (a byte-order mark) and the download is named after
the batch (RFC 5987's filename*)."""
from __future__ import annotations

import csv
import html
import io
import re
import zipfile
from urllib.parse import unquote

from tests.helpers import (articles_state, batch_id_from_location, csrf_from, page_csrf,
                           row_counts, wait_batch_final)

FORM = {"model": "gpt-4o-mini", "target_words": "200", "tone": "neutral",
        "language": "English", "instructions": ""}
TITLES = ["春季新品發佈會", "台北捷運延長營運時間", "阿里山烏龍茶的故事"]
_IMPORT_TEXT = re.compile(r'<textarea name="import_text" hidden>(.*?)</textarea>', re.S)
_READ_AS = re.compile(r'<p id="read-as"[^>]*>(.*?)</p>', re.S)


def _upload(client, filename: str, content: bytes, name: str, **fields):
    """The new-batch form with a file, as a browser sends it (multipart)."""
    data = {"name": name, **FORM, "csrf_token": page_csrf(client), **fields,
            "import_file": (io.BytesIO(content), filename)}
    return client.post("/batches/new", data=data, content_type="multipart/form-data")


def _confirm(client, page: str, name: str):
    """Confirm a checked import as the page does: its text goes back with the form."""
    return client.post("/batches/new", data={
        "name": name, **FORM, "csrf_token": csrf_from(page),
        "import_text": html.unescape(_IMPORT_TEXT.search(page).group(1)),
        "import_name": "新聞.csv"})


def _read_as(page: str) -> str:
    match = _READ_AS.search(page)
    assert match, "the pre-flight does not say how the file was read"
    return html.unescape(match.group(1))


def test_a_big5_file_is_read_as_big5_stored_and_exported(app, client, fake):
    # As Excel on Traditional Chinese Windows saves "CSV": Big5 (code page 950), CRLF; the
    # titles wrapped in corner quotes and followed by a full-width comma, to be trimmed.
    content = ("title,keywords\r\n"
               + "".join(f"「{title}」，,新聞\r\n" for title in TITLES)).encode("cp950")
    response = _upload(client, "新聞.csv", content, name="春季新聞")
    assert response.status_code == 200
    page = response.get_data(as_text=True)
    assert _read_as(page) == "Read as Big5 (comma-separated)."
    for title in TITLES:
        assert f"<td>{title}</td>" in page
    assert "Create batch with 3 articles" in page
    assert 'name="import_encoding"' not in page  # a sure reading offers no re-upload
    assert row_counts(app) == (0, 0)

    batch_id = batch_id_from_location(_confirm(client, page, name="春季新聞"))
    assert [a["title"] for a in articles_state(app, batch_id)] == TITLES
    assert [a["keywords"] for a in articles_state(app, batch_id)] == ["新聞"] * 3
    assert wait_batch_final(app, batch_id)["status"] == "succeeded"

    response = client.get(f"/batches/{batch_id}/export.csv?all=1")
    assert response.status_code == 200
    body = response.get_data()
    assert body[:3] == b"\xef\xbb\xbf"
    rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))
    assert [row["title"] for row in rows] == TITLES
    disposition = response.headers["Content-Disposition"]
    assert disposition.startswith(f'attachment; filename="batch-{batch_id}-all.csv"; ')
    star = re.search(r"filename\*=UTF-8''([^;\s]+)", disposition).group(1)
    assert unquote(star, errors="strict") == f"batch-{batch_id}-春季新聞-all.csv"

    response = client.get(f"/batches/{batch_id}/export.zip?all=1")
    with zipfile.ZipFile(io.BytesIO(response.get_data())) as archive:
        assert archive.namelist() == [f"0000{n}-{title}.md" for n, title in enumerate(TITLES, 1)]

    response = client.get(f"/batches/{batch_id}/export.json?all=1")
    assert response.get_data()[:1] == b"{"  # no byte-order mark in JSON


def test_an_unsure_reading_can_be_uploaded_again_in_a_chosen_encoding(app, client, fake):
    # Two characters are too few to tell Big5 from GBK: 鑰匙 in Big5 is 芲巴 in GBK.
    content = "title\r\n鑰匙\r\n".encode("big5")
    page = _upload(client, "keys.csv", content, name="Keys").get_data(as_text=True)
    assert _read_as(page).startswith("Read as GB18030 — not sure")
    assert 'name="import_encoding"' in page and 'id="import_file"' in page

    response = _upload(client, "keys.csv", content, name="Keys", import_encoding="big5")
    page = response.get_data(as_text=True)
    assert _read_as(page) == "Read as Big5."
    assert "<td>鑰匙</td>" in page

    # An encoding the file is not in: the error names the byte and the line.
    response = _upload(client, "keys.csv", content, name="Keys", import_encoding="utf-8")
    assert response.status_code == 400
    assert "The file cannot be read as UTF-8: byte 8 (line 2) is not UTF-8 text." in \
        html.unescape(response.get_data(as_text=True))
    assert row_counts(app) == (0, 0)
