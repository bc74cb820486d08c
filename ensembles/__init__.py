"""Ensembles: averaging, greedy selection, stacking and bagging over members in the run store."""
