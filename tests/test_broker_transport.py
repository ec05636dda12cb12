"""The broker transport (webapp/broker.py): kombu's Redis transport with one client object per
channel. Real Redis; the session's workers use the same transport for every task."""
from __future__ import annotations

import kombu

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
