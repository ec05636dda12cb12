"""Lengths that fit the language, end to end through the real worker: a Chinese batch asks
for characters, its answers are counted in characters (live and stored), the API says so,
and an answer under half its target is flagged "short"."""
from __future__ import annotations

from tests.helpers import wait_batch_final

WHOLE, SHORT = "安静的图书馆", "太短的回答"
# 6 + 150 characters against a target of 200: more than half. Then 5 + 16: under half.
WHOLE_TEXT = "# 安静的图书馆\n\n" + "城市里有很多安静的地方，适合读书。" * 10
SHORT_TEXT = "# 太短的回答\n\n" + "这篇文章只有二十个字，远远不够。" + "再见"


def test_a_chinese_batch_is_counted_in_characters_and_a_short_answer_flagged(
        app, client, api_headers, fake):
    fake.answer(WHOLE, WHOLE_TEXT)
    fake.answer(SHORT, SHORT_TEXT)
    response = client.post("/api/v1/batches", headers=api_headers, json={
        "name": "中文批次", "titles": [WHOLE, SHORT], "target_words": 200,
        "language": "Chinese"})
    assert response.status_code == 201, response.get_json()
    created = response.get_json()
    assert created["target_words"] == 200 and created["target_unit"] == "characters"
    # Counted in characters from the start, before a word is written.
    assert {a["length_unit"] for a in created["articles"]} == {"characters"}
    assert wait_batch_final(app, created["id"])["status"] == "succeeded"

    # The prompt asked for characters, not words.
    prompt = fake.requests_for(WHOLE)[0].messages[-1]["content"]
    assert "about 200 characters (字) with this title." in prompt

    batch = client.get(created["url"], headers=api_headers).get_json()
    rows = {a["title"]: a for a in batch["articles"]}
    assert (rows[WHOLE]["length"], rows[WHOLE]["length_unit"]) == (156, "characters")
    assert (rows[SHORT]["length"], rows[SHORT]["length_unit"]) == (21, "characters")
    assert rows[WHOLE]["words"] == 156  # the same number, for older scripts
    assert rows[WHOLE]["review_flag"] is None
    assert rows[SHORT]["review_flag"] == "short"
    assert batch["flagged"] == 1

    article = client.get(rows[SHORT]["url"], headers=api_headers).get_json()
    assert article["body"] == SHORT_TEXT
    assert (article["length"], article["length_unit"], article["words"]) == \
        (21, "characters", 21)
    assert article["review_flag"] == "short" and article["finish_reason"] == "stop"

    # The pages say characters too: the target, the column, the article and its flag.
    page = client.get(f"/batches/{created['id']}").get_data(as_text=True)
    assert "200 characters" in page and ">Characters</span>" in page
    page = client.get(f"/articles/{article['id']}").get_data(as_text=True)
    assert "<span>21 characters</span>" in page
    assert "under half its target length" in page


def test_an_english_batch_answered_in_chinese_is_still_counted_in_characters(
        app, client, api_headers, fake):
    fake.answer(WHOLE, WHOLE_TEXT)
    response = client.post("/api/v1/batches", headers=api_headers, json={
        "name": "English, answered in Chinese", "titles": [WHOLE], "target_words": 200,
        "language": "English"})
    created = response.get_json()
    assert created["target_unit"] == "words"
    wait_batch_final(app, created["id"])
    (row,) = client.get(created["url"], headers=api_headers).get_json()["articles"]
    # Not "3 words": its 156 characters, which are not under half of 200.
    assert (row["length"], row["length_unit"], row["review_flag"]) == (156, "characters", None)
