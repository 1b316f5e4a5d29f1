"""Test and benchmark harness, not part of the library: a load generator (`loadgen`), a real
``frankensplit serve`` child process (`serve_process`) and stalled slow clients (`stalled`).

Benchmarks import it as ``harness`` (their folder is on ``sys.path`` when run as ``python
benchmarks/<name>.py``), tests as ``benchmarks.harness`` (pytest runs from the repository root);
its modules import one another relatively, so both work.
"""
