"""Benchmark cases, one module per operator; every module here is imported by
the registry, so adding an op's cases means adding one file."""
