"""Alembic environment: Lumina always passes an open connection (see ``storage.database.migrate``)."""

from alembic import context
from sqlmodel import SQLModel

from lumina_core.storage import models  # noqa: F401  (registers the tables on SQLModel.metadata)

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=SQLModel.metadata,
    render_as_batch=connection.dialect.name == "sqlite",
)
with context.begin_transaction():
    context.run_migrations()
