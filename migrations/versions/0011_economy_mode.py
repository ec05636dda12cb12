"""economy mode

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06 20:00:00

A batch's mode (standard: written by the workers now; economy: through the provider's
Batch API), and the provider batches of economy batches.
"""
import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('batches') as batch:
        batch.add_column(sa.Column('mode', sa.String(length=16), nullable=False,
                                   server_default='standard'))
    op.create_table(
        'provider_batches',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('batch_id', sa.Integer(), nullable=False),
        sa.Column('token', sa.String(length=36), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('provider_batch_id', sa.String(length=100), nullable=True),
        sa.Column('input_file_id', sa.String(length=100), nullable=True),
        sa.Column('output_file_id', sa.String(length=100), nullable=True),
        sa.Column('error_file_id', sa.String(length=100), nullable=True),
        sa.Column('requests', sa.Integer(), nullable=False),
        sa.Column('completed', sa.Integer(), nullable=False),
        sa.Column('failed', sa.Integer(), nullable=False),
        sa.Column('expires_at', sa.DateTime(), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('checked_at', sa.DateTime(), nullable=True),
        sa.Column('unchanged_checks', sa.Integer(), nullable=False),
        sa.Column('cancel_requested_at', sa.DateTime(), nullable=True),
        sa.Column('imported_at', sa.DateTime(), nullable=True),
        sa.Column('files_deleted_at', sa.DateTime(), nullable=True),
        sa.ForeignKeyConstraint(['batch_id'], ['batches.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('token'),
    )
    op.create_index('ix_provider_batches_batch_id', 'provider_batches', ['batch_id'])


def downgrade():
    op.drop_index('ix_provider_batches_batch_id', table_name='provider_batches')
    op.drop_table('provider_batches')
    with op.batch_alter_table('batches') as batch:
        batch.drop_column('mode')
