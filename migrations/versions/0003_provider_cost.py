"""provider resilience and cost

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 17:44:37.231694

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('articles', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cost_usd', sa.Double(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('review_flag', sa.String(length=32), nullable=True))

    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.add_column(sa.Column('cost_usd', sa.Double(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('budget_usd', sa.Double(), nullable=True))
        batch_op.add_column(sa.Column('paused_reason', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('paused_by', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('stop_reason', sa.Text(), nullable=True))



def downgrade():
    with op.batch_alter_table('batches', schema=None) as batch_op:
        batch_op.drop_column('stop_reason')
        batch_op.drop_column('paused_by')
        batch_op.drop_column('paused_reason')
        batch_op.drop_column('budget_usd')
        batch_op.drop_column('cost_usd')

    with op.batch_alter_table('articles', schema=None) as batch_op:
        batch_op.drop_column('review_flag')
        batch_op.drop_column('cost_usd')

