"""Quality monitoring: baselines per prompt fingerprint (with history) and detector results per span.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("projects", sa.Column("baselines_version", sa.BigInteger(), nullable=False, server_default="0"))
    op.create_table(
        "quality_baselines",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("project_id", sa.String(), nullable=False),
        sa.Column("fingerprint", sa.String(), nullable=False),
        sa.Column("trace_id", sa.String(), nullable=False),
        sa.Column("span_id", sa.String(), nullable=False),
        sa.Column("output", sa.Text(), nullable=False),
        sa.Column("pinned", sa.Boolean(), nullable=False),
        sa.Column("created_unix_nano", sa.BigInteger(), nullable=False),
        sa.Column("retired_unix_nano", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_quality_baselines_fingerprint", "quality_baselines", ["project_id", "fingerprint"])
    op.create_table(
        "quality_results",
        sa.Column("project_id", sa.String(), primary_key=True),
        sa.Column("trace_id", sa.String(), primary_key=True),
        sa.Column("span_id", sa.String(), primary_key=True),
        sa.Column("detector", sa.String(), primary_key=True),
        sa.Column("fingerprint", sa.String(), nullable=False),
        sa.Column("service_name", sa.String(), nullable=False),
        sa.Column("span_name", sa.String(), nullable=False),
        sa.Column("span_start_unix_nano", sa.BigInteger(), nullable=False),
        sa.Column("baseline_id", sa.Integer(), nullable=True),
        sa.Column("score", sa.Float(), nullable=True),
        sa.Column("verdict", sa.String(), nullable=False),
        sa.Column("degraded", sa.Boolean(), nullable=False),
        sa.Column("checked_unix_nano", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_quality_results_project_checked", "quality_results", ["project_id", "span_start_unix_nano"])


def downgrade() -> None:
    op.drop_column("projects", "baselines_version")
    op.drop_table("quality_results")
    op.drop_table("quality_baselines")
