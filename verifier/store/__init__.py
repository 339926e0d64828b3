"""The verifier's storage: the `Store` port (api.py), SQLite and PostgreSQL implementations,
group commit (batch.py) and versioned schema migrations (migrations/)."""
