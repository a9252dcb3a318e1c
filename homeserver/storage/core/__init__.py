"""The database itself: the connection pool, migrations, the embedded PostgreSQL, and
stream positions."""
