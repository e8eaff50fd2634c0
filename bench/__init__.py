"""Benchmarks that compare this daemon with the tutorials' approach, side by side in one run."""
