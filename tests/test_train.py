"""Training batches: packed examples stay independent, prompts are masked, EOS is trained."""

import torch
from transformers import DataCollatorWithFlattening, LlamaConfig, LlamaForCausalLM

from clinitune.data.pack import IGNORE, ChatFormatter, tokenize_chat
from clinitune.train.runner import disable_kv_cache


def _tiny(vocab=1000):
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(cfg)


def test_packed_training_forward_does_not_cross_attend():
    """The exact call the Trainer makes: a flattened batch from DataCollatorWithFlattening, in
    train mode, after disable_kv_cache. Without disable_kv_cache this fails on transformers
    5.23 (examples 2+ see example 1)."""
    model = _tiny()
    model.train()
    disable_kv_cache(model)
    g = torch.Generator().manual_seed(1)
    seqs = [torch.randint(5, 1000, (n,), generator=g).tolist() for n in (17, 40, 9)]
    batch = DataCollatorWithFlattening()([{"input_ids": s, "labels": s} for s in seqs])
    model.eval()  # no dropout; the cache setting is what matters
    with torch.no_grad():
        packed = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        start = 0
        for s in seqs:
            alone = model(input_ids=torch.tensor([s])).logits[0]
            assert torch.allclose(packed[start : start + len(s)], alone, atol=1e-4)
            start += len(s)


def test_use_cache_false_makes_position_id_packing_exact():
    """Why disable_kv_cache exists: with the cache on, transformers 5.23 skips packed-sequence
    detection (checked by hand: max |diff| ~0.6 in logits); with it off, packing is exact."""
    model = _tiny().eval()
    seqs = [list(range(5, 22)), list(range(30, 70))]
    ids = torch.tensor([seqs[0] + seqs[1]])
    pos = torch.tensor([list(range(17)) + list(range(40))])
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=pos).logits[0, 17:]
        alone = model(input_ids=torch.tensor([seqs[1]])).logits[0]
    # With the cache on, the second example sees the first. If this assert starts failing,
    # transformers changed the behaviour and disable_kv_cache may no longer be needed.
    assert not torch.allclose(packed, alone, atol=1e-4)
    model.config.use_cache = False
    with torch.no_grad():
        packed = model(input_ids=ids, position_ids=pos).logits[0, 17:]
    assert torch.allclose(packed, alone, atol=1e-4)


def test_real_batch_labels(tokenizer):
    """Inspect the labels of a real collated batch: prompt masked, completion + EOS trained,
    no loss across the boundary between packed examples."""
    fmt = ChatFormatter(tokenizer)
    recs = [
        {
            "instruction": "Write the plan.",
            "input": "Cough x3 days.",
            "completion": "Supportive care.",
        },
        {
            "instruction": "Write the assessment.",
            "input": "Chest pain.",
            "completion": "Likely GERD.",
        },
    ]
    rows = [tokenize_chat(fmt, r, 256, "drop")[0] for r in recs]
    batch = DataCollatorWithFlattening()(
        [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in rows]
    )
    labels = batch["labels"][0].tolist()
    n0 = len(rows[0]["input_ids"])
    # the first token of the second example never gets a label (no cross-example target)
    assert labels[n0] == IGNORE
    trained = [t for t in labels if t != IGNORE]
    text = tokenizer.decode(trained)
    assert "Supportive care." in text and "Likely GERD." in text
    assert "Write the plan" not in text and "Cough" not in text
    assert trained.count(tokenizer.eos_token_id) == 2, "each example's end-of-turn is trained"
    assert batch["position_ids"][0].tolist()[n0] == 0


def _lora_run(tmp_path, tiny_model_dir, merge: bool):
    from clinitune.data.prepare import prepare
    from clinitune.recipe import load_recipe
    from clinitune.run import RunLayout
    from clinitune.train.runner import train

    r = load_recipe(
        "quickstart",
        [
            f"model.name={tiny_model_dir}",
            f"run_dir={tmp_path / 'run'}",
            "data.sources.aci.limit=6",
            "data.sources.mts.limit=30",
            "data.max_seq_len=256",
            "train.sft.method=lora",
            "train.sft.max_steps=3",
            "train.sft.batch_size=2",
            "train.sft.lora.r=4",
            f"train.sft.merge_lora={str(merge).lower()}",
        ],
    )
    layout = RunLayout(r.run_path)
    prepare(r, layout)
    (res,) = train(r, layout)
    return res


def test_lora_stage_merged_loads_as_plain_model(tmp_path, tiny_model_dir):
    from transformers import AutoModelForCausalLM

    res = _lora_run(tmp_path, tiny_model_dir, merge=True)
    s = res.summary
    assert 0 < s["trainable_params"] < s["params"] / 2, "only adapters train"
    assert not (res.model_dir / "adapter_config.json").exists()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    merged = AutoModelForCausalLM.from_pretrained(res.model_dir)
    assert set(merged.state_dict()) == set(base.state_dict()), "no leftover lora_ keys"


def test_lora_stage_unmerged_saves_adapter(tmp_path, tiny_model_dir):
    res = _lora_run(tmp_path, tiny_model_dir, merge=False)
    assert (res.model_dir / "adapter_config.json").exists()
    from peft import AutoPeftModelForCausalLM

    AutoPeftModelForCausalLM.from_pretrained(res.model_dir)


def test_merge_lora_command_gives_the_same_logits(tmp_path, tiny_model_dir):
    import torch
    from peft import AutoPeftModelForCausalLM
    from transformers import AutoModelForCausalLM
    from typer.testing import CliRunner

    from clinitune.cli import app

    res = _lora_run(tmp_path, tiny_model_dir, merge=False)
    out = tmp_path / "merged"
    r = CliRunner().invoke(app, ["merge-lora", str(res.model_dir), str(out)])
    assert r.exit_code == 0, r.output
    assert not (out / "adapter_config.json").exists()
    ids = torch.randint(5, 1000, (1, 20))
    with torch.no_grad():
        want = AutoPeftModelForCausalLM.from_pretrained(res.model_dir)(input_ids=ids).logits
        got = AutoModelForCausalLM.from_pretrained(out)(input_ids=ids).logits
    assert torch.allclose(want, got, atol=1e-4)
    bad = CliRunner().invoke(app, ["merge-lora", str(tiny_model_dir), str(out)])
    assert bad.exit_code == 2 and "not a LoRA adapter" in bad.output
