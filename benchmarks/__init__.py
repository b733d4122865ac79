"""mbgraph's benchmark suite: ``python -m benchmarks run|table|list SUITE``.

Config files per paper table (:mod:`benchmarks.config`, ``benchmarks/configs/``), one
``mbgraph train`` subprocess per run (:mod:`benchmarks.runner`), tables and plots in the
papers' layout (:mod:`benchmarks.tables`), speed and memory measurements
(:mod:`benchmarks.speed`, :mod:`benchmarks.propagation`). See docs/benchmarks.md.
"""
