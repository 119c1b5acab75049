"""Token counts as BIGINT: a long agent trace can pass 2^31 tokens (SQLite integers are 64-bit already).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

TOKEN_COLUMNS = ("input_tokens", "cache_read_tokens", "cache_write_tokens", "output_tokens", "reasoning_tokens")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in ("spans", "traces"):
        for column in TOKEN_COLUMNS:
            op.alter_column(table, column, type_=sa.BigInteger(), existing_type=sa.Integer(), existing_nullable=True)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in ("spans", "traces"):
        for column in TOKEN_COLUMNS:
            op.alter_column(table, column, type_=sa.Integer(), existing_type=sa.BigInteger(), existing_nullable=True)
