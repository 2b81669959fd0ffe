"""The OLTP store: SQLAlchemy 2 on SQLite (embedded, WAL) or PostgreSQL, migrated by Alembic."""
