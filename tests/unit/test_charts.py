"""The charts' arithmetic (webapp/services/charts.py): buckets, cumulative series,
percentiles, scales and ticks, and the charts built from them, empty and one-point ones
included. Pure: no app, no database."""
from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest

from webapp.services import charts
from webapp.services.charts import (BOTTOM, LEFT, RIGHT, TOP, Buckets, Finished, Scale,
                                    cumulative, percentile, time_ticks, value_ticks)

T0 = datetime(2025, 3, 1, 12, 0, 0)
MIN = timedelta(minutes=1)


def _coords(points: str) -> list[tuple[float, float]]:
    return [tuple(float(v) for v in p.split(",")) for p in points.split()]


# -- buckets ---------------------------------------------------------------------------------

def test_buckets_edges_and_end():
    b = Buckets(T0, 5 * MIN, 12)
    edges = b.edges()
    assert len(edges) == 13 and edges[0] == T0 and edges[-1] == T0 + 60 * MIN == b.end
    assert b.span_s == 3600


def test_a_moment_on_an_edge_belongs_to_the_bucket_it_starts():
    b = Buckets(T0, 5 * MIN, 12)
    assert b.index(T0) == 0
    assert b.index(T0 + 5 * MIN - timedelta(microseconds=1)) == 0
    assert b.index(T0 + 5 * MIN) == 1
    assert b.index(T0 + 55 * MIN) == 11
    assert b.index(b.end - timedelta(microseconds=1)) == 11


def test_moments_outside_the_window_fall_in_no_bucket():
    b = Buckets(T0, 5 * MIN, 12)
    assert b.index(T0 - timedelta(microseconds=1)) is None
    assert b.index(b.end) is None  # [start, end): the end belongs to the next window
    assert b.index(T0 + timedelta(days=1)) is None
    assert b.index(None) is None


def test_counts_fill_empty_buckets_with_zero_and_skip_outsiders():
    b = Buckets(T0, 5 * MIN, 4)
    moments = [T0, T0 + MIN, T0 + 11 * MIN, T0 - MIN, T0 + 20 * MIN, None]
    assert charts.counts(b, moments) == [2, 0, 1, 0]
    assert charts.counts(b, []) == [0, 0, 0, 0]


def test_grouped_values_per_bucket():
    b = Buckets(T0, MIN, 3)
    pairs = [(T0, 1.0), (T0 + 2 * MIN, 3.0), (T0 + timedelta(seconds=30), 2.0),
             (T0 + 3 * MIN, 9.0)]
    assert charts.grouped(b, pairs) == [[1.0, 2.0], [], [3.0]]


def test_ending_window_ends_at_the_given_moment():
    now = T0 + timedelta(seconds=17)
    b = Buckets.ending(now, timedelta(hours=1), 24)
    assert b.end == now and b.start == now - timedelta(days=1) and b.count == 24


def test_spanning_cuts_a_lifetime_into_equal_whole_microsecond_buckets():
    b = Buckets.spanning(T0, T0 + timedelta(seconds=10), 3)
    assert b.width == timedelta(microseconds=3_333_334)  # rounded up: the end is inside
    assert b.end >= T0 + timedelta(seconds=10)
    assert b.index(T0 + timedelta(seconds=10) - timedelta(microseconds=1)) == 2


def test_spanning_an_instant_still_has_a_width():
    b = Buckets.spanning(T0, T0, 40)
    assert b.width > timedelta(0) and b.end - b.start >= charts.MIN_SPAN
    assert b.index(T0) == 0


# -- series ------------------------------------------------------------------------------------

def test_cumulative():
    assert cumulative([1, 0, 2, 0]) == [1, 1, 3, 3]
    assert cumulative([0.5, 0.25]) == [0.5, 0.75]
    assert cumulative([]) == []


@pytest.mark.parametrize("values, p, expected", [
    ([1, 2, 3, 4, 5], 50, 3),
    ([1, 2, 3, 4], 50, 2.5),
    ([4, 1, 3, 2], 50, 2.5),             # order does not matter
    (list(range(1, 101)), 95, 95.05),    # interpolated between the 95th and 96th
    (list(range(1, 101)), 50, 50.5),
    ([10, 20], 95, 19.5),
    ([7], 50, 7), ([7], 95, 7),          # one value is every percentile
    ([1, 2, 3], 0, 1), ([1, 2, 3], 100, 3),
])
def test_percentile(values, p, expected):
    assert percentile(values, p) == pytest.approx(expected)


def test_percentile_of_nothing_is_none():
    assert percentile([], 50) is None


# -- scales and ticks ---------------------------------------------------------------------------

def test_scale_maps_the_domain_onto_the_range():
    x = Scale(0, 100, LEFT, RIGHT)
    assert x(0) == LEFT and x(100) == RIGHT and x(50) == (LEFT + RIGHT) / 2
    y = Scale(0, 10, BOTTOM, TOP)  # upwards: 0 at the bottom
    assert y(0) == BOTTOM and y(10) == TOP


def test_scale_clamps_and_survives_an_empty_domain():
    x = Scale(0, 100, LEFT, RIGHT)
    assert x(-5) == LEFT and x(500) == RIGHT
    assert Scale(0, 0, LEFT, RIGHT)(0) == LEFT  # no division by zero
    assert Scale(3, 3, BOTTOM, TOP)(3) == BOTTOM


@pytest.mark.parametrize("top, whole, expected", [
    (200, True, [0, 50, 100, 150, 200]),
    (10, True, [0, 5, 10]),
    (7, True, [0, 2, 4, 6, 8]),
    (1, True, [0, 1]),
    (3, True, [0, 1, 2, 3]),
    (0.0123, False, [0, 0.005, 0.01, 0.015]),
    (8.4, False, [0, 5, 10]),
    (0, False, [0, 1]),            # nothing to show: still an axis
])
def test_value_ticks_are_nice_and_reach_the_top(top, whole, expected):
    ticks = value_ticks(top, whole=whole)
    assert ticks == pytest.approx(expected)
    assert ticks[0] == 0 and ticks[-1] >= top


@pytest.mark.parametrize("span, expected", [
    (240, [0, 60, 120, 180, 240]),
    (3600, [0, 900, 1800, 2700, 3600]),
    (10, [0, 2, 4, 6, 8, 10]),
    (0.5, [0]),
    (0, [0]),
])
def test_time_ticks_use_clock_steps_within_the_span(span, expected):
    assert time_ticks(span) == expected


def test_ago_ticks_count_back_from_the_end():
    b = Buckets(T0, 5 * MIN, 12)
    ticks = charts.ago_ticks(b, 3)
    assert [t.value for t in ticks] == [3600, 2700, 1800, 900, 0]
    assert ticks[0].pos == LEFT and ticks[-1].pos == RIGHT


# -- charts ---------------------------------------------------------------------------------------

def test_line_chart_starts_at_the_origin_and_ends_at_the_last_point():
    chart = charts.line_chart([0, 30, 60], [0, 5, 10], x_max=60, y_top=10, whole=True)
    points = _coords(chart.points)
    assert points[0] == (LEFT, BOTTOM) and points[-1] == (RIGHT, TOP)
    assert (chart.last_x, chart.last_y) == (RIGHT, TOP)
    area = _coords(chart.area)
    assert area[0] == (LEFT, BOTTOM) and area[-1] == (RIGHT, BOTTOM)  # closed on the axis
    assert [t.value for t in chart.frame.y_ticks] == [0, 5, 10]
    assert [t.value for t in chart.frame.x_ticks] == [0, 15, 30, 45, 60]


def test_line_chart_of_one_point_and_of_none():
    one = charts.line_chart([0], [0], x_max=0, y_top=0)
    assert _coords(one.points) == [(LEFT, BOTTOM)]
    none = charts.line_chart([], [], x_max=0, y_top=0)
    assert _coords(none.points) == [(LEFT, BOTTOM)]


def _buckets(n=4):
    return Buckets(T0, MIN, n)


def test_batch_charts_cumulate_counts_and_spend():
    result = charts.batch_charts(_buckets(), {0: (2, 0.02), 2: (1, 0.01)}, total=5)
    assert (result.done, result.total, result.spent) == (3, 5, pytest.approx(0.03))
    assert not result.empty
    # The origin, then one point per bucket end: 2, 2, 3, 3 finished.
    ys = [y for _, y in _coords(result.finished.points)]
    top = result.finished.frame.y_ticks[-1].value
    assert top >= 5  # the axis reaches the batch's total
    y = Scale(0, top, BOTTOM, TOP)
    assert ys == [y(0), y(2), y(2), y(3), y(3)]
    assert [s.finished for s in result.steps] == [2, 1]
    assert [s.done for s in result.steps] == [2, 3]
    assert [s.at_s for s in result.steps] == [60, 180]
    assert [s.spent for s in result.steps] == [pytest.approx(0.02), pytest.approx(0.03)]
    assert result.spend.frame.y_ticks[-1].value >= 0.03


def test_batch_charts_with_nothing_finished_are_empty():
    result = charts.batch_charts(_buckets(), {}, total=5)
    assert result.empty and result.finished is None and result.spend is None
    assert result.steps == [] and result.done == 0


def test_batch_charts_with_one_article_in_one_bucket():
    result = charts.batch_charts(Buckets(T0, MIN, 1), {0: (1, 0.0)}, total=1)
    assert result.done == 1 and len(result.steps) == 1
    assert _coords(result.finished.points) == [(LEFT, BOTTOM), (RIGHT, TOP)]
    # Free articles: a flat spend line on an axis that still has a top.
    assert result.spent == 0 and result.spend.frame.y_ticks[-1].value > 0


def _finished(minutes_after: float, failed=False, model="m1", seconds=None) -> Finished:
    return Finished(T0 + timedelta(minutes=minutes_after), failed, model, seconds)


def test_window_charts_count_written_failed_and_latency_per_bucket():
    b = Buckets(T0, 5 * MIN, 3)
    articles = [_finished(1, seconds=2.0), _finished(2, seconds=4.0),
                _finished(3, failed=True, model="m2"), _finished(11, seconds=10.0),
                _finished(-1, seconds=99.0), _finished(15, failed=True)]  # the last two: outside
    w = charts.window_charts("hour", b, articles, tick_every=1)
    assert (w.finished, w.failed, w.peak, w.timed) == (4, 1, 3, 3)
    assert [(r.written, r.failed) for r in w.rows] == [(2, 1), (0, 0), (1, 0)]
    assert [r.p50 for r in w.rows] == [3.0, None, 10.0]
    assert w.rows[0].p95 == pytest.approx(3.9)
    assert w.p50_all == 4.0 and w.p95_all == pytest.approx(9.4)
    assert [r.start for r in w.rows] == b.edges()[:-1]
    # The p50 line has a gap where the middle bucket has no value: two moves, no line.
    assert w.p50.path.count("M") == 2 and "L" not in w.p50.path
    assert len(w.p50.dots) == 2
    # Failures per model: only models that failed, with what finished of theirs.
    assert [(r.name, r.value, r.of) for r in w.models.rows] == [("m2", 1, 1)]
    # Stacked bars: the failed part sits on the written part.
    first = w.bars[0]
    assert first.height > 0 and first.extra_height > 0
    assert first.extra_y + first.extra_height == pytest.approx(first.y)
    assert w.bars[1].height == 0 and w.bars[1].extra_height == 0


def test_window_charts_of_an_empty_window():
    w = charts.window_charts("day", Buckets(T0, timedelta(hours=1), 24), [], tick_every=6)
    assert w.empty and w.finished == w.failed == w.peak == w.timed == 0
    assert w.p50_all is None and w.p50.path == "" and w.models.rows == []
    assert len(w.rows) == 24 and all(r.p50 is None for r in w.rows)
    assert [t.value for t in w.throughput.x_ticks] == [86400, 64800, 43200, 21600, 0]


def test_models_are_ordered_by_failures_and_limited():
    chart = charts.hbar_chart([(f"m{n}", n, 10) for n in range(1, 12)], limit=8)
    assert [r.name for r in chart.rows] == [f"m{n}" for n in range(11, 3, -1)]
    assert chart.rows[0].width > chart.rows[-1].width > 0
    assert chart.height == 8 * charts.ROW_HEIGHT + 4


def test_points_are_plain_numbers():
    """What goes into the SVG attributes is digits, dots, commas and spaces only."""
    chart = charts.line_chart([0, 1.2345678], [0, 1 / 3], x_max=2, y_top=1)
    assert re.fullmatch(r"[0-9., ]+", chart.points)
