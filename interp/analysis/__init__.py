"""Analyses that return data: evals, steering, attention, dark matter, features, interaction bases."""
