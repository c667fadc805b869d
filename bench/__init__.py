"""Benchmarks: Sinal side by side with the seed's stack (`python -m bench`, bench/README.md).

Not imported by Sinal and never asserted by the test suite.
"""
