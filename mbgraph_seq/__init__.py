"""mbgraph_seq: multi-behavior sequential recommendation (EBM/DPCPL, PoMRec, HMAR, SASRec)."""
__version__ = '0.1.0'
