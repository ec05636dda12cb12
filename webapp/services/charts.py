"""Charts as numbers an SVG template can draw: fixed time buckets, cumulative series,
percentiles, scales to a viewBox, nice axis ticks.

Pure: no database, no Flask, no words. The services (activity.py) read the data and hand
it here; the templates get ready values (point strings, tick positions) and only format
them (number, money, duration) and put the words around them.

Every chart is drawn in the same viewBox, WIDTH × HEIGHT user units, with its plot area
inside the margins that leave room for the axis labels. Empty and one-point series are
drawn without dividing by zero: a scale over nothing maps everything to its start.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Iterable, Optional, Sequence

WIDTH, HEIGHT = 600, 200
# The plot area: room for the y labels on the left, the x labels below, and half an x
# label on the right (the last tick's label is centred on the right edge).
LEFT, RIGHT, TOP, BOTTOM = 64, 568, 12, 172

# A batch whose articles all finished at once still gets a time axis.
MIN_SPAN = timedelta(seconds=1)

# Steps of a time axis, in seconds: the ones a clock reads well.
TIME_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600,
              43200, 86400, 172800, 604800)


# -- buckets and series -------------------------------------------------------------------

@dataclass(frozen=True)
class Buckets:
    """`count` windows of `width` from `start`, each [its start, the next start)."""
    start: datetime
    width: timedelta
    count: int

    @classmethod
    def spanning(cls, start: datetime, end: datetime, count: int) -> "Buckets":
        """`start`..`end` cut into `count` equal windows (at least MIN_SPAN in all)."""
        span = max(end - start, MIN_SPAN)
        # Whole microseconds, so the edges are exact and every moment finds one bucket.
        width = timedelta(microseconds=max(1, math.ceil(span / timedelta(microseconds=1)
                                                        / count)))
        return cls(start, width, count)

    @classmethod
    def ending(cls, end: datetime, width: timedelta, count: int) -> "Buckets":
        """The last `count` windows of `width` before `end` (e.g. 12 of 5 minutes)."""
        return cls(end - width * count, width, count)

    @property
    def end(self) -> datetime:
        return self.start + self.width * self.count

    @property
    def span_s(self) -> float:
        return (self.width * self.count).total_seconds()

    def edges(self) -> list[datetime]:
        """The `count` + 1 boundaries, from start to end."""
        return [self.start + self.width * k for k in range(self.count + 1)]

    def index(self, moment: Optional[datetime]) -> Optional[int]:
        """The bucket a moment falls in; None outside [start, end)."""
        if moment is None or moment < self.start or moment >= self.end:
            return None
        return (moment - self.start) // self.width


def counts(buckets: Buckets, moments: Iterable[Optional[datetime]]) -> list[int]:
    """How many moments fall in each bucket (zero for an empty one; others ignored)."""
    out = [0] * buckets.count
    for moment in moments:
        k = buckets.index(moment)
        if k is not None:
            out[k] += 1
    return out


def grouped(buckets: Buckets, pairs: Iterable[tuple[Optional[datetime], float]]
            ) -> list[list[float]]:
    """The values of (moment, value) pairs, per bucket."""
    out: list[list[float]] = [[] for _ in range(buckets.count)]
    for moment, value in pairs:
        k = buckets.index(moment)
        if k is not None:
            out[k].append(value)
    return out


def cumulative(values: Sequence[float]) -> list[float]:
    """Running totals: [1, 0, 2] → [1, 1, 3]."""
    total, out = 0, []
    for value in values:
        total += value
        out.append(total)
    return out


def percentile(values: Sequence[float], p: float) -> Optional[float]:
    """The p-th percentile (0..100), interpolated between the closest ranks (as numpy's
    default); None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * p / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


# -- scales and ticks ---------------------------------------------------------------------

@dataclass(frozen=True)
class Scale:
    """Values lo..hi onto positions start..stop (a degenerate domain maps to start)."""
    lo: float
    hi: float
    start: float
    stop: float

    def __call__(self, value: float) -> float:
        if self.hi == self.lo:
            return float(self.start)
        value = min(max(value, self.lo), self.hi)
        return round(self.start + (value - self.lo) / (self.hi - self.lo)
                     * (self.stop - self.start), 1)


@dataclass(frozen=True)
class Tick:
    value: float
    pos: float


def nice_step(rough: float) -> float:
    """The smallest 1, 2 or 5 × 10ⁿ at least `rough` (> 0)."""
    base = 10 ** math.floor(math.log10(rough))
    for m in (1, 2, 5, 10):
        if rough <= m * base * (1 + 1e-9):
            return m * base
    return 10 * base  # pragma: no cover (the loop always returns)


def value_ticks(top: float, count: int = 4, whole: bool = False) -> list[float]:
    """Ticks from 0 to the first nice value at or above `top`, about `count` steps;
    `whole`: whole numbers only (a count of articles)."""
    if not top or top <= 0 or not math.isfinite(top):
        return [0, 1]
    step = nice_step(top / count)
    if whole:
        step = max(1, math.ceil(step))
    n = math.ceil(top / step - 1e-9)
    return [round(i * step, 12) for i in range(n + 1)]


def time_ticks(span_s: float, count: int = 5) -> list[float]:
    """Seconds from 0 to at most `span_s`, in a step a clock reads well."""
    if span_s <= 0:
        return [0]
    step = next((s for s in TIME_STEPS if s >= span_s / count), TIME_STEPS[-1])
    return [i * step for i in range(int(span_s // step + 1e-9) + 1)]


def _y_scale(top: float) -> Scale:
    return Scale(0, top, BOTTOM, TOP)


def _y_ticks(ticks: list[float]) -> tuple[Scale, list[Tick]]:
    scale = _y_scale(ticks[-1])
    return scale, [Tick(v, scale(v)) for v in ticks]


def _points(pairs: Iterable[tuple[float, float]]) -> str:
    return " ".join(f"{x:g},{y:g}" for x, y in pairs)


# -- charts ---------------------------------------------------------------------------------

@dataclass(frozen=True)
class Frame:
    """What every chart template draws around its marks."""
    x_ticks: list[Tick]
    y_ticks: list[Tick]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    right: int = RIGHT
    top: int = TOP
    bottom: int = BOTTOM

    @property
    def view_box(self) -> str:
        return f"0 0 {self.width} {self.height}"

    @property
    def label_y(self) -> int:
        """Where the x labels sit."""
        return self.bottom + 18


@dataclass(frozen=True)
class LineChart:
    """A cumulative series over time: a polyline, the area under it, its last point."""
    frame: Frame
    points: str
    area: str
    last_x: float
    last_y: float


def line_chart(xs: Sequence[float], ys: Sequence[float], x_max: float, y_top: float,
               whole: bool = False) -> LineChart:
    """xs in seconds from the start (0..x_max), ys from 0 up."""
    x = Scale(0, x_max, LEFT, RIGHT)
    y, y_ticks = _y_ticks(value_ticks(max([y_top, *ys]), whole=whole))
    pairs = [(x(a), y(b)) for a, b in zip(xs, ys)] or [(float(LEFT), float(BOTTOM))]
    area = [(pairs[0][0], float(BOTTOM)), *pairs, (pairs[-1][0], float(BOTTOM))]
    frame = Frame([Tick(t, x(t)) for t in time_ticks(x_max)], y_ticks)
    return LineChart(frame, _points(pairs), _points(area), pairs[-1][0], pairs[-1][1])


@dataclass(frozen=True)
class Bar:
    """One bucket's bar: `value` from the axis up, `extra` stacked on it."""
    x: float
    width: float
    y: float
    height: float
    extra_y: float
    extra_height: float


def _slots(n: int) -> tuple[float, float]:
    """(slot width, bar width) for n buckets across the plot."""
    slot = (RIGHT - LEFT) / max(n, 1)
    return slot, round(slot * 0.8, 1)


def bar_chart(values: Sequence[float], extras: Sequence[float],
              x_ticks: list[Tick]) -> tuple[Frame, list[Bar]]:
    """Stacked bars per bucket: values (e.g. written) with extras (e.g. failed) on top."""
    totals = [v + e for v, e in zip(values, extras)]
    y, y_ticks = _y_ticks(value_ticks(max(totals, default=0), whole=True))
    slot, width = _slots(len(values))
    bars = []
    for k, (value, extra) in enumerate(zip(values, extras)):
        base, mid, top = y(0), y(value), y(value + extra)
        bars.append(Bar(round(LEFT + k * slot + (slot - width) / 2, 1), width,
                        mid, round(base - mid, 1), top, round(mid - top, 1)))
    return Frame(x_ticks, y_ticks), bars


@dataclass(frozen=True)
class Dot:
    x: float
    y: float
    value: float


@dataclass(frozen=True)
class Series:
    """A line with gaps where a bucket has no value: an SVG path, and a dot per value
    (a lone value between gaps has no segment to show it otherwise)."""
    path: str
    dots: list[Dot] = field(default_factory=list)


def gapped_series(values: Sequence[Optional[float]], y: Scale) -> Series:
    """A value per bucket (None: none) at the buckets' centres."""
    slot, _ = _slots(len(values))
    parts, dots, drawing = [], [], False
    for k, value in enumerate(values):
        if value is None:
            drawing = False
            continue
        cx, cy = round(LEFT + (k + 0.5) * slot, 1), y(value)
        parts.append(f"{'L' if drawing else 'M'}{cx:g},{cy:g}")
        dots.append(Dot(cx, cy, value))
        drawing = True
    return Series(" ".join(parts), dots)


def latency_chart(p50: Sequence[Optional[float]], p95: Sequence[Optional[float]],
                  x_ticks: list[Tick]) -> tuple[Frame, Series, Series]:
    top = max((v for v in (*p50, *p95) if v is not None), default=0)
    y, y_ticks = _y_ticks(value_ticks(top))
    return Frame(x_ticks, y_ticks), gapped_series(p50, y), gapped_series(p95, y)


def ago_ticks(buckets: Buckets, every: int) -> list[Tick]:
    """Ticks at every `every`-th edge, valued in seconds before the window's end."""
    x = Scale(0, buckets.count, LEFT, RIGHT)
    return [Tick((buckets.width * (buckets.count - k)).total_seconds(), x(k))
            for k in range(0, buckets.count + 1, every)]


@dataclass(frozen=True)
class HBar:
    """One row of a horizontal bar chart."""
    name: str
    value: int
    of: int
    y: float
    width: float


ROW_HEIGHT = 26
NAME_WIDTH = 200  # the names' column, left of the bars


@dataclass(frozen=True)
class HBarChart:
    rows: list[HBar]
    height: int
    bar_left: int = NAME_WIDTH
    bar_height: int = ROW_HEIGHT - 8
    width: int = WIDTH

    @property
    def view_box(self) -> str:
        return f"0 0 {self.width} {self.height}"


def hbar_chart(items: Sequence[tuple[str, int, int]], limit: int = 8) -> HBarChart:
    """(name, value, out of) rows, largest value first, at most `limit`; bars scaled to
    the largest value (leaving room on the right for the figures)."""
    ordered = sorted(items, key=lambda item: (-item[1], item[0]))[:limit]
    x = Scale(0, max((v for _, v, _ in ordered), default=0), 0, WIDTH - NAME_WIDTH - 120)
    rows = [HBar(name, value, of, 4 + k * ROW_HEIGHT, max(x(value), 1.0 if value else 0.0))
            for k, (name, value, of) in enumerate(ordered)]
    return HBarChart(rows, max(len(rows), 1) * ROW_HEIGHT + 4)


# -- the pages' charts ----------------------------------------------------------------------

@dataclass(frozen=True)
class BatchStep:
    """One bucket of a batch's lifetime in the text alternative: when it ended (seconds
    from the start), what finished in it, and the running totals."""
    at_s: float
    finished: int
    done: int
    spent: float


@dataclass(frozen=True)
class BatchCharts:
    """A batch's articles finished over time and spend over time (both cumulative)."""
    total: int
    done: int
    spent: float
    span_s: float
    finished: Optional[LineChart] = None  # None: nothing finished yet
    spend: Optional[LineChart] = None
    steps: list[BatchStep] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return self.done == 0


def batch_charts(buckets: Buckets, per_bucket: dict[int, tuple[int, float]],
                 total: int) -> BatchCharts:
    """From {bucket: (articles finished, their cost)} over a batch's lifetime."""
    finished = [per_bucket.get(k, (0, 0.0))[0] for k in range(buckets.count)]
    costs = [float(per_bucket.get(k, (0, 0.0))[1] or 0.0) for k in range(buckets.count)]
    done, spent = cumulative(finished), cumulative(costs)
    span = buckets.span_s
    if not done or not done[-1]:
        return BatchCharts(total, 0, spent[-1] if spent else 0.0, span)
    ends = [buckets.width.total_seconds() * (k + 1) for k in range(buckets.count)]
    xs = [0.0, *ends]
    steps = [BatchStep(ends[k], finished[k], done[k], spent[k])
             for k in range(buckets.count) if finished[k]]
    return BatchCharts(total, done[-1], spent[-1], span,
                       finished=line_chart(xs, [0, *done], span, total, whole=True),
                       spend=line_chart(xs, [0.0, *spent], span, spent[-1]),
                       steps=steps)


@dataclass(frozen=True)
class Finished:
    """An article that finished (written or failed), as the system charts count it;
    `seconds`: how long it took to write, when that is a provider's latency (one request
    that succeeded), else None."""
    at: datetime
    failed: bool
    model: str
    seconds: Optional[float] = None


@dataclass(frozen=True)
class WindowRow:
    """One bucket of a window in the text alternative."""
    start: datetime
    written: int
    failed: int
    p50: Optional[float]
    p95: Optional[float]


@dataclass(frozen=True)
class WindowCharts:
    """Throughput, provider latency and failures per model over one window."""
    name: str  # "hour" or "day": which words the template uses
    buckets: Buckets
    throughput: Frame
    bars: list[Bar]
    latency: Frame
    p50: Series
    p95: Series
    models: HBarChart
    rows: list[WindowRow]
    finished: int
    failed: int
    peak: int
    timed: int  # articles whose latency is counted
    p50_all: Optional[float]
    p95_all: Optional[float]

    @property
    def empty(self) -> bool:
        return self.finished == 0


def window_charts(name: str, buckets: Buckets, articles: Iterable[Finished],
                  tick_every: int) -> WindowCharts:
    """The system page's charts of one window, from the articles finished in it (others
    are left out)."""
    inside = [(buckets.index(a.at), a) for a in articles]
    inside = [(k, a) for k, a in inside if k is not None]
    written, failed = [0] * buckets.count, [0] * buckets.count
    seconds: list[list[float]] = [[] for _ in range(buckets.count)]
    per_model: dict[str, list[int]] = {}
    for k, a in inside:
        (failed if a.failed else written)[k] += 1
        if a.seconds is not None:
            seconds[k].append(a.seconds)
        tally = per_model.setdefault(a.model, [0, 0])
        tally[0] += a.failed
        tally[1] += 1
    p50 = [percentile(s, 50) for s in seconds]
    p95 = [percentile(s, 95) for s in seconds]
    x_ticks = ago_ticks(buckets, tick_every)
    throughput, bars = bar_chart(written, failed, x_ticks)
    latency, s50, s95 = latency_chart(p50, p95, x_ticks)
    every = [s for per in seconds for s in per]
    rows = [WindowRow(start, written[k], failed[k], p50[k], p95[k])
            for k, start in enumerate(buckets.edges()[:-1])]
    return WindowCharts(
        name, buckets, throughput, bars, latency, s50, s95,
        hbar_chart([(m, f, n) for m, (f, n) in per_model.items() if f]), rows,
        finished=len(inside), failed=sum(failed),
        peak=max((w + f for w, f in zip(written, failed)), default=0), timed=len(every),
        p50_all=percentile(every, 50), p95_all=percentile(every, 95))
