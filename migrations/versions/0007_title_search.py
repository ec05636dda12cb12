"""title search index

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 19:30:00

The dashboard's text search looks for a word anywhere in article titles. Without an index
that reads every title (hundreds of milliseconds at a million articles). SQLite gets an
FTS5 table with the trigram tokenizer, kept in step by triggers (its LIKE uses the
index); PostgreSQL a pg_trgm GIN index on lower(title).
"""
from alembic import op


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        op.execute("CREATE VIRTUAL TABLE article_titles_fts USING fts5("
                   "title, content='articles', content_rowid='id', tokenize='trigram')")
        op.execute("CREATE TRIGGER article_titles_fts_insert AFTER INSERT ON articles BEGIN "
                   "INSERT INTO article_titles_fts(rowid, title) VALUES (new.id, new.title); END")
        op.execute("CREATE TRIGGER article_titles_fts_delete AFTER DELETE ON articles BEGIN "
                   "INSERT INTO article_titles_fts(article_titles_fts, rowid, title) "
                   "VALUES ('delete', old.id, old.title); END")
        op.execute("CREATE TRIGGER article_titles_fts_update AFTER UPDATE OF title ON articles "
                   "BEGIN INSERT INTO article_titles_fts(article_titles_fts, rowid, title) "
                   "VALUES ('delete', old.id, old.title); "
                   "INSERT INTO article_titles_fts(rowid, title) VALUES (new.id, new.title); END")
        op.execute("INSERT INTO article_titles_fts(article_titles_fts) VALUES ('rebuild')")
    elif dialect == "postgresql":
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
        op.execute("CREATE INDEX ix_articles_title_trgm ON articles "
                   "USING gin (lower(title) gin_trgm_ops)")


def downgrade():
    dialect = op.get_bind().dialect.name
    if dialect == "sqlite":
        for name in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS article_titles_fts_{name}")
        op.execute("DROP TABLE IF EXISTS article_titles_fts")
    elif dialect == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_articles_title_trgm")
