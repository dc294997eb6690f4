"""``cpt``: raw text for continued pretraining (notes, literature, dialogue, general text)."""

from __future__ import annotations

from clinitune.data.ingest import Note
from clinitune.data.tasks import BuildResult, provenance, register
from clinitune.recipe import CptTask


@register("cpt")
def build_cpt(note: Note, task: str, spec: CptTask) -> BuildResult:
    text = note.text if spec.field == "text" else (note.dialogue or "")
    if not text.strip():
        return "empty_text"
    return [{**provenance(note, task), "kind": "text", "text": text.strip()}]
