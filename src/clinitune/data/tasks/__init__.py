"""Task builders: one file per task type, each registering itself.

A builder turns one :class:`~clinitune.data.ingest.Note` into zero or more records. A record is a
plain dict (it is written to JSONL):

- SFT records: ``{"kind": "chat", "instruction", "input", "completion", ...provenance}``;
  the chat template is applied later, at tokenization, so one record serves any model.
- CPT records: ``{"kind": "text", "text", ...provenance}``.

Provenance: ``task, source, note_id, patient_id``. A builder that cannot make a record from a
note returns a skip reason (counted, never guessed).

To add a task type: add a file here with a pydantic spec in ``recipe.py`` and a function
decorated with ``@register("type")``; nothing else changes.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from clinitune.data.ingest import Note

Record = dict[str, Any]
BuildResult = list[Record] | str  # records, or a skip reason
Builder = Callable[[Note, str, Any], BuildResult]

BUILDERS: dict[str, Builder] = {}


def register(task_type: str) -> Callable[[Builder], Builder]:
    def deco(fn: Builder) -> Builder:
        BUILDERS[task_type] = fn
        return fn

    return deco


def provenance(note: Note, task: str) -> Record:
    return {
        "task": task,
        "source": note.source,
        "note_id": note.note_id,
        "patient_id": note.patient_id,
    }


def build(note: Note, task_name: str, spec: Any) -> BuildResult:
    return BUILDERS[spec.type](note, task_name, spec)


# Import the built-in task modules so they register themselves.
from clinitune.data.tasks import cpt, diagnosis, instruction, mdm, mention, soap  # noqa: E402,F401
