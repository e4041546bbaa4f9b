"""Decisions from measured (and projected) figures: cost per target, the recommendation."""
