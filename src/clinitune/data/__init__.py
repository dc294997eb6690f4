"""Data preparation: ingest -> sections -> tasks -> split -> tokenize (see ``prepare.py``)."""
