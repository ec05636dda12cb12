"""Talking to the broker: the transport (webapp/broker.py), kombu's Redis transport with one
client object per channel, and a dispatch's messages written in batches. Real Redis; the
session's workers use the same transport for every task."""
from __future__ import annotations

import uuid

import kombu

from tests.test_poll_cost import count_redis_round_trips
from webapp.broker import Transport


def test_the_app_sends_and_receives_through_it(celery_app):
    with celery_app.connection_for_write() as conn:
        assert isinstance(conn.transport, Transport)


def test_a_tls_broker_keeps_kombus_own_transport(make_app):
    other = make_app(CELERY_BROKER_URL="rediss://127.0.0.1:1/0")
    assert not other.extensions["celery"].conf.broker_transport


def test_one_client_serves_every_command_until_its_pool_is_replaced(redis_url):
    queue = kombu.Queue("pressroom-transport-test", routing_key="pressroom-transport-test")
    with kombu.Connection(redis_url, transport=Transport) as conn:
        channel = conn.default_channel
        first = channel._create_client()
        assert channel._create_client() is first  # kombu's own builds one per command
        # Published, received, acknowledged: each through that one client.
        conn.SimpleQueue(queue).put({"n": 1})
        message = conn.SimpleQueue(queue).get(timeout=5)
        assert message.payload == {"n": 1}
        message.ack()
        assert channel._create_client() is first
        assert not channel.client.hlen(channel.unacked_key)  # the ack reached Redis
        # A reconnect replaces the pool: never a client on the closed one.
        channel._disconnect_pools()
        fresh = channel._create_client()
        assert fresh is not first and fresh.connection_pool is channel.pool
        assert fresh.ping()


def test_a_dispatch_writes_its_messages_a_batch_at_a_time(app, monkeypatch):
    from webapp.generation import dispatch
    n = dispatch.PUBLISH_BATCH + 100
    # No such articles: the workers find nothing to write and end each task at once.
    rows = [(10_000_000 + i, str(uuid.uuid4())) for i in range(n)]
    with app.app_context(), count_redis_round_trips(monkeypatch) as sent:
        assert dispatch.publish_articles(rows) == n
    per_trip = [command.count(b"LPUSH") for command in sent if b"LPUSH" in command]
    assert sum(per_trip) == n  # every message sent
    # The first few at once (workers start), then ever more to a round trip, not one each.
    assert per_trip == [8, 16, 32, 64, 128, 256, n - 504], per_trip
