"""Storage: table models, migrations, the bulk span writer and the read queries."""
