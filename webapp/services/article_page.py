"""What an article's page shows: the article, its live text while it is being written (one
Redis round trip), and the review, regenerate and versions tools one person may use."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import redis
from flask_babel import gettext as _, lazy_gettext as _l

from ..extensions import get_redis
from ..generation import lengths, live
from ..models import Article, ArticleStatus as A, ArticleVersion, User
from . import bulk_actions, review, users


# Why an answer was flagged for review, as the article page says it.
FLAGS = {"length": _l("the answer was cut off at the length limit"),
         "content_filter": _l("the provider’s content filter stopped the answer"),
         "empty": _l("the provider returned an empty answer"),
         "refused": _l("the model refused to write it"),
         "short": _l("the answer is under half its target length")}


@dataclass
class ArticleLive:
    article: Article
    text_so_far: str
    words_so_far: Optional[int]
    live_error: bool = False

    @property
    def writing(self) -> bool:
        """Being written now: the words so far are shown, not the stored count."""
        return self.article.status in A.ACTIVE

    @property
    def unit(self) -> str:
        """What the shown length counts: "words" or "characters" (lengths.py)."""
        return self.article.length_unit or lengths.WORDS

    @property
    def flag(self) -> Optional[str]:
        flag = self.article.review_flag
        return str(FLAGS.get(flag, flag)) if flag else None

    @property
    def placeholder(self) -> Optional[str]:
        """What stands in for a body there is none of yet (or will never be)."""
        if self.article.body or self.text_so_far:
            return None
        if self.article.status == A.QUEUED:
            return _("Waiting for a worker…")
        if self.article.status == A.CANCELLED:
            return _("This article was cancelled before it was written.")
        return None


def article_live(article: Article) -> ArticleLive:
    """An article and, while it is being written, the text so far (one Redis round trip)."""
    if article.status not in A.ACTIVE:
        return ArticleLive(article, "", None)
    try:
        meta, text = live.read_article_live(get_redis(), article.task_id, article.id)
    except redis.RedisError:
        return ArticleLive(article, "", None, live_error=True)
    words = live.progress_words(meta)
    if words is None:  # no progress report yet: count the text the same way the task does
        words = lengths.measure(text, article.language or article.batch.language).count
    return ArticleLive(article, text, words)


@dataclass(frozen=True)
class VersionRow:
    version: ArticleVersion
    author: Optional[str]  # who saved it (None for the generated text)
    restorable: bool


@dataclass(frozen=True)
class ArticleTools:
    """The review, regenerate and versions panel of an article, as one person may use it."""
    reviewable: bool  # written: approve, reject and edit make sense
    can_review: bool
    can_write_again: bool
    reading_minutes: int
    versions: list[VersionRow]
    # Bulk actions done to the article (or its batch), newest first.
    bulk_history: list[bulk_actions.HistoryEntry] = field(default_factory=list)


def article_tools(user: User, article: Article) -> ArticleTools:
    versions = review.versions(article.id)
    authors = users.emails_of({v.created_by for v in versions})
    may_review = review.can_review(user)
    again = may_review and article.is_final
    return ArticleTools(
        reviewable=article.status == A.SUCCEEDED, can_review=may_review, can_write_again=again,
        reading_minutes=review.reading_minutes(article),
        versions=[VersionRow(v, authors.get(v.created_by, _("user %(id)s", id=v.created_by))
                             if v.created_by else None, again and v.body != article.body)
                  for v in versions],
        bulk_history=bulk_actions.history(article))


def article_page(user: User, article: Article) -> dict:
    """What the article page shows: the article, its batch, its live state and its tools."""
    return {"article": article, "batch": article.batch, "live": article_live(article),
            "tools": article_tools(user, article)}


def article_poll(user: User, article: Article) -> dict:
    """What a poll of a written article shows; once it is final the tools come along once."""
    return {"article": article, "live": article_live(article),
            "tools": article_tools(user, article) if article.is_final else None}
