"""installation id

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 21:00:00

Redis keys that name a batch or an article are prefixed with this id, so that a reset
database, a restored copy or a second installation on the same Redis never reads another
database's cancel flags, probes, slots or markers. Made once, with the schema.
"""
import secrets
from datetime import datetime, timezone

import sqlalchemy as sa
from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    table = op.create_table(
        'installation',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('key', sa.String(length=32), nullable=False),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint('id'),
    )
    op.bulk_insert(table, [{"id": 1, "key": secrets.token_hex(6),
                            "created_at": datetime.now(timezone.utc).replace(tzinfo=None)}])


def downgrade():
    op.drop_table('installation')
