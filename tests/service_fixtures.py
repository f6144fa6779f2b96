"""Fixtures for tests of the service (app, database, keys). Loaded by tests/conftest.py."""
