"""Unbound extension instances, initialised by the app factory (no app at import time),
and the shared Redis client, made once per app on first use."""
from __future__ import annotations

import redis
from flask import current_app
from flask_babel import Babel
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy.orm import DeclarativeBase


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
login_manager = LoginManager()
csrf = CSRFProtect()
# Interface language: configured by the factory with webapp.i18n's selector.
babel = Babel()
# Storage (Redis) and limits are configured by the factory; see register_extensions.
limiter = Limiter(key_func=get_remote_address)


def get_redis() -> redis.Redis:
    """The app's Redis client; timeouts are short so a dead Redis fails a request fast."""
    client = current_app.extensions.get("pressroom_redis")
    if client is None:
        client = redis.Redis.from_url(
            current_app.config["REDIS_URL"],
            socket_timeout=current_app.config.get("REDIS_SOCKET_TIMEOUT", 2.0),
            socket_connect_timeout=current_app.config.get("REDIS_SOCKET_TIMEOUT", 2.0),
            retry_on_timeout=False,
            health_check_interval=30,
        )
        current_app.extensions["pressroom_redis"] = client
    return client
