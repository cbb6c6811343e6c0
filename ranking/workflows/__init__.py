"""Workflows over training and evaluation: what trains a model, picks its variant on an evaluation and publishes
it (``thaw train ranker``). Stands above ``ranking.training`` and ``ranking.evaluation``, which never import it."""
