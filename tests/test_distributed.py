"""Sharded training on CPU: 2 processes (gloo) under ``accelerate launch``.

FSDP2 (full shard, ``SHARDED_STATE_DICT``) with ``examples/accelerate/fsdp_cpu_2proc.yaml``, and
DeepSpeed ZeRO-3 with ``deepspeed_zero3_cpu_2proc.yaml`` when deepspeed is installed. Each runs
``tests/dist_train_script.py`` (the Trainer as clinitune's runner builds it) for 4 steps with a
checkpoint every 2, then again from checkpoint-2, and checks that:

- every rank holds about half of the parameters (FSDP2 DTensor shards / ZeRO-3 partitions);
- the checkpoint is sharded: one file per rank;
- resuming from it gives the uninterrupted run's losses and final weights;
- the gathered final model is a plain HF model that ``from_pretrained`` loads.

See docs/distributed.md for the CPU caveats (accelerate only enables FSDP on CPU through the
script's shim; DeepSpeed needs use_cpu=False + gloo).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "dist_train_script.py"
CONFIGS = ROOT / "examples" / "accelerate"
TIMEOUT_S = 300  # one launch takes ~20 s on 2 cores


def _launch(config: Path, model: Path, out: Path, *extra: str) -> list[dict]:
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "CLINITUNE_PROGRESS": "0",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
    }
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(config),
        "--main_process_port", "0",  # a free port: tests may run side by side
        str(SCRIPT), "--model", str(model), "--out", str(out), *extra,
    ]  # fmt: skip
    # its own session, so a hang (a collective one rank never joins) is killed with its workers
    p = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = p.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        stdout, stderr = p.communicate()
        pytest.fail(f"accelerate launch hung for {TIMEOUT_S}s:\n{stderr[-6000:]}")
    assert p.returncode == 0, stdout[-3000:] + stderr[-6000:]
    return [json.loads((out / f"rank{i}.json").read_text()) for i in range(2)]


def _assert_sharded(ranks: list[dict]) -> None:
    total = ranks[0]["total_numel"]
    for i, rep in enumerate(ranks):
        assert rep["rank"] == i and rep["world_size"] == 2
        # each rank holds its half (ZeRO-3 keeps tiny params whole, FSDP2 pads uneven dims)
        assert 0.45 * total < rep["local_numel"] < 0.6 * total, rep
    assert ranks[0]["losses"] == ranks[1]["losses"], "ranks agree on the (all-reduced) loss"


def _assert_final_model(final: Path, base: Path, again: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(final)
    b = AutoModelForCausalLM.from_pretrained(base)
    sd, bsd = m.state_dict(), b.state_dict()
    assert set(sd) == set(bsd)
    assert not torch.equal(sd["model.layers.0.mlp.up_proj.weight"],
                           bsd["model.layers.0.mlp.up_proj.weight"]), "trained"  # fmt: skip
    r = AutoModelForCausalLM.from_pretrained(again).state_dict()
    for k in sd:
        assert torch.allclose(sd[k], r[k], atol=1e-6), f"{k}: resumed run ends elsewhere"


def _run_and_resume(tmp_path: Path, config: Path, model: Path) -> tuple[list[dict], list[dict]]:
    out = tmp_path / "run"
    first = _launch(config, model, out)
    ckpt = out / "checkpoints"
    assert sorted(p.name for p in ckpt.iterdir()) == ["checkpoint-2", "checkpoint-4"]
    shutil.rmtree(ckpt / "checkpoint-4")  # as if killed after step 2 had been saved
    resumed = _launch(config, model, out, "--resume", str(ckpt / "checkpoint-2"),
                      "--final", "final-resumed")  # fmt: skip
    _assert_sharded(first)
    assert sorted(first[0]["losses"]) == ["1", "2", "3", "4"]
    assert sorted(resumed[0]["losses"]) == ["3", "4"], "resumed at step 3"
    for step in ("3", "4"):
        assert resumed[0]["losses"][step] == pytest.approx(first[0]["losses"][step], abs=1e-5)
    _assert_final_model(out / "final", model, out / "final-resumed")
    return first, resumed


def test_fsdp2_two_cpu_processes_shard_checkpoint_and_resume(tmp_path, tiny_model_dir):
    first, resumed = _run_and_resume(tmp_path, CONFIGS / "fsdp_cpu_2proc.yaml", tiny_model_dir)
    for rep in first + resumed:
        assert rep["distributed_type"] == "FSDP" and rep["fsdp2"], rep
        assert rep["param_types"] == ["DTensor"], "every parameter is an FSDP2 shard"
    ck = tmp_path / "run" / "checkpoints" / "checkpoint-2"
    for part in ("pytorch_model_fsdp_0", "optimizer_0"):  # torch.distributed.checkpoint (DCP)
        files = sorted(p.name for p in (ck / part).iterdir())
        assert files == [".metadata", "__0_0.distcp", "__1_0.distcp"], (part, files)
    assert not list(ck.glob("*.safetensors")), "no full copy of the weights in a checkpoint"
    assert {p.name for p in ck.glob("rng_state_*.pth")} == {"rng_state_0.pth", "rng_state_1.pth"}


def test_deepspeed_zero3_two_cpu_processes_shard_checkpoint_and_resume(tmp_path, tiny_model_dir):
    pytest.importorskip("deepspeed")
    first, resumed = _run_and_resume(
        tmp_path, CONFIGS / "deepspeed_zero3_cpu_2proc.yaml", tiny_model_dir
    )
    for rep in first + resumed:
        assert rep["distributed_type"] == "DEEPSPEED", rep
    step = tmp_path / "run" / "checkpoints" / "checkpoint-2" / "global_step2"
    assert {p.name for p in step.glob("*optim_states.pt")} == {
        "zero_pp_rank_0_mp_rank_00_optim_states.pt",
        "zero_pp_rank_1_mp_rank_00_optim_states.pt",
    }


def test_clinitune_train_under_fsdp_two_cpu_processes(tmp_path, tiny_model_dir):
    """The real runner (`clinitune train`) under accelerate launch with FSDP2 on 2 processes:
    one log, one manifest, a gathered plain-HF model; --resume continues the stage."""
    from transformers import AutoModelForCausalLM

    from clinitune.data.prepare import prepare
    from clinitune.recipe import load_recipe
    from clinitune.run import RunLayout

    sets = [
        "data.sources.aci.limit=6", "data.sources.mts.limit=30", "data.max_seq_len=256",
        "train.sft.max_steps=4", "train.sft.batch_size=2", "train.sft.save_steps=2",
        "train.sft.report_to=[]",
    ]  # fmt: skip
    r = load_recipe("quickstart", [f"model.name={tiny_model_dir}", f"run_dir={tmp_path}", *sets])
    layout = RunLayout(r.run_path)
    prepare(r, layout)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CLINITUNE_PROGRESS": "0",
           "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}  # fmt: skip
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch",
        "--config_file", str(CONFIGS / "fsdp_cpu_2proc.yaml"), "--main_process_port", "0",
        str(ROOT / "tests" / "fsdp_cpu_cli.py"), "train", "quickstart",
        "--run-dir", str(tmp_path), "--model", str(tiny_model_dir),
    ]  # fmt: skip
    for s in sets:
        cmd += ["--set", s]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-4000:]
    stage = layout.stage("sft")
    steps = [json.loads(x)["step"] for x in (stage / "train_log.jsonl").read_text().splitlines()
             if "loss" in json.loads(x)]  # fmt: skip
    assert steps == [1, 2, 3, 4], "one rank writes the log"
    assert (p.stdout + p.stderr).count("train:sft: done") == 1  # one summary line
    manifest = json.loads((stage / "manifest.json").read_text())
    assert manifest["counts"]["world_size"] == 2
    ckpt = stage / "checkpoints" / "checkpoint-4"
    assert len(list((ckpt / "pytorch_model_fsdp_0").glob("*.distcp"))) == 2  # sharded
    model = AutoModelForCausalLM.from_pretrained(stage / "model")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert set(model.state_dict()) == set(base.state_dict())
