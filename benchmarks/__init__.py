"""mbgraph's benchmark suite: result tables and speed/memory measurements."""
