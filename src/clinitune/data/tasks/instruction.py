"""``instruction``: ready instruction/response pairs (HEAL's medical instructions with
explanations, e.g. "extract the medications from this conversation and say why")."""

from __future__ import annotations

from clinitune.data.ingest import Note
from clinitune.data.tasks import BuildResult, provenance, register
from clinitune.recipe import InstructionTask


@register("instruction")
def build_instruction(note: Note, task: str, spec: InstructionTask) -> BuildResult:
    instruction = note.meta.get(spec.instruction_field, "").strip()
    if not instruction:
        return "missing_instruction"
    inp = note.meta.get(spec.input_field, "").strip() if spec.input_field else ""
    return [
        {
            **provenance(note, task),
            "kind": "chat",
            "instruction": instruction,
            "input": inp,
            "completion": note.text.strip(),
        }
    ]
