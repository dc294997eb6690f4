import json

import pytest

from clinitune.errors import ModelNotAvailableError
from clinitune.models import EMBEDDED, cache_dir, resolve_dtype, resolve_model


def test_embedded_model_cached_as_plain_safetensors(smollm_dir):
    assert smollm_dir.parent == cache_dir() / "models"
    assert (smollm_dir / "model.safetensors").exists()
    cfg = json.loads((smollm_dir / "config.json").read_text())
    assert "quantization_config" not in cfg, "the cached copy must load without gguf"
    assert cfg["model_type"] == "llama" and cfg["vocab_size"] == 49152
    assert resolve_model("smollm2-135m-instruct") == smollm_dir  # cached: no re-import
    assert "smollm2-135m-instruct" in EMBEDDED


def test_offline_hub_id_gives_actionable_message(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotAvailableError) as e:
        resolve_model("clinitune-test/definitely-not-cached-model")
    msg = str(e.value)
    assert "not in the local Hugging Face cache" in msg and "--set model.name=" in msg


def test_bad_local_paths(tmp_path):
    with pytest.raises(ModelNotAvailableError, match=r"needs a config\.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ModelNotAvailableError, match="not an embedded name"):
        resolve_model("./no/such/dir")


def test_dtype_policy():
    import torch

    assert resolve_dtype("auto", "cpu") == torch.float32
    assert resolve_dtype("auto", "cuda") == torch.bfloat16
    assert resolve_dtype("float16", "cpu") == torch.float16


def test_load_tokenizer_matches_autotokenizer_without_importing_torch(smollm_dir, tmp_path):
    """The generic-class shortcut returns what AutoTokenizer returns (same class, vocabulary,
    special tokens, chat template and ids), and a data worker loading it imports no torch."""
    import subprocess
    import sys

    from transformers import AutoTokenizer

    from clinitune.models import load_tokenizer

    ours, auto = load_tokenizer(smollm_dir), AutoTokenizer.from_pretrained(smollm_dir)
    assert type(ours) is type(auto)
    assert ours.backend_tokenizer.to_str() == auto.backend_tokenizer.to_str()
    assert ours.chat_template == auto.chat_template
    assert (ours.eos_token_id, ours.pad_token_id, ours.bos_token_id, len(ours)) == (
        auto.eos_token_id,
        auto.pad_token_id,
        auto.bos_token_id,
        len(auto),
    )
    msgs = [{"role": "user", "content": "HPI: 54 yo M, chest pain."}]
    assert ours.apply_chat_template(msgs, tokenize=False) == auto.apply_chat_template(
        msgs, tokenize=False
    )
    code = (
        "import sys; from pathlib import Path; from clinitune.models import load_tokenizer; "
        f"load_tokenizer(Path({str(smollm_dir)!r})); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    # A model-specific class (as Qwen's or Llama's configs name) still goes through AutoTokenizer.
    other = tmp_path / "tok"
    auto.save_pretrained(other)
    cfg = json.loads((other / "tokenizer_config.json").read_text())
    cfg["tokenizer_class"] = "GPT2Tokenizer"
    (other / "tokenizer_config.json").write_text(json.dumps(cfg))
    assert type(load_tokenizer(other)).__name__ != "TokenizersBackend"
    # A generic class in tokenizer_config.json that AutoTokenizer overrides for the model type
    # (qwen2 -> Qwen2Tokenizer) is not taken at its word either.
    qwen = tmp_path / "qwen"
    auto.save_pretrained(qwen)
    (qwen / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    assert type(load_tokenizer(qwen)) is type(AutoTokenizer.from_pretrained(qwen))
