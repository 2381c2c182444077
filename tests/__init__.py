"""The test suite: tests/<stage>/ mirror pipeline/<stage>/; shared builders live in tests/conftest.py."""
