"""flexmarket: application wiring shared by every participant (settings, database, Celery, CLI)."""

__version__ = "0.1.0"
