"""The end user and the session of each span as indexed columns, filled from the attributes already
stored (``lumina_core.extraction.USER_ID_KEYS`` and ``SESSION_ID_KEYS`` at the time of writing).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

KEYS = {
    "user_id": ("user.id", "enduser.id", "langfuse.user.id"),
    "session_id": ("session.id", "gen_ai.conversation.id", "langfuse.session.id"),
}


def _first_value(keys: tuple[str, ...], dialect: str) -> str:
    sources = ("attributes", "resource_attributes")
    if dialect == "postgresql":
        values = [f"NULLIF({source} ->> '{key}', '')" for source in sources for key in keys]
    else:
        values = [
            f"NULLIF(CAST(json_extract({source}, '$.\"{key}\"') AS TEXT), '')" for source in sources for key in keys
        ]
    return f"substr(coalesce({', '.join(values)}), 1, 256)"


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    for column, keys in KEYS.items():
        op.add_column("spans", sa.Column(column, sa.String(), nullable=True))
        op.execute(f"UPDATE spans SET {column} = {_first_value(keys, dialect)}")
        op.create_index(
            f"ix_spans_project_{column}",
            "spans",
            ["project_id", column, "start_time_unix_nano"],
            sqlite_where=sa.text(f"{column} IS NOT NULL"),
            postgresql_where=sa.text(f"{column} IS NOT NULL"),
        )


def downgrade() -> None:
    for column in KEYS:
        op.drop_index(f"ix_spans_project_{column}", table_name="spans")
        op.drop_column("spans", column)
