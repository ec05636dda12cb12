"""saved_views: a person's named filters of the dashboard or the review queue

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-08 10:00:00

One row per view; a name is unique per person and page. The unique constraint's index
(user_id first) also serves the nav's query of a person's views, so no other index is made.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0017'
down_revision = '0016'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('saved_views',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('user_id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=80), nullable=False),
    sa.Column('page', sa.String(length=16), nullable=False),
    sa.Column('query', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('user_id', 'page', 'name', name='uq_saved_views_user_page_name')
    )


def downgrade():
    op.drop_table('saved_views')
