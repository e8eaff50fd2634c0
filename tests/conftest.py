"""Fixtures shared by every test: the real servers live in tests/fixtures/."""

pytest_plugins = ["tests.fixtures.aws", "tests.fixtures.postgres", "tests.fixtures.prometheus"]
