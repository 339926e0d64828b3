"""Shared fixtures. Each area keeps its own fixtures in its tests/<area>/conftest.py."""
