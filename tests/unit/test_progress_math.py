"""The numbers a batch page shows (webapp/services/progress.py): the percentage, elapsed
time and ETA, the counts, and the page ranges of a long batch. The batches here are
never stored: the functions read their fields only."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from webapp.models import ArticleStatus as A, Batch, BatchStatus as B
from webapp.services.progress import (ARTICLES_PER_PAGE, Counts, page_range, percent,
                                      percent_done, timings)

NOW = datetime(2025, 3, 1, 12, 0, 0)


def batch(status: str, *, started: float | None = 100.0, finished: float | None = None,
          created: float = 120.0) -> Batch:
    """A batch created, started and finished the given number of seconds before NOW."""
    return Batch(status=status, created_at=NOW - timedelta(seconds=created),
                 started_at=None if started is None else NOW - timedelta(seconds=started),
                 finished_at=None if finished is None else NOW - timedelta(seconds=finished))


def counts(total: int, **by_status: int) -> Counts:
    return Counts({s: by_status.get(s, 0) for s in A.ALL}, total)


def test_failed_and_cancelled_articles_count_as_finished():
    c = counts(10, succeeded=3, failed=2, cancelled=1, running=2, queued=2)
    assert c.done == 6
    assert (c.get(A.RUNNING), c.get("unknown")) == (2, 0)
    assert percent_done(batch(B.RUNNING), c) == 60


def test_the_percentage_rounds_down():
    assert percent_done(batch(B.RUNNING), counts(3, succeeded=2)) == 66
    assert percent_done(batch(B.RUNNING), counts(3, succeeded=1)) == 33


def test_a_batch_shows_100_only_once_it_is_final():
    every_article_done = counts(4, succeeded=4)
    assert percent_done(batch(B.RUNNING), every_article_done) == 99
    assert percent_done(batch(B.CANCELLING), every_article_done) == 99
    for final in B.FINAL:
        assert percent_done(batch(final, finished=0), every_article_done) == 100


def test_an_empty_batch_is_0_until_final_then_100():
    assert percent_done(batch(B.QUEUED, started=None), counts(0)) == 0
    assert percent_done(batch(B.CANCELLED, finished=0), counts(0)) == 100


@pytest.mark.parametrize("done, total, final, expected", [
    (0, 10, False, 0), (1, 3, False, 33), (2, 3, False, 66), (10, 10, False, 99),
    (10, 10, True, 100), (7, 10, True, 70), (0, 0, False, 0), (0, 0, True, 100),
])
def test_the_percentage_of_any_count(done, total, final, expected):
    """The same rule for a batch page's bar and a dashboard row's."""
    assert percent(done, total, final) == expected


def test_the_eta_extrapolates_the_pace_so_far():
    # 100 s for 4 of 10 articles: 6 more at 25 s each.
    elapsed, eta = timings(batch(B.RUNNING, started=100), counts(10, succeeded=4), NOW)
    assert elapsed == 100.0
    assert eta == pytest.approx(150.0)


def test_no_eta_before_the_first_article_finishes():
    elapsed, eta = timings(batch(B.RUNNING, started=30), counts(10, running=3), NOW)
    assert (elapsed, eta) == (30.0, None)


def test_a_batch_not_started_counts_from_its_creation_and_has_no_eta():
    elapsed, eta = timings(batch(B.QUEUED, started=None, created=45), counts(5, failed=1), NOW)
    assert (elapsed, eta) == (45.0, None)


def test_a_final_batch_stops_the_clock_at_its_end_and_has_no_eta():
    elapsed, eta = timings(batch(B.SUCCEEDED, started=100, finished=40),
                           counts(10, succeeded=10), NOW)
    assert (elapsed, eta) == (60.0, None)


def test_elapsed_time_is_never_negative():
    # A started_at a little ahead of this machine's clock (another machine wrote it).
    elapsed, _ = timings(batch(B.RUNNING, started=-5), counts(2, succeeded=1), NOW)
    assert elapsed == 0.0


@pytest.mark.parametrize("total, page, expected", [
    (0, 1, (1, 1, 1, ARTICLES_PER_PAGE)),
    (ARTICLES_PER_PAGE, 1, (1, 1, 1, ARTICLES_PER_PAGE)),
    (ARTICLES_PER_PAGE + 1, 2, (2, 2, ARTICLES_PER_PAGE + 1, 2 * ARTICLES_PER_PAGE)),
    (10_000, 3, (3, 20, 2 * ARTICLES_PER_PAGE + 1, 3 * ARTICLES_PER_PAGE)),
    (10_000, 99, (20, 20, 19 * ARTICLES_PER_PAGE + 1, 20 * ARTICLES_PER_PAGE)),  # clamped
    (10_000, 0, (1, 20, 1, ARTICLES_PER_PAGE)),
    (10_000, -4, (1, 20, 1, ARTICLES_PER_PAGE)),
])
def test_page_ranges_of_a_long_batch(total, page, expected):
    assert ARTICLES_PER_PAGE == 500  # the figures below assume it
    assert page_range(total, page) == expected
