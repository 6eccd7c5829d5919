"""Evaluation: face verification rates, and (to come) EDC curves and pAUC."""
