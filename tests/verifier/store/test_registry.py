"""The registry's round trip through both store backends (the parser is tested in
tests/verifier/test_registry.py)."""

from __future__ import annotations

from tests.verifier.test_registry import EXAMPLE
from verifier.registry import parse_registry
from verifier.registry_model import Registry
from verifier.store.api import Store


def test_registry_round_trips_through_the_store(store: Store) -> None:
    assert store.load_registry() == Registry()
    registry = parse_registry(EXAMPLE)
    store.import_registry(registry)
    assert store.load_registry() == registry
    store.import_registry(Registry(entities=registry.entities))
    assert store.load_registry() == Registry(entities=registry.entities)
