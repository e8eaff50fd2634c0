"""Allows `python -m consumer`."""

from consumer.cli.main import main

main()
