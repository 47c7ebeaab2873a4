"""The store's tables in SQL that SQLite and PostgreSQL both run (see database.py)."""
