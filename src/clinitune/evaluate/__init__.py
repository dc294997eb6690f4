"""Evaluation: a suite of registered evaluations (``suite.py``), one file per evaluation."""
