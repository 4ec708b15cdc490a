"""Pytest plugin: the MPT contract suite and the scenario suite, per backend."""
