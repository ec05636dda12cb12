"""bulk_actions.options: what a bulk publish was confirmed with

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-07 01:00:00

Publishing a selection (the dashboard's bulk action) keeps the destination, the post status,
the date and the terms it was confirmed with, as JSON, for the worker that runs it. NULL for
every other action, and for the rows made before it.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0019'
down_revision = '0018'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('bulk_actions') as batch_op:
        batch_op.add_column(sa.Column('options', sa.Text(), nullable=True))


def downgrade():
    with op.batch_alter_table('bulk_actions') as batch_op:
        batch_op.drop_column('options')
