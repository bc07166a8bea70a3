"""Evaluation of learned play: analytic Bayes–Nash equilibria, numerical best responses and metrics."""
