"""index for the progress poll's spend and review counts

A batch's progress poll sums the articles' cost and counts those flagged for review. Both
columns sit after the article body in the row, so without an index SQLite reads every
article of the batch (and the overflow pages of long bodies) on every poll; this covering
index answers both from the index alone.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25 18:00:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('articles', schema=None) as batch_op:
        batch_op.create_index('ix_articles_batch_cost_flag',
                              ['batch_id', 'cost_usd', 'review_flag'], unique=False)


def downgrade():
    with op.batch_alter_table('articles', schema=None) as batch_op:
        batch_op.drop_index('ix_articles_batch_cost_flag')
