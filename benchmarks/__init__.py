"""editgraph's benchmark suite: ``python -m benchmarks [--quick]`` prints one table.

One module per measure: ``critical_path`` (the layered DAG against FakeTogether, a
hand-written async client and the plain sequential script), ``overhead`` (the engine
alone, with an in-process provider), ``prefect_replay``, ``throughput``, ``memory`` and
``building``; ``fake_service`` runs FakeTogether in a child process.
"""
