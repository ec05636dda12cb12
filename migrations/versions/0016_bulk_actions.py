"""bulk_actions and bulk_action_items: actions on many rows at once

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-20 12:00:00

A bulk action (approve, reject, regenerate, retry, cancel) confirmed on the dashboard or
the review queue, and the ids it was confirmed for (webapp/services/bulk.py).
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0016'
down_revision = '0015'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'bulk_actions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('user_id', sa.Integer(), nullable=False),
        sa.Column('actor', sa.String(length=255), nullable=False),
        sa.Column('scope', sa.String(length=16), nullable=False),
        sa.Column('action', sa.String(length=16), nullable=False),
        sa.Column('filter_text', sa.Text(), nullable=False),
        sa.Column('reason', sa.Text(), nullable=True),
        sa.Column('state', sa.String(length=16), nullable=False),
        sa.Column('total', sa.Integer(), nullable=False),
        sa.Column('done', sa.Integer(), nullable=False),
        sa.Column('skipped', sa.Integer(), nullable=False),
        sa.Column('skipped_detail', sa.Text(), nullable=False),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('confirm_hash', sa.String(length=64), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('finished_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['user_id'], ['users.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('confirm_hash'),
    )
    op.create_index('ix_bulk_actions_user_id', 'bulk_actions', ['user_id'])
    op.create_table(
        'bulk_action_items',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('bulk_action_id', sa.Integer(), nullable=False),
        sa.Column('article_id', sa.Integer(), nullable=True),
        sa.Column('batch_id', sa.Integer(), nullable=False),
        sa.Column('outcome', sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(['bulk_action_id'], ['bulk_actions.id']),
        sa.ForeignKeyConstraint(['article_id'], ['articles.id']),
        sa.ForeignKeyConstraint(['batch_id'], ['batches.id']),
        sa.PrimaryKeyConstraint('id'),
    )
    # The task's "items still to do" and the progress count; an article's history.
    op.create_index('ix_bulk_action_items_action_outcome', 'bulk_action_items',
                    ['bulk_action_id', 'outcome'])
    op.create_index('ix_bulk_action_items_article_id', 'bulk_action_items', ['article_id'])
    op.create_index('ix_bulk_action_items_batch', 'bulk_action_items',
                    ['batch_id', 'article_id'])


def downgrade():
    op.drop_index('ix_bulk_action_items_batch', table_name='bulk_action_items')
    op.drop_index('ix_bulk_action_items_article_id', table_name='bulk_action_items')
    op.drop_index('ix_bulk_action_items_action_outcome', table_name='bulk_action_items')
    op.drop_table('bulk_action_items')
    op.drop_index('ix_bulk_actions_user_id', table_name='bulk_actions')
    op.drop_table('bulk_actions')
