"""Celery's Redis transport, one client object per channel instead of one per command.

kombu's Redis channel builds a new redis-py client object (its table of response callbacks
and all) for every command it sends outside the event loop: each message received (its
entry in the unacked set), each acknowledgement and each message published. A client is a
thin handle on the channel's connection pool and is safe to share between threads, so
this channel keeps one for as long as its pool lives. Named by `broker_transport` in
celeryconfig.py; everything else is kombu's.
"""
from __future__ import annotations

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _shared_client = None

    def _create_client(self, asynchronous=False):
        if asynchronous:
            return super()._create_client(asynchronous=True)
        client = self._shared_client
        # A new pool (after a reconnect) gets a new client: never one on a closed pool.
        if client is None or client.connection_pool is not self.pool:
            client = self._shared_client = super()._create_client()
        return client


class Transport(kombu_redis.Transport):
    Channel = Channel
