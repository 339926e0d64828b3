"""Fixtures of the agent tests: the verifier's own (`config`, `running`), for the tests that
run the agent against a real verifier on loopback."""

from tests.verifier.conftest import config, running

__all__ = ["config", "running"]
