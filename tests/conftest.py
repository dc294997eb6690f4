"""Shared fixtures.

- ``smollm_dir``: the embedded SmolLM2-135M-Instruct, imported once into the clinitune cache
  (the real tokenizer and chat template; pad == eos, the case that must still learn to stop).
- ``tiny_model_dir``: a 2-layer random Llama with SmolLM2's tokenizer: same code paths, seconds
  instead of minutes on a CPU.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("CLINITUNE_PROGRESS", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def smollm_dir() -> Path:
    from clinitune.models import resolve_model

    return resolve_model("smollm2-135m-instruct")


@pytest.fixture(scope="session")
def tokenizer(smollm_dir):
    from clinitune.models import load_tokenizer

    return load_tokenizer(smollm_dir)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, smollm_dir, tokenizer) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = LlamaForCausalLM(cfg)
    out = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.exists():
        pytest.skip(f"shared data not found at {SHARED}")
    return SHARED
