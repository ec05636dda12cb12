"""destinations and publications: approved articles published to WordPress sites

Revision ID: 0018
Revises: 0017
Create Date: 2027-01-10 10:00:00

A destination is a WordPress site with its user and application password (encrypted with a
key derived from SECRET_KEY, webapp/crypto.py). A publication is one article on one
destination: unique per pair, it keeps the remote post's id so that an article is posted
once and later publishes update that post (generation/publishing.py).
"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0018'
down_revision = '0017'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table(
        'destinations',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('name', sa.String(length=80), nullable=False),
        sa.Column('kind', sa.String(length=16), nullable=False),
        sa.Column('url', sa.String(length=500), nullable=False),
        sa.Column('username', sa.String(length=200), nullable=False),
        sa.Column('password_encrypted', sa.Text(), nullable=False),
        sa.Column('allow_new_terms', sa.Boolean(), nullable=False),
        sa.Column('provenance', sa.String(length=8), nullable=False),
        sa.Column('status', sa.String(length=24), nullable=False),
        sa.Column('last_error', sa.Text(), nullable=True),
        sa.Column('checked_at', sa.DateTime(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('created_by', sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(['created_by'], ['users.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('name'),
    )
    op.create_table(
        'publications',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('article_id', sa.Integer(), nullable=False),
        sa.Column('destination_id', sa.Integer(), nullable=False),
        sa.Column('token', sa.String(length=32), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('action', sa.String(length=16), nullable=False),
        sa.Column('wanted', sa.String(length=16), nullable=False),
        sa.Column('publish_at', sa.DateTime(), nullable=True),
        sa.Column('categories', sa.Text(), nullable=False),
        sa.Column('tags', sa.Text(), nullable=False),
        sa.Column('remote_id', sa.BigInteger(), nullable=True),
        sa.Column('url', sa.String(length=1000), nullable=True),
        sa.Column('remote_status', sa.String(length=16), nullable=True),
        sa.Column('error', sa.Text(), nullable=True),
        sa.Column('note', sa.String(length=300), nullable=True),
        sa.Column('attempts', sa.Integer(), nullable=False),
        sa.Column('create_sent_at', sa.DateTime(), nullable=True),
        sa.Column('claim_token', sa.String(length=36), nullable=True),
        sa.Column('lease_expires_at', sa.DateTime(), nullable=True),
        sa.Column('requested_by', sa.Integer(), nullable=True),
        sa.Column('requested_at', sa.DateTime(), nullable=False),
        sa.Column('published_at', sa.DateTime(), nullable=True),
        sa.Column('created_at', sa.DateTime(), nullable=False),
        sa.Column('updated_at', sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(['article_id'], ['articles.id']),
        sa.ForeignKeyConstraint(['destination_id'], ['destinations.id']),
        sa.ForeignKeyConstraint(['requested_by'], ['users.id']),
        sa.PrimaryKeyConstraint('id'),
        sa.UniqueConstraint('article_id', 'destination_id',
                            name='uq_publications_article_destination'),
        sa.UniqueConstraint('token'),
    )
    op.create_index('ix_publications_article_id', 'publications', ['article_id'])
    op.create_index('ix_publications_destination_status', 'publications',
                    ['destination_id', 'status'])
    op.create_index('ix_publications_status_updated', 'publications', ['status', 'updated_at'])


def downgrade():
    op.drop_index('ix_publications_status_updated', table_name='publications')
    op.drop_index('ix_publications_destination_status', table_name='publications')
    op.drop_index('ix_publications_article_id', table_name='publications')
    op.drop_table('publications')
    op.drop_table('destinations')
