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
