"""Charts on the batch page and the system page (issue 15, item 4): server-rendered SVG,
each an image named by a <title> that states its figures, with the numbers in a table,
and kept live by a poll of their own that stops when the batch is final (HTTP 286)."""
from __future__ import annotations

import html
import re
import uuid
from datetime import timedelta

from sqlalchemy import insert, select

from tests.fakeai import Fault
from tests.helpers import batch_id_from_location, count_sql, submit_form, wait_batch_final
from tests.sec_support import make_account, signed_in
from tests.test_poll_cost import count_redis_round_trips
from webapp.services import pollcache
from webapp.extensions import db
from webapp.models import Article, Batch, BatchMode, Role, User, utcnow

HX = {"HX-Request": "true"}
_SVG = re.compile(r'<svg class="chart[^"]*" id="chart-([\w-]+)"([^>]*)>(.*?)</svg>', re.S)


def charts_of(page: str) -> dict[str, dict]:
    """Every chart in a page: its id → its attributes' text, <title>, <desc>."""
    found = {}
    for chart_id, attrs, body in _SVG.findall(page):
        title = re.search(rf'<title id="chart-{chart_id}-title">(.*?)</title>', body, re.S)
        desc = re.search(rf'<desc id="chart-{chart_id}-desc">(.*?)</desc>', body, re.S)
        found[chart_id] = {"attrs": attrs, "body": body,
                           "title": html.unescape(title.group(1)) if title else None,
                           "desc": html.unescape(desc.group(1)) if desc else None}
    return found


def assert_labelled(chart_id: str, chart: dict) -> None:
    """An image for assistive technology, named by its title and described by its desc."""
    assert 'role="img"' in chart["attrs"], chart_id
    assert f'aria-labelledby="chart-{chart_id}-title"' in chart["attrs"], chart_id
    assert f'aria-describedby="chart-{chart_id}-desc"' in chart["attrs"], chart_id
    assert chart["title"] and chart["desc"], chart_id


def section(page: str, section_id: str) -> str:
    match = re.search(rf'<section id="{section_id}".*?</section>', page, re.S)
    assert match, f"no #{section_id} in the page"
    return match.group(0)


def _user_id(app, email: str = "editor@example.test") -> int:
    with app.app_context():
        return db.session.scalar(select(User.id).where(User.email == email))


def _batch(app, *, status="running", model="gpt-4o-mini", mode=BatchMode.STANDARD,
           total=4, finished=(), queued=0, started_ago=timedelta(minutes=3)) -> int:
    """A batch written straight to the database: `finished` is (status, seconds after the
    start, seconds it took, cost) per finished article; `queued` more wait."""
    start = utcnow() - started_ago
    with app.app_context():
        batch = Batch(user_id=_user_id(app), name="Charted", provider="openai-compatible (test)",
                      model=model, target_words=200, tone="neutral", language="English",
                      total=total, status=status, mode=mode, created_at=start, started_at=start,
                      finished_at=utcnow() if status in ("succeeded", "failed") else None)
        db.session.add(batch)
        db.session.flush()
        rows = [{"batch_id": batch.id, "position": n, "title": f"Article {n}", "status": s,
                 "task_id": str(uuid.uuid4()), "attempts": 1, "cost_usd": cost,
                 "started_at": start + timedelta(seconds=at - took),
                 "finished_at": start + timedelta(seconds=at)}
                for n, (s, at, took, cost) in enumerate(finished, start=1)]
        rows += [{"batch_id": batch.id, "position": len(finished) + n, "title": f"Queued {n}",
                  "status": "queued", "task_id": str(uuid.uuid4())}
                 for n in range(1, queued + 1)]
        if rows:
            db.session.execute(insert(Article), rows)
        db.session.commit()
        return batch.id


# -- the batch page ----------------------------------------------------------------------------

def test_a_finished_batch_page_shows_both_charts_with_their_counts(app, client, fake):
    fake.script(Fault.bad_request())  # the first article fails (not retried); three are written
    batch_id = batch_id_from_location(submit_form(client, "Charted news", [
        "Tides of the north", "A museum reopens", "Rain on the vineyards", "Night trains"]))
    assert wait_batch_final(app, batch_id)["status"] == "failed"

    page = client.get(f"/batches/{batch_id}").get_data(as_text=True)
    charts = charts_of(section(page, "batch-charts"))

    assert set(charts) == {"finished", "spend"}
    for chart_id, chart in charts.items():
        assert_labelled(chart_id, chart)
    assert re.fullmatch(r"4 of 4 articles finished in \d.*", charts["finished"]["title"])
    assert re.fullmatch(r"\$[\d.,]+ spent on 4 finished articles in \d.*",
                        charts["spend"]["title"])
    assert "<polyline" in charts["finished"]["body"] and "<polyline" in charts["spend"]["body"]
    # The numbers as text: the running total ends at 4.
    numbers = section(page, "batch-charts")
    assert "<details" in numbers
    totals = re.findall(r"<tr><td>[^<]*</td><td>\d+</td><td>(\d+)</td>", numbers)
    assert totals and totals[-1] == "4"
    # A final batch's charts do not poll, and their own endpoint says so with 286.
    assert "hx-get" not in section(page, "batch-charts")
    poll = client.get(f"/batches/{batch_id}/charts", headers=HX)
    assert poll.status_code == 286
    body = poll.get_data(as_text=True)
    assert "hx-get" not in body and "hx-trigger" not in body
    assert charts_of(body)["finished"]["title"] == charts["finished"]["title"]


def test_a_running_batch_charts_poll_on_their_own_until_it_is_final(app, client, admin_client,
                                                                     monkeypatch):
    batch_id = _batch(app, total=5, queued=2, finished=[
        ("succeeded", 20, 5, 0.01), ("failed", 40, 3, 0.0), ("succeeded", 60, 4, 0.02)])
    # The polling slice is held still: the test, not the wall clock, says when it ends.
    monkeypatch.setattr(pollcache, "clock", lambda: 1_000_000.0)

    with count_sql(app) as statements, count_redis_round_trips(monkeypatch) as round_trips:
        poll = client.get(f"/batches/{batch_id}/charts", headers=HX)

    assert poll.status_code == 200
    body = poll.get_data(as_text=True)
    # The signed-in user, the batch, its articles finished per bucket (one grouped query);
    # Redis: this slice's render looked for, then kept.
    assert len(statements) <= 3, "\n\n".join(statements)
    assert sum("GROUP BY" in s for s in statements) == 1
    assert len(round_trips) == 2
    # Another viewer in the same slice gets the same render: no grouped query, one read.
    with count_sql(app) as statements, count_redis_round_trips(monkeypatch) as round_trips:
        other = admin_client.get(f"/batches/{batch_id}/charts", headers=HX)
    assert other.get_data(as_text=True) == body
    assert not any("GROUP BY" in s for s in statements) and len(round_trips) == 1
    assert re.search(r'id="batch-charts"[^>]*hx-get="/batches/\d+/charts"', body)
    assert 'hx-trigger="load delay:' in body and "data-poll" in body
    charts = charts_of(body)
    assert charts["finished"]["title"].startswith("3 of 5 articles finished in ")
    assert charts["spend"]["title"].startswith("$0.0300 spent on 3 finished articles in ")
    assert "style=" not in body  # the CSP refuses style attributes

    with app.app_context():
        db.session.get(Batch, batch_id).status = "cancelled"
        db.session.commit()
    assert client.get(f"/batches/{batch_id}/charts", headers=HX).status_code == 286


def test_a_batch_with_nothing_finished_says_so(app, client):
    batch_id = _batch(app, total=3, queued=3, started_ago=timedelta(seconds=5))
    page = client.get(f"/batches/{batch_id}").get_data(as_text=True)
    charts = section(page, "batch-charts")
    assert "No articles finished yet." in charts and "<svg" not in charts
    assert "hx-get" in charts  # and keeps looking


def test_charts_of_a_missing_batch_are_not_found(app, client):
    assert client.get("/batches/999999/charts", headers=HX).status_code == 404


# -- the system page ---------------------------------------------------------------------------

def _recent_work(app) -> None:
    """Articles finished in the last hour on two models (four of them 16 to 19 minutes
    ago: in one 5-minute bucket), and one 5 hours ago."""
    _batch(app, status="failed", model="model-one", total=4, started_ago=timedelta(minutes=20),
           finished=[("succeeded", 60, 2, 0.01), ("succeeded", 120, 4, 0.01),
                     ("succeeded", 180, 6, 0.01), ("failed", 240, 1, 0.0)])
    _batch(app, status="failed", model="model-two", total=3, started_ago=timedelta(minutes=30),
           finished=[("failed", 60, 1, 0.0), ("failed", 70, 1, 0.0), ("succeeded", 80, 3, 0.01)])
    _batch(app, status="succeeded", model="model-one", total=1, started_ago=timedelta(hours=5),
           finished=[("succeeded", 10, 8, 0.01)])


def test_the_system_page_shows_throughput_latency_and_failures_per_model(app, admin_client):
    _recent_work(app)
    page = admin_client.get("/admin/system").get_data(as_text=True)
    charts = charts_of(section(page, "system-charts"))

    assert set(charts) == {f"{kind}-{window}" for kind in ("throughput", "latency", "models")
                           for window in ("hour", "day")}
    for chart_id, chart in charts.items():
        assert_labelled(chart_id, chart)
    assert charts["throughput-hour"]["title"] == (
        "7 articles finished in the last hour, 3 failed; at most 4 in 5 minutes")
    assert charts["throughput-day"]["title"].startswith(
        "8 articles finished in the last 24 hours, 3 failed; at most ")
    # Timed: the 4 written articles of the last hour (2, 4, 6 and 3 s).
    assert charts["latency-hour"]["title"] == (
        "Provider latency in the last hour: median 3.5 s, 95th percentile 5.7 s, "
        "over 4 articles")
    assert charts["models-hour"]["title"] == (
        "Failed articles per model in the last hour: 3 in all, most of them with "
        "model-two (2)")
    assert "<rect" in charts["throughput-hour"]["body"]
    assert "<path" in charts["latency-hour"]["body"]
    assert "model-one" in charts["models-day"]["body"]
    assert "style=" not in section(page, "system-charts")


def test_the_system_charts_poll_and_are_for_admins_only(app, admin_client, client):
    poll = admin_client.get("/admin/system/charts", headers=HX)
    assert poll.status_code == 200
    body = poll.get_data(as_text=True)
    assert re.search(r'id="system-charts"[^>]*hx-get="/admin/system/charts"', body)
    # Nothing finished yet: words instead of empty charts.
    assert "No articles finished in the last hour." in body
    assert "No articles finished in the last 24 hours." in body
    assert "<svg" not in body

    assert client.get("/admin/system/charts", headers=HX).status_code == 403
    viewer = signed_in(app, make_account(app, Role.VIEWER))
    assert viewer.get("/admin/system/charts", headers=HX).status_code == 403


def test_the_system_page_still_renders_when_the_charts_cannot_read(app, admin_client,
                                                                   monkeypatch):
    """The system page is where an admin looks when the database is in trouble: its charts
    say they are unavailable instead of failing the page."""
    from sqlalchemy.exc import OperationalError

    from webapp.services import activity

    def unreadable(since, until):
        raise OperationalError("SELECT …", {}, Exception("database is locked"))

    monkeypatch.setattr(activity, "finished_rows", unreadable)
    page = admin_client.get("/admin/system")
    assert page.status_code == 200
    assert "The charts are unavailable: the database cannot be read." in section(
        page.get_data(as_text=True), "system-charts")
    poll = admin_client.get("/admin/system/charts", headers=HX)
    assert poll.status_code == 200 and 'hx-get="/admin/system/charts"' in poll.get_data(
        as_text=True)
