"""Evaluation helpers shared by the notebooks (efficiency: timing, FLOPs, memory)."""
