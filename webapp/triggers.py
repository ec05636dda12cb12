"""Database triggers, in the SQL of each dialect Pressroom runs on.

`generated_version`: an article that goes from running (or cancelling) to succeeded keeps
its new body as its next version, in the same statement. lifecycle.complete is then one
UPDATE, with no version-number look-up and no INSERT of its own, and a stored body always
has its version. Migration 0010 creates it; models.py attaches it to create_all.
Written once here: changing it means a new migration that drops and re-creates it.
"""
from __future__ import annotations

_INSERT = """
INSERT INTO article_versions (article_id, number, body, source, created_by, created_at)
VALUES (NEW.id,
        COALESCE((SELECT MAX(v.number) FROM article_versions v WHERE v.article_id = NEW.id), 0)
        + 1,
        NEW.body, 'generated', NULL, NEW.finished_at)"""
_WHEN = "OLD.status IN ('running', 'cancelling') AND NEW.status = 'succeeded'"

CREATE = {
    "sqlite": [f"""
CREATE TRIGGER generated_version AFTER UPDATE OF status ON articles
FOR EACH ROW WHEN {_WHEN}
BEGIN {_INSERT}; END"""],
    "postgresql": [f"""
CREATE OR REPLACE FUNCTION generated_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN {_INSERT}; RETURN NULL; END $$""", f"""
CREATE TRIGGER generated_version AFTER UPDATE OF status ON articles
FOR EACH ROW WHEN ({_WHEN}) EXECUTE FUNCTION generated_version()"""],
}
DROP = {
    "sqlite": ["DROP TRIGGER IF EXISTS generated_version"],
    "postgresql": ["DROP TRIGGER IF EXISTS generated_version ON articles",
                   "DROP FUNCTION IF EXISTS generated_version()"],
}
