"""Benchmarks of workit against the bare asyncio loop and APScheduler 3.11.

``python -m bench SCENARIO`` (overhead, scale, blocking, dag, shutdown) or
``python -m bench all`` runs each system in a child process of its own and
prints one JSON line per measurement; ``python -m bench report FILE`` turns
saved lines into the results table of bench/README.md and bench/results.png.
``bench.smoke.run_smoke()`` is the quick run CI uses to keep the scripts working.
"""
