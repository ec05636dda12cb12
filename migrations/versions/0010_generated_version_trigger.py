"""generated-version trigger

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04 23:00:00

A generated article keeps its body as a version in the same UPDATE that stores it (see
webapp/triggers.py), so storing an answer is one statement.
"""
from alembic import op

from webapp import triggers

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    for sql in triggers.CREATE[op.get_bind().dialect.name]:
        op.execute(sql)


def downgrade():
    for sql in triggers.DROP[op.get_bind().dialect.name]:
        op.execute(sql)
