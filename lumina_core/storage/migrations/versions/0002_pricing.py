"""Pricing: custom prices, how each span was priced, and which report of a call is counted.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "custom_prices",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model", sa.String(), nullable=False),
        sa.Column("match", sa.String(), nullable=False),
        sa.Column("provider", sa.String(), nullable=True),
        sa.Column("input", sa.Float(), nullable=False),
        sa.Column("output", sa.Float(), nullable=False),
        sa.Column("cache_read", sa.Float(), nullable=True),
        sa.Column("cache_write", sa.Float(), nullable=True),
        sa.Column("reasoning", sa.Float(), nullable=True),
        sa.Column("effective_from_unix_nano", sa.BigInteger(), nullable=True),
        sa.Column("created_unix_nano", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("spans", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pricing_status", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("pricing_rule", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("counted", sa.Boolean(), nullable=False, server_default=sa.true()))
        batch_op.create_index("ix_spans_project_response_id", ["project_id", "response_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("spans", schema=None) as batch_op:
        batch_op.drop_index("ix_spans_project_response_id")
        batch_op.drop_column("counted")
        batch_op.drop_column("pricing_rule")
        batch_op.drop_column("pricing_status")

    op.drop_table("custom_prices")
