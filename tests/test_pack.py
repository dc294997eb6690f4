"""Tokenization: completion-only labels, EOS kept when pad == eos, truncation, CPT chunks."""

import pytest

from clinitune.data.pack import IGNORE, ChatFormatter, tokenize_chat, tokenize_text
from clinitune.errors import StageError

REC = {
    "instruction": "Write the plan.",
    "input": "HPI: cough for 3 days. " * 5,
    "completion": "Plan: supportive care, return if worse.",
}


def test_labels_mask_prompt_and_keep_eos_when_pad_equals_eos(tokenizer):
    assert tokenizer.pad_token_id == tokenizer.eos_token_id  # the trap this guards against
    fmt = ChatFormatter(tokenizer)
    row, status = tokenize_chat(fmt, REC, 512, "truncate_prompt")
    assert status == "ok"
    ids, labels = row["input_ids"], row["labels"]
    n_prompt = len(fmt.prompt_ids(REC))
    assert labels[:n_prompt] == [IGNORE] * n_prompt
    assert labels[n_prompt:] == ids[n_prompt:]
    assert tokenizer.eos_token_id in labels[n_prompt:], "EOS must be trained"
    completion = tokenizer.decode([t for t in labels if t != IGNORE])
    assert completion.startswith(REC["completion"])
    # the prompt is exactly what generation will see
    assert ids[:n_prompt] == fmt.prompt_ids(REC)


def test_overlong_truncates_prompt_or_drops(tokenizer):
    fmt = ChatFormatter(tokenizer)
    long = {**REC, "input": "Chest pain radiating to the left arm. " * 200}
    row, status = tokenize_chat(fmt, long, 256, "truncate_prompt")
    assert status == "truncated" and row["n_tokens"] <= 256
    kept = tokenizer.decode([t for t in row["labels"] if t != IGNORE])
    assert kept.startswith(REC["completion"]), "the completion is never cut"
    row, status = tokenize_chat(fmt, long, 256, "drop")
    assert row is None and status == "dropped_overlong"
    huge = {**REC, "completion": "word " * 400}
    row, status = tokenize_chat(fmt, huge, 256, "truncate_prompt")
    assert row is None and status == "dropped_completion_too_long"


class FakeTemplate:
    """A tokenizer whose chat template is a Python function of (messages, generation prompt)."""

    def __init__(self, tok, render):
        self.tok = tok
        self.render = render
        self.chat_template = "fake"
        self.eos_token_id = tok.eos_token_id
        self.eos_token = tok.eos_token

    def apply_chat_template(self, msgs, tokenize, add_generation_prompt, **kw):
        return self.render(msgs, add_generation_prompt)

    def __call__(self, text, add_special_tokens=False):
        return self.tok(text, add_special_tokens=add_special_tokens)


def _injects_think(msgs, gen):
    """Like Qwen3 hybrids: an empty think block before the last assistant answer."""
    if gen:
        return "<user>" + msgs[-1]["content"] + "<assistant>"
    return "<user>" + msgs[-2]["content"] + "<assistant><think></think>" + msgs[-1]["content"]


def _rewrites_prompt(msgs, gen):
    if gen:
        return "<user>" + msgs[-1]["content"] + "<assistant>"
    return "<u>" + msgs[-2]["content"] + "<assistant>" + msgs[-1]["content"]


def test_template_drift_is_an_error(tokenizer):
    with pytest.raises(StageError, match="inserts text before the answer"):
        ChatFormatter(FakeTemplate(tokenizer, _injects_think)).completion_ids(REC)
    with pytest.raises(StageError, match="renders the prompt differently"):
        ChatFormatter(FakeTemplate(tokenizer, _rewrites_prompt)).completion_ids(REC)


def test_cpt_chunks_cover_every_token(tokenizer):
    fmt = ChatFormatter(tokenizer)
    text = "The patient was seen in clinic. " * 100
    rows = tokenize_text(fmt, text, 64)
    n = len(fmt.encode(text)) + 1
    assert sum(r["n_tokens"] for r in rows) == n
    assert all(r["n_tokens"] <= 64 for r in rows)
    assert rows[-1]["input_ids"][-1] == tokenizer.eos_token_id
    assert all(r["labels"] == r["input_ids"] for r in rows)
