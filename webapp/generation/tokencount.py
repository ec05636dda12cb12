"""Counting prompt tokens with tiktoken, offline.

tiktoken caches a downloaded encoding under TIKTOKEN_CACHE_DIR, named by the SHA-1 of its
URL, and checks its hash when it reads it. We put the shipped files there first, so
tiktoken never needs the network.
"""
from __future__ import annotations

import gzip
import hashlib
import os
import threading
from pathlib import Path
from typing import Optional

import tiktoken

_DATA = Path(__file__).parent / "data" / "tiktoken"
_URL = "https://openaipublic.blob.core.windows.net/encodings/{name}.tiktoken"
_SHIPPED = ("cl100k_base", "o200k_base")
_lock = threading.Lock()
_ready = False


def _prepare_cache() -> None:
    global _ready
    with _lock:
        if _ready:
            return
        cache = Path(os.environ.get("TIKTOKEN_CACHE_DIR") or
                     Path(__file__).resolve().parents[2] / "instance" / "tiktoken-cache")
        cache.mkdir(parents=True, exist_ok=True)
        os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
        for name in _SHIPPED:
            target = cache / hashlib.sha1(_URL.format(name=name).encode()).hexdigest()
            if not target.exists():
                tmp = target.with_suffix(".tmp")
                tmp.write_bytes(gzip.decompress((_DATA / f"{name}.tiktoken.gz").read_bytes()))
                tmp.replace(target)
        _ready = True


def encoding_for(model: str) -> Optional[tiktoken.Encoding]:
    """The model's encoding, or None when tiktoken does not know the model."""
    _prepare_cache()
    try:
        enc = tiktoken.encoding_for_model(model)
    except KeyError:
        return None
    return enc if enc.name in _SHIPPED else None


def count_chat_tokens(model: str, messages: list[dict]) -> tuple[int, bool]:
    """Prompt tokens of a chat request, and whether the count is exact (tiktoken) or a
    rough estimate (about four characters a token) for a model tiktoken does not know."""
    enc = encoding_for(model)
    if enc is None:
        chars = sum(len(m["content"]) for m in messages)
        return chars // 4 + 4 * len(messages) + 3, False
    # Each message costs a few tokens of framing on top of its content (OpenAI's cookbook).
    total = 3
    for message in messages:
        total += 3 + len(enc.encode(message["content"], disallowed_special=()))
        total += len(enc.encode(message["role"]))
    return total, True
