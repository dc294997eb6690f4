"""``python -m clinitune``: the CLI (e.g. under ``accelerate launch -m clinitune``)."""

from clinitune.cli import app

if __name__ == "__main__":
    app()
