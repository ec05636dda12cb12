"""Issue 6, the dashboard at size: 10,000 batches and 1,000,000 articles (bench/finddb.py)
in a second database, the dashboard's queries through the service and over HTTP, and what
an FTS5 trigram index on titles would give (a prototype, not part of the app).

Needs no worker. The database is built in about 25 s; --find-scale builds a fraction of it
(details only, no figures), --no-fts skips the prototype.
"""
from __future__ import annotations

import re
import statistics
import time
from datetime import timedelta
from pathlib import Path

from bench import finddb
from bench.stack import Bench, log, utcnow

FIND_BATCHES, FIND_ARTICLES, FIND_REPEAT = 10_000, 1_000_000, 7


def find(bench: Bench) -> None:
    from flask_migrate import upgrade

    from webapp import create_app
    from webapp.extensions import db
    from webapp.models import Role
    from webapp.services import listing, progress, users
    from webapp.services.listing import BatchFilter

    n_batches = int(FIND_BATCHES * bench.args.find_scale)
    n_articles = int(FIND_ARTICLES * bench.args.find_scale)
    path = bench.tmp / "find.sqlite3"
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{path}",
                      "REDIS_URL": bench.redis_url})
    bench.ctx.pop()
    ctx = app.app_context()
    ctx.push()
    details: dict = {"batches": n_batches, "articles": n_articles}
    try:
        upgrade()
        _, password, _ = users.create_user("finder@localhost", Role.ADMIN)
        t0 = time.perf_counter()
        with db.engine.begin() as conn:
            made = finddb.build(conn, batches=n_batches, articles=n_articles)
        details["build_s"] = round(time.perf_counter() - t0, 1)
        with db.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE")  # as a maintained database would have
        details["database_mb"] = round(path.stat().st_size / 1e6, 1)
        log(f"find: {made['batches']} batches, {made['articles']} articles in "
            f"{details['build_s']} s ({details['database_mb']} MB)")

        def timed(fn, repeat=FIND_REPEAT):
            """Median and spread of repeated calls (the first one warms the cache)."""
            fn()
            db.session.rollback()
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                out = fn()
                times.append((time.perf_counter() - t) * 1000)
                db.session.rollback()
            times.sort()
            return {"p50_ms": round(statistics.median(times), 2),
                    "min_ms": round(times[0], 2), "max_ms": round(times[-1], 2)}, out

        queries = {
            "no_filter": BatchFilter(),
            "status_failed": BatchFilter(status="failed"),
            "author": BatchFilter(author=finddb.AUTHOR_WORD),
            "text_batch_name": BatchFilter(q=finddb.NAME_WORD),
            "text_title_common": BatchFilter(q=finddb.COMMON_TITLE_WORD),
            "text_title_rare": BatchFilter(q=finddb.RARE_TITLE_WORD),
            "text_no_match": BatchFilter(q="no-such-words-anywhere"),
            "date_range_30d": BatchFilter(since=made["since"], until=made["until"]),
        }
        per_page = app.config["BATCHES_PER_PAGE"]
        service = {}
        for name, flt in queries.items():
            # Text searches scan; fewer repeats keep the phase short.
            repeat = 3 if flt.q else FIND_REPEAT
            stats, (rows, total) = timed(lambda: listing.page_of_batches(1, per_page, flt),
                                         repeat)
            service[name] = {**stats, "matching_batches": total, "rows": len(rows)}
            log(f"find {name}: {stats['p50_ms']} ms ({total} batches)")
        details["page_of_batches"] = service

        batch_id = made["running_batch_id"]
        since = utcnow() - timedelta(seconds=1)
        details["batch_service"] = {
            "batch_view_with_counts": timed(lambda: progress.batch_view(
                batch_id, with_rows=False))[0],
            "poll_batch_view_rows": timed(lambda: progress.batch_view(
                batch_id, since, with_rows=True))[0],
            "article_rows": timed(lambda: progress.article_rows(batch_id))[0]}
    finally:
        ctx.pop()
        bench.ctx.push()

    # The same pages end to end (routing, session, templates) through the test client.
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    client.post("/login", data={"email": "finder@localhost", "password": password,
                                "csrf_token": token})
    http = {}
    for name, url in (("dashboard", "/"), ("dashboard_status", "/?status=failed"),
                      ("dashboard_text_title", f"/?q={finddb.RARE_TITLE_WORD}"),
                      ("batch_page", f"/batches/{batch_id}"),
                      ("batch_poll", f"/batches/{batch_id}/progress?since="
                                     f"{since.isoformat()}&seen=running")):
        def get(url=url):
            response = client.get(url)
            assert response.status_code in (200, 286), (url, response.status_code)
        http[name] = timed(get, 3 if "text" in name else FIND_REPEAT)[0]
    details["http"] = http
    bench.celery.set_default()  # create_app made the second app's Celery the default

    if not bench.args.no_fts:
        details["fts5_trigram_prototype"] = _fts_prototype(path, made)
    bench.details["find"] = details
    if bench.args.find_scale != 1.0:
        details["scale"] = bench.args.find_scale
        log("find: --find-scale given, so no figures are recorded (details only)")
        return
    bench.figures["find_dashboard_p50_ms"] = service["no_filter"]["p50_ms"]
    bench.figures["find_text_title_ms"] = service["text_title_rare"]["p50_ms"]


def _fts_prototype(path: Path, made: dict) -> dict:
    """What an FTS5 trigram index on article titles would give (not part of the app):
    build it on a copy of the connection, and time the title part of the search."""
    import sqlite3

    conn = sqlite3.connect(path)
    try:
        t0 = time.perf_counter()
        conn.execute("CREATE VIRTUAL TABLE article_title_fts USING fts5(title, "
                     "content='articles', content_rowid='id', tokenize='trigram')")
        conn.execute("INSERT INTO article_title_fts(article_title_fts) VALUES('rebuild')")
        conn.commit()
        build_s = time.perf_counter() - t0
        # The dashboard's search with the title half answered by the index: batches
        # whose name matches, or that hold an article whose title matches.
        sql = ("SELECT count(*) FROM batches WHERE lower(name) LIKE :like OR id IN "
               "(SELECT a.batch_id FROM articles a JOIN article_title_fts f "
               "ON f.rowid = a.id WHERE article_title_fts MATCH :match)")
        page_sql = sql.replace("count(*)", "id") + " ORDER BY created_at DESC, id DESC LIMIT 20"
        out = {"build_s": round(build_s, 1)}
        try:  # the index's size, where SQLite has the dbstat table
            out["index_mb"] = round(conn.execute(
                "SELECT sum(pgsize) FROM dbstat WHERE name LIKE 'article_title_fts%'"
            ).fetchone()[0] / 1e6, 1)
        except sqlite3.OperationalError:
            pass
        for name, word in (("rare", finddb.RARE_TITLE_WORD),
                           ("common", finddb.COMMON_TITLE_WORD)):
            params = {"like": f"%{word.lower()}%", "match": f'"{word}"'}
            times = []
            for _ in range(3):
                t = time.perf_counter()
                total = conn.execute(sql, params).fetchone()[0]
                conn.execute(page_sql, params).fetchall()
                times.append((time.perf_counter() - t) * 1000)
            out[f"text_title_{name}_ms"] = round(statistics.median(times), 2)
            out[f"text_title_{name}_matching_batches"] = total
        return out
    except sqlite3.OperationalError as exc:  # an SQLite built without FTS5
        return {"error": str(exc)}
    finally:
        conn.close()
