"""articles.length_unit: the unit an article's length (`words`) is counted in

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-06 22:30:00

"words", or "characters" for Chinese and Japanese (webapp/generation/lengths.py). Every
article written so far was counted in words, which the server default says.
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None


def upgrade():
    # A plain ADD COLUMN, not a batch (copy-and-move) table: on SQLite that would drop
    # the generated_version trigger of migration 0010 with the old table.
    op.add_column('articles', sa.Column('length_unit', sa.String(length=10), nullable=True,
                                        server_default='words'))


def downgrade():
    # SQLite (3.35+) drops a column in place, so the trigger stays here too.
    op.drop_column('articles', 'length_unit')
