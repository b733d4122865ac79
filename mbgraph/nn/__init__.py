"""Neural network building blocks of mbgraph."""
