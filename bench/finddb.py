"""A large Pressroom database for the dashboard benchmark (issue 6): many batches, a million
articles, written straight into the tables in chunks (Core executemany, no ORM objects).

The titles are made of word lists, so a text search finds some rows and not others:

- every title is "<adjective> <noun> <verb> in <place>": a place word is in about one title
  in forty (COMMON_TITLE_WORD), so nearly every batch has one;
- RARE_TITLE_WORD is put into RARE_TITLES titles only, so a search for it must look at most
  of the table before it has a page of batches;
- NAME_WORD is in about one batch name in twenty and in no title.

Bodies are left empty: a real article table holds a few kilobytes of Markdown a row, so a
scan of the titles reads far more pages there than here. Times measured on this table are
lower bounds for the same search on a real one.
"""
from __future__ import annotations

import random
import uuid
from datetime import timedelta

from sqlalchemy import insert

from webapp.models import Article, ArticleStatus as A, Batch, BatchStatus as B, User, utcnow

ADJECTIVES = ("quiet new old local rising hidden early late small bold green frozen "
              "busy empty bright rural urban coastal historic modern").split()
NOUNS = ("harbour bridge school market library festival budget railway museum council "
         "garden hospital stadium theatre factory airport river park election orchard").split()
VERBS = ("reopens expands closes returns changes grows recovers waits celebrates moves "
         "struggles thrives").split()
PLACES = ("Leeds Bristol Galway Porto Lyon Ghent Malmo Turku Bergen Graz Brno Cork Bilbao "
          "Utrecht Aarhus Split Tartu Kaunas Krakow Bologna Seville Nantes Basel Linz Dundee "
          "Cardiff Lille Gdansk Riga Tampere Toulouse Varna Plovdiv Iasi Sibiu Kosice Pecs "
          "Ljubljana Zadar Trieste").split()
DESKS = ("Metro Business Culture Sport Science Travel Food Obituaries Politics Weather "
         "Health Education Property Motoring Books Music Film Fashion Tech Opinion").split()
TOPICS = ("Spring roundup|Autumn preview|Weekend guide|Election special|Budget week|"
          "Summer series|City profiles|Year in review|Local heroes|Explainers").split("|")

COMMON_TITLE_WORD = "Galway"      # one place of forty: in about 2.5 % of titles
RARE_TITLE_WORD = "zeppelin"      # put into RARE_TITLES titles only
RARE_TITLES = 100
NAME_WORD = "Obituaries"          # one desk of twenty: in about 5 % of batch names
AUTHOR_WORD = "editor07"          # one author of USERS
USERS = 20
CHUNK = 20_000


def build(conn, *, batches: int, articles: int, seed: int = 6,
          running_batch_size: int = 100) -> dict:
    """Fill an empty, migrated database; returns what a benchmark needs to query it.

    The newest batch is a running one of `running_batch_size` articles (for the batch page
    and its poll); the few before it are running or queued too, as on a live system.
    """
    rng = random.Random(seed)
    now = utcnow().replace(microsecond=0)
    start = now - timedelta(days=730)

    conn.execute(insert(User.__table__), [
        {"email": f"editor{i:02d}@newsroom.example", "password_hash": "!", "role": "editor",
         "is_disabled": False, "created_at": start} for i in range(USERS)])
    user_ids = [r[0] for r in conn.exec_driver_sql(
        "SELECT id FROM users WHERE email LIKE '%@newsroom.example' ORDER BY id")]

    # Batch sizes from 10 to 190, then nudged so that they add up to `articles` exactly.
    sizes = [rng.randint(10, 190) for _ in range(batches - 1)]
    rest = articles - running_batch_size
    scale = rest / sum(sizes)
    sizes = [max(1, round(s * scale)) for s in sizes]
    sizes[-1] += rest - sum(sizes)
    sizes.append(running_batch_size)

    step = (now - start) / batches
    batch_rows = []
    for i, size in enumerate(sizes):
        created = start + step * i
        live = i >= batches - 5  # the newest few are still going
        status = (B.RUNNING if live else
                  rng.choices((B.SUCCEEDED, B.FAILED, B.CANCELLED), (85, 9, 6))[0])
        batch_rows.append({
            "user_id": rng.choice(user_ids),
            "name": f"{rng.choice(TOPICS)} {created:%B %Y} — {rng.choice(DESKS)} desk",
            "status": status, "provider": "openai", "model": "gpt-4o-mini",
            "target_words": 600, "tone": "neutral", "language": "English",
            "instructions": "", "total": size, "created_at": created,
            "started_at": created, "finished_at": None if live else created + timedelta(minutes=5),
            "dispatched_at": created, "prompt_tokens": 0, "completion_tokens": 0,
            "cost_usd": 0.0, "template_text": ""})
    conn.execute(insert(Batch.__table__), batch_rows)
    batch_ids = [r[0] for r in conn.exec_driver_sql("SELECT id FROM batches ORDER BY id")]
    batch_ids = batch_ids[-batches:]

    rare = set(rng.sample(range(articles), RARE_TITLES))
    n = 0
    chunk: list[dict] = []
    for b, (batch_id, size, brow) in enumerate(zip(batch_ids, sizes, batch_rows)):
        created = brow["created_at"]
        for pos in range(1, size + 1):
            title = (f"{rng.choice(ADJECTIVES).capitalize()} {rng.choice(NOUNS)} "
                     f"{rng.choice(VERBS)} in {rng.choice(PLACES)}")
            if n in rare:
                title += f" as {RARE_TITLE_WORD} visits"
            if brow["status"] == B.RUNNING:
                status = (A.SUCCEEDED if pos <= size * 0.4 else
                          A.RUNNING if pos <= size * 0.4 + 10 else A.QUEUED)
            elif brow["status"] == B.SUCCEEDED:
                status = A.SUCCEEDED
            else:
                status = rng.choices((A.SUCCEEDED, A.FAILED, A.CANCELLED), (80, 10, 10))[0]
            done = status in A.FINAL
            chunk.append({
                "batch_id": batch_id, "position": pos, "title": title, "status": status,
                # Sequential, uuid-shaped ids: the unique index is appended to, not split.
                "task_id": str(uuid.UUID(int=n + 1)), "words": 600 if status == A.SUCCEEDED else 0,
                "attempts": 1, "prompt_tokens": 0, "completion_tokens": 0, "cost_usd": 0.0,
                "created_at": created, "updated_at": created,
                "started_at": created if status != A.QUEUED else None,
                "finished_at": created if done else None,
                "lease_expires_at": now + timedelta(hours=1) if status == A.RUNNING else None})
            n += 1
            if len(chunk) >= CHUNK:
                conn.execute(insert(Article.__table__), chunk)
                chunk = []
    if chunk:
        conn.execute(insert(Article.__table__), chunk)
    return {"batches": len(batch_ids), "articles": n, "running_batch_id": batch_ids[-1],
            "users": USERS, "since": (now - timedelta(days=30)).date(),
            "until": now.date()}
