"""Daily trace limits: each project's traces admitted per UTC day, and what was refused.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "daily_usage",
        sa.Column("project_id", sa.String(), primary_key=True),
        sa.Column("day", sa.String(), primary_key=True),
        sa.Column("traces", sa.BigInteger(), nullable=False),
        sa.Column("refused_traces", sa.BigInteger(), nullable=False),
        sa.Column("refused_spans", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "daily_traces",
        sa.Column("project_id", sa.String(), primary_key=True),
        sa.Column("day", sa.String(), primary_key=True),
        sa.Column("trace_id", sa.String(), primary_key=True),
    )


def downgrade() -> None:
    op.drop_table("daily_traces")
    op.drop_table("daily_usage")
