"""Benchmark peers of slimvec-bench and compare.py's helpers for them.

hnswlib_native.cpp (hnswlib compiled for this CPU) and faiss_bench.py (FAISS
IndexHNSWSQ8) write JSON in the shape of ../hnswlib_bench.py's; common.py has
the Python peers' shared parts, runners.py how compare.py builds and runs
each peer, report.py the curves, ratios and summary table.
"""
