"""clinitune: specialize an open LLM on de-identified clinical notes, and prove what it gained."""

__version__ = "0.1.0"
