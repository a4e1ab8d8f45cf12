"""Rhetor's benchmark: fake upstream, load generators, runner and report (see bench/README.md)."""
