"""Batched greedy generation gives the tokens of one-at-a-time ``generate``."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def smollm(smollm_dir, tokenizer):
    from clinitune.models import load_model

    return load_model(smollm_dir, dtype="float32", attn="sdpa", device="cpu").eval()


def _one_at_a_time(model, tok, prompts, max_new_tokens):
    import torch

    from clinitune.data.pack import pad_id
    from clinitune.generate import _stop_ids

    eos = _stop_ids(tok, model)
    out = []
    for p in prompts:
        with torch.inference_mode():
            g = model.generate(input_ids=torch.tensor([p]), do_sample=False,
                               max_new_tokens=max_new_tokens, eos_token_id=eos,
                               pad_token_id=pad_id(tok))  # fmt: skip
        seq = g[0, len(p) :].tolist()
        stopped = any(t in eos for t in seq)
        if stopped:
            seq = seq[: min(seq.index(t) for t in eos if t in seq)]
        out.append((seq, stopped))
    return out


def test_batched_generation_equals_one_at_a_time(smollm, tokenizer, monkeypatch):
    from clinitune import generate as gen

    texts = [
        "Patient reports chest pain radiating to the left arm since this morning.",
        "Assessment:",
        "The patient is a 67-year-old woman with shortness of breath and leg swelling for "
        "three days; she has a history of heart failure and missed her diuretic.",
        "Plan: CBC, BMP, troponin, ECG.",
    ]
    prompts = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    prompts.append(prompts[0][:1])  # a one-token prompt: the most padding in its batch
    calls = []
    real = gen._prefill_each
    monkeypatch.setattr(gen, "_prefill_each", lambda *a, **k: calls.append(1) or real(*a, **k))
    batched = gen.generate_batched(smollm, tokenizer, prompts, batch_size=3, max_new_tokens=10,
                                   device="cpu", desc="gen")  # fmt: skip
    assert len(calls) == 2  # the fast path ran (per-prompt prefill into the preallocated cache)
    single = _one_at_a_time(smollm, tokenizer, prompts, 10)
    assert batched == single
    # the GPU path: one padded prefill of the batch into the preallocated cache
    padded = gen.generate_batched(smollm, tokenizer, prompts, batch_size=3, max_new_tokens=10,
                                  device="cpu", desc="gen", prefill_each=False)  # fmt: skip
    assert len(calls) == 2 and padded == single


def test_preallocated_cache_matches_dynamic_cache():
    """Appends in place, grows past its capacity, and survives the cache edits generate and
    beam search make (crop, batch reorder / repeat): same keys and values as DynamicCache."""
    import torch
    from transformers import DynamicCache

    from clinitune.generate import preallocated_cache

    torch.manual_seed(0)
    ours, ref = preallocated_cache(6), DynamicCache()

    def step(n, b=2):
        k, v = torch.randn(b, 3, n, 4), torch.randn(b, 3, n, 4)
        got, want = ours.update(k, v, 0), ref.update(k, v, 0)
        for g, w in zip(got, want, strict=True):
            torch.testing.assert_close(g, w, rtol=0, atol=0)

    step(4)
    step(1)
    step(1)
    step(3)  # past the capacity of 6
    assert ours.get_seq_length() == ref.get_seq_length() == 9
    ours.crop(-2), ref.crop(-2)
    step(1)
    idx = torch.tensor([1, 0])
    ours.batch_select_indices(idx), ref.batch_select_indices(idx)
    step(2)
    ours.batch_repeat_interleave(2), ref.batch_repeat_interleave(2)
    step(1, b=4)
    assert ours.get_seq_length() == ref.get_seq_length() == 11


def test_preallocated_cache_only_for_plain_full_attention():
    from transformers import (
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
    )

    from clinitune.generate import _full_attention_only

    small = dict(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                 num_attention_heads=2, num_key_value_heads=1)  # fmt: skip
    llama = LlamaForCausalLM(LlamaConfig(**small))
    assert _full_attention_only(llama)
    assert not _full_attention_only(MistralForCausalLM(MistralConfig(**small, sliding_window=4)))
    llama.generation_config.cache_implementation = "static"
    assert not _full_attention_only(llama)
