"""Scenario data and drivers for `stream-projector demo` (not part of the framework)."""
