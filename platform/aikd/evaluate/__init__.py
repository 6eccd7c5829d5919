"""Evaluation: face verification rates, EDC curves and pAUC under alignment conditions, rank statistics, reports."""
