"""Helpers shared by the tests and the benchmarks: image encoders, fakes, tiny models, a server launcher.

The tests import it as ``support`` (conftest puts tests/ on sys.path); a benchmark script does the
same with ``sys.path.insert(0, <repo>/tests)``. Nothing here reads real data: every image and model
is made on the spot.
"""
