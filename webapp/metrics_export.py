"""/metrics as prometheus-client writes it, from the totals kept in Redis.

Every process adds its observations to Redis hashes (webapp/metrics.py), so there is no
in-process registry worth exporting: a collector reads the hashes and the gauges when
Prometheus scrapes, and prometheus-client does the formatting. It is registered on a private
registry, so the library's default process and platform metrics of whichever web process
answers the scrape are not mixed in with the installation-wide figures.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import redis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (CounterMetricFamily, GaugeMetricFamily,
                                    HistogramMetricFamily, Metric)
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from . import metrics
from .extensions import db, get_redis
from .models import Article, ArticleStatus

NAMESPACE = "pressroom_"
CONTENT_TYPE = CONTENT_TYPE_LATEST

HELP = {
    "batches_finished_total": "Batches that reached a final status, by status.",
    "reconciler_actions_total": "Repairs made by the reconciler, by action.",
    "provider_errors_total": "Failed provider requests, by kind of error.",
    "generation_retries_total": "Articles sent back to the queue after an error, by kind.",
    "provider_request_seconds": "Time from request to the end of the stream, per model.",
    "provider_completion_tokens": "Completion tokens of each successful request, per model.",
    "batch_duration_seconds": "Time from a batch's start to its final status.",
    "publications_total": "Publications to WordPress that ended a task, by outcome.",
    "publish_errors_total": "Failed requests to WordPress sites, by kind of error.",
}


def _label_names(label_sets) -> list[str]:
    # One call site writes one set of label names; should two ever differ, the union is
    # exported with "" for the missing ones, which Prometheus reads as the label's absence.
    return sorted({name for labels in label_sets for name, _ in labels})


def _values(names: list[str], labels: metrics.Labels) -> list[str]:
    given = dict(labels)
    return [given.get(name, "") for name in names]


class PressroomCollector:
    """Counters and histograms from Redis plus gauges of the database and the queues."""

    def __init__(self, queues: Sequence[str]):
        self.queues = tuple(queues)

    def collect(self) -> Iterator[Metric]:
        yield from self._database()
        try:
            snap = metrics.read_all(get_redis(), self.queues)
            redis_up = 1
        except redis.RedisError:
            snap, redis_up = metrics.Snapshot(), 0
        yield GaugeMetricFamily(NAMESPACE + "redis_up", "Whether Redis answered.", redis_up)
        queues = GaugeMetricFamily(NAMESPACE + "queue_length", "Messages waiting per queue.",
                                   labels=["queue"])
        for q, n in snap.queues.items():
            queues.add_metric([q], n)
        yield queues
        for name, per_label in sorted(snap.counters.items()):
            names = _label_names(per_label)
            family = CounterMetricFamily(NAMESPACE + name, HELP.get(name, name), labels=names)
            for labels, value in sorted(per_label.items()):
                family.add_metric(_values(names, labels), value)
            yield family
        for name, per_label in snap.histograms.items():
            yield self._histogram(name, per_label)

    def _database(self) -> Iterator[Metric]:
        try:
            by_status = dict(db.session.execute(
                select(Article.status, func.count()).group_by(Article.status)).all())
            up = 1
        except SQLAlchemyError:
            # Redis figures are still worth a scrape; a 500 would lose them all.
            db.session.rollback()
            by_status, up = None, 0
        yield GaugeMetricFamily(NAMESPACE + "database_up", "Whether the database answered.", up)
        if by_status is not None:
            articles = GaugeMetricFamily(NAMESPACE + "articles", "Articles by status.",
                                         labels=["status"])
            for status in ArticleStatus.ALL:
                articles.add_metric([status], by_status.get(status, 0))
            yield articles

    @staticmethod
    def _histogram(name: str, per_label: dict) -> HistogramMetricFamily:
        names = _label_names(per_label)
        family = HistogramMetricFamily(NAMESPACE + name, HELP.get(name, name), labels=names)
        for labels, fields in sorted(per_label.items()):
            running, buckets = 0.0, []
            for bound in metrics.bucket_bounds(name):
                running += fields.get(bound, 0.0)
                buckets.append((bound, running))
            family.add_metric(_values(names, labels), buckets, round(fields.get("_sum", 0.0), 6))
        return family


def render(queues: Sequence[str]) -> bytes:
    """The Prometheus text exposition of everything /metrics shows."""
    registry = CollectorRegistry()
    registry.register(PressroomCollector(queues))
    return generate_latest(registry)
