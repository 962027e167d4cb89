"""Durable storage: SQLAlchemy models on SQLite, migrations and transactions."""
