"""gprochat's benchmark harness: ``python -m benchmarks [--quick]``.

Every benchmark is a pair: ours against a baseline, measured in interleaved rounds in
the same run, reported as the median ratio with its min-max. Servers run in their
own processes on 127.0.0.1; clients that are measured run in their own processes too.
Not part of the pytest suite: these are measurements, not tests.
"""
