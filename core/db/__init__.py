"""The database: its models, its sessions, and its schema upgrades (Alembic)."""
