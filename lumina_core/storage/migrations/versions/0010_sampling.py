"""Sampling: what samplers dropped, summed per minute like span_hours (once per dropped batch, however
often it is delivered); and the traces tail samplers have yet to judge.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

TOKENS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


def upgrade() -> None:
    op.create_table(
        "sampled_out",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True),
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
        *(sa.Column(name, sa.BigInteger(), nullable=True) for name in TOKENS),
        sa.Column("first_seen_unix_nano", sa.BigInteger(), nullable=False),
        sa.Column("last_seen_unix_nano", sa.BigInteger(), nullable=False),
        sa.Column("traces", sa.BigInteger(), nullable=False),
        sa.Column("sampler", sa.String(), nullable=False),
    )
    op.create_index("ix_sampled_out_project_slot", "sampled_out", ["project_id", "slot_unix_nano"])
    op.create_table(
        "sampled_batches",
        sa.Column("batch_key", sa.String(), primary_key=True),
        sa.Column("created_unix_nano", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "undecided_traces",
        sa.Column("project_id", sa.String(), primary_key=True),
        sa.Column("trace_id", sa.String(), primary_key=True),
        sa.Column("changed_unix_nano", sa.BigInteger(), nullable=False),
    )
    op.create_index("ix_undecided_traces_changed", "undecided_traces", ["changed_unix_nano"])


def downgrade() -> None:
    op.drop_table("undecided_traces")
    op.drop_table("sampled_batches")
    op.drop_table("sampled_out")
