"""Replay: sets of frozen LLM calls, runs of a set with overrides, and each replayed call's result.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

TOKENS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


def upgrade() -> None:
    op.create_table(
        "replay_sets",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("project_id", sa.String(), nullable=False),
        sa.Column("name", sa.String(), nullable=False),
        sa.Column("description", sa.String(), nullable=False),
        sa.Column("selection", sa.JSON(), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("created_unix_nano", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_replay_sets_project", "replay_sets", ["project_id", "id"])
    op.create_table(
        "replay_items",
        sa.Column("set_id", sa.Integer(), primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("trace_id", sa.String(), nullable=False),
        sa.Column("span_id", sa.String(), nullable=False),
        sa.Column("service_name", sa.String(), nullable=False),
        sa.Column("span_name", sa.String(), nullable=False),
        sa.Column("provider", sa.String(), nullable=True),
        sa.Column("model", sa.String(), nullable=True),
        sa.Column("input_messages", sa.JSON(), nullable=True),
        sa.Column("system_prompt", sa.Text(), nullable=True),
        sa.Column("invocation_parameters", sa.JSON(), nullable=True),
        sa.Column("output_text", sa.Text(), nullable=True),
        *(sa.Column(name, sa.BigInteger(), nullable=True) for name in TOKENS),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=False),
    )
    op.create_table(
        "replay_runs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("project_id", sa.String(), nullable=False),
        sa.Column("set_id", sa.Integer(), nullable=False),
        sa.Column("overrides", sa.JSON(), nullable=False),
        sa.Column("limits", sa.JSON(), nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("runner", sa.String(), nullable=False),
        sa.Column("item_count", sa.Integer(), nullable=False),
        sa.Column("created_unix_nano", sa.BigInteger(), nullable=False),
        sa.Column("finished_unix_nano", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.String(), nullable=True),
    )
    op.create_index("ix_replay_runs_project", "replay_runs", ["project_id", "id"])
    op.create_table(
        "replay_results",
        sa.Column("run_id", sa.Integer(), primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("status", sa.String(), nullable=False),
        sa.Column("output_text", sa.Text(), nullable=True),
        sa.Column("model", sa.String(), nullable=True),
        *(sa.Column(name, sa.BigInteger(), nullable=True) for name in TOKENS),
        sa.Column("cost_usd", sa.Float(), nullable=True),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(), nullable=True),
        sa.Column("identical", sa.Boolean(), nullable=True),
        sa.Column("similarity", sa.Float(), nullable=True),
        sa.Column("finished_unix_nano", sa.BigInteger(), nullable=False),
    )


def downgrade() -> None:
    for table in ("replay_results", "replay_runs", "replay_items", "replay_sets"):
        op.drop_table(table)
