"""Tokenize once, before training: chat template + completion-only loss masks; CPT chunking.

One place knows the chat-template handling (training, held-out loss and generation all build
prompts here, so they cannot drift apart):

- The prompt is rendered with ``add_generation_prompt=True``; the full conversation is rendered
  and must *start with* the prompt text -- otherwise the template rewrites earlier turns (e.g.
  Qwen3 hybrids injecting ``<think></think>`` into the last assistant turn) and training and
  generation would see different tokens, so we stop with a clear error instead.
- Prompt and completion are tokenized separately and concatenated, so the label boundary is
  exact. Labels are -100 on the prompt and the token ids on the completion, *including* the
  end-of-turn / EOS token, computed from positions, never from ``pad_token_id`` -- so a model
  whose pad token equals its EOS (SmolLM2, many Llama fine-tunes) still learns to stop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from clinitune.errors import StageError

IGNORE = -100
TRUNC_MARK = "\n[...]"


def user_content(instruction: str, input_text: str) -> str:
    return f"{instruction}\n\n{input_text}" if input_text else instruction


def messages(
    record: Mapping[str, Any],
    system_prompt: str | None,
    with_answer: bool,
    input_text: str | None = None,
) -> list[dict[str, str]]:
    msgs: list[dict[str, str]] = []
    if system_prompt is not None:
        msgs.append({"role": "system", "content": system_prompt})
    inp = record["input"] if input_text is None else input_text
    msgs.append({"role": "user", "content": user_content(record["instruction"], inp)})
    if with_answer:
        msgs.append({"role": "assistant", "content": record["completion"]})
    return msgs


class ChatFormatter:
    """Renders records with a tokenizer's chat template (or plain text when it has none)."""

    def __init__(
        self,
        tokenizer: Any,
        system_prompt: str | None = None,
        template_kwargs: Mapping[str, Any] | None = None,
    ) -> None:
        self.tok = tokenizer
        self.system_prompt = system_prompt
        self.kwargs = dict(template_kwargs or {})
        self.has_template = bool(getattr(tokenizer, "chat_template", None))
        if tokenizer.eos_token_id is None:
            raise StageError("the tokenizer has no EOS token: cannot teach the model to stop")

    def _render(self, msgs: list[dict[str, str]], generation_prompt: bool) -> str:
        if not self.has_template:
            # Base models without a template: a plain instruction format.
            text = "".join(
                f"### {m['role'].capitalize()}:\n{m['content']}\n\n"
                for m in msgs
                if m["role"] != "assistant"
            )
            if generation_prompt:
                return text + "### Assistant:\n"
            return text + "### Assistant:\n" + msgs[-1]["content"] + self.tok.eos_token
        return self.tok.apply_chat_template(
            msgs, tokenize=False, add_generation_prompt=generation_prompt, **self.kwargs
        )

    def encode(self, text: str) -> list[int]:
        backend = getattr(self.tok, "backend_tokenizer", None)
        if backend is not None:
            # The Rust tokenizer directly: the same ids as ``tok(text)`` (which calls it), without
            # ~15% of per-call Python overhead in the hot path of ``prepare``.
            return backend.encode(text, add_special_tokens=False).ids
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def prompt_text(self, record: Mapping[str, Any], input_text: str | None = None) -> str:
        return self._render(messages(record, self.system_prompt, False, input_text), True)

    def prompt_ids(self, record: Mapping[str, Any], input_text: str | None = None) -> list[int]:
        return self.encode(self.prompt_text(record, input_text))

    def encode_many(self, texts: list[str]) -> list[list[int]]:
        """``encode`` for many texts in one call: the same ids, ~15% less time per text in
        ``prepare`` (the Rust batch path; ``encode_batch_fast`` skips the offsets we never
        use)."""
        backend = getattr(self.tok, "backend_tokenizer", None)
        if backend is None:
            return [self.encode(t) for t in texts]
        fast = getattr(backend, "encode_batch_fast", backend.encode_batch)
        return [e.ids for e in fast(texts, add_special_tokens=False)]

    def chat_texts(
        self, record: Mapping[str, Any], input_text: str | None = None
    ) -> tuple[str, str]:
        """(prompt text, answer text) of a chat record: the prompt as generation sees it and
        the rest of the rendered conversation, checked to be a plain continuation."""
        prompt = self.prompt_text(record, input_text)
        full = self._render(messages(record, self.system_prompt, True, input_text), False)
        if not full.startswith(prompt):
            raise StageError(
                "the chat template renders the prompt differently with and without the answer "
                "(e.g. injected <think> blocks); set model.chat_template_kwargs (such as "
                "enable_thinking: false) so training and generation see the same tokens"
            )
        answer = full[len(prompt) :]
        if not answer.lstrip().startswith(record["completion"].strip()[:50]):
            raise StageError(
                "the chat template inserts text before the answer (e.g. an empty <think></think> "
                "block): the model would learn to emit it while generation prompts lack it; set "
                "model.chat_template_kwargs (e.g. enable_thinking: false) or use a template "
                "without it"
            )
        return prompt, answer

    def with_eos(self, ids: list[int]) -> list[int]:
        if self.tok.eos_token_id not in ids:
            ids.append(self.tok.eos_token_id)  # the template does not end turns with EOS
        return ids

    def completion_ids(self, record: Mapping[str, Any], input_text: str | None = None) -> list[int]:
        return self.with_eos(self.encode(self.chat_texts(record, input_text)[1]))


def pad_id(tok: Any) -> int:
    """The id left-padded batches use: the pad token, or EOS when there is none (masked out
    either way)."""
    return tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id


def generation_prompt(
    fmt: ChatFormatter, record: Mapping[str, Any], max_seq_len: int
) -> list[int] | None:
    """The prompt ids a model is asked to continue for ``record``: the training prompt, its
    input cut from the end when prompt + reference exceed ``max_seq_len`` (at least 64), so
    evaluation sees what training saw. None when the reference alone does not fit."""
    row, _ = tokenize_chat(fmt, record, max(max_seq_len, 64), "truncate_prompt")
    if row is None:
        return None
    return row["input_ids"][: row["n_tokens"] - row["n_loss_tokens"]]


def tokenize_chat(
    fmt: ChatFormatter, record: Mapping[str, Any], max_len: int, overlong: str
) -> tuple[dict[str, Any] | None, str]:
    """Return (row, status); status is ``ok``, ``truncated`` or a drop reason."""
    prompt_text, answer = fmt.chat_texts(record)
    prompt, completion = fmt.encode(prompt_text), fmt.with_eos(fmt.encode(answer))
    return _fit_chat(fmt, record, prompt, completion, max_len, overlong)


def tokenize_chats(
    fmt: ChatFormatter, records: list[Mapping[str, Any]], max_len: int, overlong: str
) -> list[tuple[dict[str, Any] | None, str]]:
    """``tokenize_chat`` for many records, with one batched tokenizer call (``prepare``)."""
    texts = [fmt.chat_texts(r) for r in records]
    ids = fmt.encode_many([t for pair in texts for t in pair])
    return [
        _fit_chat(fmt, r, ids[2 * i], fmt.with_eos(ids[2 * i + 1]), max_len, overlong)
        for i, r in enumerate(records)
    ]


def _fit_chat(
    fmt: ChatFormatter,
    record: Mapping[str, Any],
    prompt: list[int],
    completion: list[int],
    max_len: int,
    overlong: str,
) -> tuple[dict[str, Any] | None, str]:
    status = "ok"
    if len(prompt) + len(completion) > max_len:
        if overlong == "drop":
            return None, "dropped_overlong"
        overhead = len(fmt.prompt_ids(record, input_text=TRUNC_MARK))
        budget = max_len - len(completion) - overhead
        if budget < 16:
            return None, "dropped_completion_too_long"
        body = fmt.encode(record["input"])
        # Keep the beginning of the input (chief complaint, HPI come first); retokenizing at
        # the cut can shift a token or two, so shrink until it fits.
        for _ in range(8):
            cut = fmt.tok.decode(body[:budget]) + TRUNC_MARK
            prompt = fmt.prompt_ids(record, input_text=cut)
            completion = fmt.completion_ids(record, input_text=cut)
            if len(prompt) + len(completion) <= max_len:
                break
            budget -= 4
        else:
            return None, "dropped_overlong"
        status = "truncated"
    ids = prompt + completion
    labels = [IGNORE] * len(prompt) + completion
    return {
        "input_ids": ids,
        "labels": labels,
        "n_tokens": len(ids),
        "n_loss_tokens": len(completion),
    }, status


def tokenize_text(fmt: ChatFormatter, text: str, max_len: int) -> list[dict[str, Any]]:
    """CPT: a document + EOS, cut into max_len chunks (never truncated, never dropped).
    Chunks are separate examples; the padding-free collator keeps them from attending to each
    other when they share a micro-batch."""
    return _cut_text(fmt, fmt.encode(text), max_len)


def tokenize_texts(
    fmt: ChatFormatter, texts: list[str], max_len: int
) -> list[list[dict[str, Any]]]:
    """``tokenize_text`` for many documents, with one batched tokenizer call."""
    return [_cut_text(fmt, ids, max_len) for ids in fmt.encode_many(texts)]


def _cut_text(fmt: ChatFormatter, ids: list[int], max_len: int) -> list[dict[str, Any]]:
    ids = [*ids, fmt.tok.eos_token_id]
    rows = []
    for i in range(0, len(ids), max_len):
        chunk = ids[i : i + max_len]
        if len(chunk) < 2:
            continue
        rows.append(
            {
                "input_ids": chunk,
                "labels": list(chunk),
                "n_tokens": len(chunk),
                "n_loss_tokens": len(chunk) - 1,
            }
        )
    return rows
