"""Measurement: each candidate is measured in its own fresh process (see worker.py)."""
