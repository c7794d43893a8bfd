"""What the benchmarks share: the command line and the end of main(), machine facts and CPU accounting,
server and broker processes, statistics and JSON, tables. Each benchmark script holds only its measurement
and its report."""
