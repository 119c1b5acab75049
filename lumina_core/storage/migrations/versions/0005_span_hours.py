"""Hourly sums of spans for analytics (with the hours still to sum), and trace sort indexes.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

HOUR_NS = 3600 * 10**9
TOKEN_COLUMNS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


def upgrade() -> None:
    op.create_table(
        "span_hours",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.String(), nullable=False),
        sa.Column("slot_unix_nano", sa.BigInteger(), nullable=False),
        sa.Column("service_name", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("model", sa.String(), nullable=True),
        sa.Column("provider", sa.String(), nullable=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("is_llm", sa.Boolean(), nullable=False),
        sa.Column("counted", sa.Boolean(), nullable=False),
        sa.Column("pricing_status", sa.String(), nullable=True),
        sa.Column("requests", sa.BigInteger(), nullable=False),
        sa.Column("errors", sa.BigInteger(), nullable=False),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        *(sa.Column(name, sa.BigInteger(), nullable=True) for name in TOKEN_COLUMNS),
        sa.Column("first_seen_unix_nano", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_unix_nano", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_span_hours_project_slot", "span_hours", ["project_id", "slot_unix_nano"])
    stale = op.create_table(
        "stale_hours",
        sa.Column("project_id", sa.String(), nullable=False),
        sa.Column("slot_unix_nano", sa.BigInteger(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("changed_unix_nano", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("project_id", "slot_unix_nano"),
    )
    op.create_index("ix_traces_project_cost", "traces", ["project_id", sa.text("coalesce(cost_usd, -1.0)")])
    op.create_index("ix_traces_project_duration", "traces", ["project_id", "duration_ms"])
    # every hour that already holds spans is summed by the first refresh after start-up
    hours = op.get_bind().execute(
        sa.text(f"SELECT DISTINCT project_id, (start_time_unix_nano / {HOUR_NS}) * {HOUR_NS} FROM spans")
    )
    rows = [{"project_id": p, "slot_unix_nano": h, "version": 1, "changed_unix_nano": 0} for p, h in hours]
    if rows:
        op.bulk_insert(stale, rows)


def downgrade() -> None:
    op.drop_index("ix_traces_project_duration", table_name="traces")
    op.drop_index("ix_traces_project_cost", table_name="traces")
    op.drop_table("stale_hours")
    op.drop_index("ix_span_hours_project_slot", table_name="span_hours")
    op.drop_table("span_hours")
