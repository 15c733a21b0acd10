"""yieldos benchmark suite: yieldos against its peers and against the limit, on this interpreter.

Run ``python3 -m bench`` (``--help`` for options). See docs/performance.md for the
results and bench/run.py for how each figure is made.
"""
