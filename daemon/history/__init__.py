"""Event history: the SQLite event store and its value types."""
