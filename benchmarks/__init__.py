"""trackcheck's benchmarks (issue 4): polling at scale (B1), diff speed (B2); the API (B3) is pending.

``python -m benchmarks.run`` (``make bench``) measures everything on this machine and writes
``benchmarks/RESULTS.md``; ``--quick`` (``make bench-quick``) runs the same code at small sizes and only
checks that every figure was produced. See benchmarks/README.md for the method.
"""
