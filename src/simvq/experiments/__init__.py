"""Experiments: each a function returning data (and a figure where one helps)."""
