"""One module per real server the tests, the demo and the benchmarks
start (:mod:`harness.launcher` re-exports them).
"""
