"""Carrying out a benchmark: the runner (plan, members, searches, ensembles, robustness, report),
a member's definition, training and storage, a tuned member's search, refit on train + validation,
and the robustness measurements.

Orchestration layer: may import everything below it (store, training, ensembles, reports).
"""
