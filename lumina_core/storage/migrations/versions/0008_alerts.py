"""Alerting: rules edited at run time, alerts with their history, and the delivery outbox.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "alert_rules",
        sa.Column("project_id", sa.String(), primary_key=True),
        sa.Column("name", sa.String(), primary_key=True),
        sa.Column("spec", JSON, nullable=False),
        sa.Column("created_unix_nano", sa.BigInteger(), nullable=False),
        sa.Column("updated_unix_nano", sa.BigInteger(), nullable=False),
    )
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("project_id", sa.String(), nullable=False),
        sa.Column("rule", sa.String(), nullable=False),
        sa.Column("kind", sa.String(), nullable=False),
        sa.Column("dedup_key", sa.String(), nullable=False),
        sa.Column("scope", JSON, nullable=False),
        sa.Column("rule_spec", JSON, nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("severity", sa.String(), nullable=False),
        sa.Column("summary", sa.String(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("baseline", sa.Float(), nullable=True),
        sa.Column("started_unix_nano", sa.BigInteger(), nullable=False),
        sa.Column("evaluated_unix_nano", sa.BigInteger(), nullable=False),
        sa.Column("notified_unix_nano", sa.BigInteger(), nullable=False),
        sa.Column("resolved_unix_nano", sa.BigInteger(), nullable=True),
        sa.Column("acknowledged_unix_nano", sa.BigInteger(), nullable=True),
        sa.Column("acknowledged_by", sa.String(), nullable=True),
    )
    op.create_index("ix_alerts_project_state", "alerts", ["project_id", "state"])
    op.create_index("ix_alerts_dedup_key", "alerts", ["dedup_key", "started_unix_nano"])
    open_only = sa.text("state != 'resolved'")
    op.create_index(
        "ux_alerts_open_dedup_key",
        "alerts",
        ["dedup_key"],
        unique=True,
        sqlite_where=open_only,
        postgresql_where=open_only,
    )
    op.create_table(
        "alert_events",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("event", sa.String(), nullable=False),
        sa.Column("at_unix_nano", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("summary", sa.String(), nullable=False),
        sa.Column("actor", sa.String(), nullable=True),
    )
    op.create_index("ix_alert_events_alert_id", "alert_events", ["alert_id"])
    op.create_table(
        "alert_outbox",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("sink", sa.String(), nullable=False),
        sa.Column("payload", JSON, nullable=False),
        sa.Column("state", sa.String(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_unix_nano", sa.BigInteger(), nullable=False),
        sa.Column("claimed_until_unix_nano", sa.BigInteger(), nullable=False),
        sa.Column("last_error", sa.String(), nullable=True),
        sa.Column("delivered_unix_nano", sa.BigInteger(), nullable=True),
    )
    op.create_index("ix_alert_outbox_due", "alert_outbox", ["state", "next_attempt_unix_nano"])


def downgrade() -> None:
    for table in ("alert_outbox", "alert_events", "alerts", "alert_rules"):
        op.drop_table(table)
