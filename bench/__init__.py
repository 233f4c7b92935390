"""mpidock's benchmarks, run on the testbed: `python -m bench [SUITE...] [--quick]`."""
