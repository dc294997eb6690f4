"""Training: the stage runner (``runner.py``)."""
