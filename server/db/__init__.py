"""Registry database: SQLAlchemy 2 models and the engine (migrations: server/migrations)."""
