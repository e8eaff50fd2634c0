"""Projections: what a change means to a read model, and the sinks that store it."""
