"""index for the review queue and the nav's count of articles awaiting review

Every full page counts the articles awaiting review (written, neither approved nor rejected:
review_status `needs_review`, or NULL for articles written before reviews existed), and the
review queue lists them. Without an index each count reads every article. review_status
leads, so that "needs_review OR NULL" is two seeks (SQLite's multi-index OR, PostgreSQL's
bitmap OR); status, review_flag (the flagged count and the queue's order) and finished_at
follow, so both are answered from the index alone.

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-20 09:00:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0014'
down_revision = '0013'
branch_labels = None
depends_on = None


def upgrade():
    # A plain CREATE INDEX, not a batch (copy-and-move) table: on SQLite that would drop
    # the generated_version trigger of migration 0010 with the old table.
    op.create_index('ix_articles_review_queue', 'articles',
                    ['review_status', 'status', 'review_flag', 'finished_at'], unique=False)


def downgrade():
    op.drop_index('ix_articles_review_queue', table_name='articles')
