"""diffusiond benchmarks: figures measured against plain diffusers on the same machine, in the same run.

Not tests: each benchmark prints a table and appends a dated section to BENCHMARKS.md
(`make bench`, i.e. `python -m bench.run_all`).
"""
