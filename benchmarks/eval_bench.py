"""Evaluation throughput: clinitune's multiple-choice scorer against the ``lm-eval`` CLI, and
batched generation against one-at-a-time ``generate`` (issue 5's performance targets).

1. **Multiple choice.** The same questions (a seeded sample of MMLU's six medical subjects from
   ``--mmlu-dir``, the original CSVs), the same prompt (lm-eval's ``mmlu`` format, zero-shot),
   the same model (the embedded ``smollm2-135m-instruct``, fp32, CPU), the same batch size:
   * clinitune: a child process that loads the model and runs
     ``clinitune.evaluate.mcq.choice_logprobs`` (what ``clinitune evaluate`` runs);
   * lm-eval: the ``lm-eval run`` CLI as a child process, on a task YAML pointing at a JSONL
     of the same prompts (``--include_path``), ``--device cpu``, ``--log_samples``.
   Both are timed end to end (process start to exit: imports, model load, scoring), and the
   clinitune child also reports its scoring time alone. Accuracy and per-question answers must
   be identical; the script checks it. Target: ratio (lm-eval wall / clinitune wall) >= 1.0.
2. **Generation.** ``--gen-n`` dialogue -> note prompts from the quickstart's prepared test split
   are it (MTS-Dialog + ACI-Bench samples), greedy, ``--max-new-tokens``: clinitune's
   ``generate_batched`` at batch 8 (left-padded, length-sorted) against ``model.generate`` on
   one prompt at a time, in one process, the same prompts. Reported: new tokens/s of each, the
   ratio (target >= 3x at batch 8), and how many outputs are token-identical (batched fp32
   matmuls can differ in the last bits, so a rare greedy divergence is expected and counted).

Usage: ``.venv/bin/python benchmarks/eval_bench.py --n 200 --gen-n 16 --out eval_bench.json``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUBJECTS = [
    "anatomy",
    "clinical_knowledge",
    "college_biology",
    "college_medicine",
    "medical_genetics",
    "professional_medicine",
]
TASK_YAML = """task: clinitune_bench_mmlu
dataset_path: json
dataset_kwargs:
  data_files:
    test: {docs}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{context}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{label}}}}"
target_delimiter: " "
num_fewshot: 0
metric_list:
  - {{metric: acc, aggregation: mean, higher_is_better: true}}
  - {{metric: acc_norm, aggregation: mean, higher_is_better: true}}
metadata: {{version: 1.0}}
"""


def questions(mmlu_dir: Path, n: int, seed: int) -> list:
    from clinitune.evaluate.mcq import load_questions, with_prompts
    from clinitune.recipe import McqSpec

    qs = []
    for s in SUBJECTS:
        p = mmlu_dir / f"{s}_test.csv"
        spec = McqSpec(name=s, path=str(p), format="mmlu_csv")
        qs += with_prompts(spec, load_questions(spec, p, seed), [], seed)
    return random.Random(seed).sample(qs, min(n, len(qs)))


def child_clinitune(args: argparse.Namespace) -> None:
    """Child process: load the model, score the questions, write answers + timings."""
    t0 = time.perf_counter()
    import torch

    from clinitune.evaluate.mcq import choice_logprobs
    from clinitune.models import load_model, load_tokenizer, resolve_model

    torch.set_num_threads(args.threads)
    path = resolve_model("smollm2-135m-instruct")
    model = load_model(path, dtype="float32", attn="sdpa", device="cpu").eval()
    tok = load_tokenizer(path)
    qs = questions(Path(args.mmlu_dir), args.n, args.seed)
    t1 = time.perf_counter()
    lps = choice_logprobs(model, tok, qs, "cpu", args.batch_size, "clinitune")
    t2 = time.perf_counter()
    preds = [max(range(len(lp)), key=lp.__getitem__) for lp in lps]
    Path(args.child_out).write_text(
        json.dumps(
            {
                "preds": preds,
                "lls": lps,
                "answers": [q.answer for q in qs],
                "setup_s": t1 - t0,
                "score_s": t2 - t1,
            }
        )
    )


def run_timed(cmd: list[str], env: dict[str, str]) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr[-3000:]}")
    return wall, p


def bench_mcq(args: argparse.Namespace, work: Path) -> dict:
    from clinitune.models import resolve_model

    qs = questions(Path(args.mmlu_dir), args.n, args.seed)
    docs = work / "docs.jsonl"
    with open(docs, "w", encoding="utf-8") as f:
        for q in qs:
            f.write(json.dumps({"context": q.context, "choices": [c[1:] for c in q.choices],
                                "label": q.answer}) + "\n")  # fmt: skip
    tasks = work / "tasks"
    tasks.mkdir(exist_ok=True)
    (tasks / "bench.yaml").write_text(TASK_YAML.format(docs=docs))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "HF_DATASETS_CACHE": str(work / "hf_datasets"), "OMP_NUM_THREADS": str(args.threads),
           "CLINITUNE_PROGRESS": "0", "TOKENIZERS_PARALLELISM": "false"}  # fmt: skip
    out: dict = {"n": len(qs), "batch_size": args.batch_size}
    runs = []
    order = (
        ["clinitune", "lm_eval"] if args.order == "clinitune-first" else ["lm_eval", "clinitune"]
    )
    for who in order:
        if who == "clinitune":
            child_out = work / "clinitune.json"
            cmd = [sys.executable, __file__, "--child", "--child-out", str(child_out),
                   "--n", str(args.n), "--seed", str(args.seed), "--mmlu-dir", args.mmlu_dir,
                   "--batch-size", str(args.batch_size),
                   "--threads", str(args.threads)]  # fmt: skip
            wall, _ = run_timed(cmd, env)
            c = json.loads(child_out.read_text())
            right = sum(p == a for p, a in zip(c["preds"], c["answers"], strict=True))
            out["clinitune"] = {"wall_s": wall, "setup_s": c["setup_s"],
                                "score_s": c["score_s"], "acc": right / len(qs)}  # fmt: skip
            ours = c
        else:
            lm_out = work / "lm_eval_out"
            exe = Path(sys.executable).with_name("lm-eval")
            cmd = [str(exe), "run", "--model", "hf", "--model_args",
                   f"pretrained={resolve_model('smollm2-135m-instruct')},dtype=float32",
                   "--tasks", "clinitune_bench_mmlu", "--include_path", str(tasks),
                   "--device", "cpu", "--batch_size", str(args.batch_size),
                   "--output_path", str(lm_out), "--log_samples"]  # fmt: skip
            wall, _ = run_timed(cmd, env)
            sample_file = sorted(lm_out.rglob("samples_clinitune_bench_mmlu_*.jsonl"))[-1]
            samples = sorted(
                (json.loads(x) for x in sample_file.read_text().splitlines() if x.strip()),
                key=lambda s: s["doc_id"],
            )
            res_file = sorted(lm_out.rglob("results_*.json"))[-1]
            res = json.loads(res_file.read_text())["results"]["clinitune_bench_mmlu"]
            theirs = [[float(r[0]) for r in s["filtered_resps"]] for s in samples]
            out["lm_eval"] = {"wall_s": wall, "acc": res["acc,none"]}
        runs.append(who)
    their_preds = [max(range(len(lp)), key=lp.__getitem__) for lp in theirs]
    out["same_answers"] = sum(a == b for a, b in zip(ours["preds"], their_preds, strict=True))
    out["max_abs_ll_diff"] = max(
        abs(a - b)
        for x, y in zip(ours["lls"], theirs, strict=True)
        for a, b in zip(x, y, strict=True)
    )
    out["identical_accuracy"] = abs(out["clinitune"]["acc"] - out["lm_eval"]["acc"]) < 1e-12
    out["ratio_wall"] = out["lm_eval"]["wall_s"] / out["clinitune"]["wall_s"]
    out["order"] = runs
    return out


def bench_generation(args: argparse.Namespace, work: Path) -> dict:
    import torch

    from clinitune.data.pack import ChatFormatter, tokenize_chat
    from clinitune.data.prepare import prepare, read_records
    from clinitune.generate import _stop_ids, generate_batched, sample_records
    from clinitune.models import load_model, load_tokenizer, resolve_model
    from clinitune.recipe import load_recipe
    from clinitune.run import RunLayout

    torch.set_num_threads(args.threads)
    recipe = load_recipe("quickstart", [f"run_dir={work / 'qs'}"])
    layout = RunLayout(work / "qs")
    prepare(recipe, layout)
    recs = sample_records(read_records(layout.prepared, "test"), None, args.gen_n, args.seed)
    recs = random.Random(args.seed).sample(recs, min(args.gen_n, len(recs)))
    path = resolve_model("smollm2-135m-instruct")
    tok = load_tokenizer(path)
    model = load_model(path, dtype="float32", attn="sdpa", device="cpu").eval()
    fmt = ChatFormatter(tok)
    prompts = []
    for r in recs:
        row, _ = tokenize_chat(fmt, r, recipe.data.max_seq_len, "truncate_prompt")
        if row is not None:
            prompts.append(row["input_ids"][: row["n_tokens"] - row["n_loss_tokens"]])
    kw = {"max_new_tokens": args.max_new_tokens, "device": "cpu", "desc": "gen"}
    t0 = time.perf_counter()
    batched = generate_batched(model, tok, prompts, batch_size=8, **kw)
    t_b = time.perf_counter() - t0
    eos = _stop_ids(tok, model)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    single = []
    t0 = time.perf_counter()
    for p in prompts:
        with torch.inference_mode():
            g = model.generate(input_ids=torch.tensor([p]), do_sample=False,
                               max_new_tokens=args.max_new_tokens, eos_token_id=eos,
                               pad_token_id=pad)  # fmt: skip
        seq = g[0, len(p) :].tolist()
        if any(t in eos for t in seq):
            seq = seq[: min(seq.index(t) for t in eos if t in seq)]
        single.append(seq)
    t_s = time.perf_counter() - t0
    nb = sum(len(s) for s, _ in batched)
    ns = sum(len(s) for s in single)
    return {
        "prompts": len(prompts),
        "prompt_tokens_mean": sum(map(len, prompts)) / len(prompts),
        "max_new_tokens": args.max_new_tokens,
        "batched": {"batch_size": 8, "wall_s": t_b, "new_tokens": nb, "tok_per_s": nb / t_b},
        "one_at_a_time": {"wall_s": t_s, "new_tokens": ns, "tok_per_s": ns / t_s},
        "ratio": (nb / t_b) / (ns / t_s),
        "identical_outputs": sum(a == b for (a, _), b in zip(batched, single, strict=True)),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=200, help="MMLU medical questions")
    ap.add_argument("--gen-n", type=int, default=16, help="prompts for the generation benchmark")
    from clinitune.recipe import GenerationSpec

    ap.add_argument(
        "--max-new-tokens",
        type=int,
        default=GenerationSpec.model_fields["max_new_tokens"].default,
        help="the recipe's default for note generation unless given (the paper recipes use "
        "512 and 1024)",
    )
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mmlu-dir", default=str(ROOT.parent / "shared" / "data" / "mmlu" / "test"))
    ap.add_argument("--order", choices=["clinitune-first", "lm-eval-first"],
                    default="clinitune-first")  # fmt: skip
    ap.add_argument("--skip", choices=["mcq", "generation"], action="append", default=[])
    ap.add_argument("--out", default=None)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child_clinitune(args)
        return
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python "
          f"{platform.python_version()}, threads {args.threads}", flush=True)  # fmt: skip
    res: dict = {"args": vars(args), "date": time.strftime("%Y-%m-%d %H:%M")}
    with tempfile.TemporaryDirectory() as d:
        work = Path(d)
        if "mcq" not in args.skip:
            m = res["mcq"] = bench_mcq(args, work)
            print(f"multiple choice, {m['n']} MMLU medical questions, batch {m['batch_size']}:")
            c = m["clinitune"]
            print(f"  clinitune  wall {c['wall_s']:.1f} s (scoring {c['score_s']:.1f} s) "
                  f"acc {c['acc']:.4f}")  # fmt: skip
            print(f"  lm-eval    wall {m['lm_eval']['wall_s']:.1f} s acc {m['lm_eval']['acc']:.4f}")
            print(f"  same answers {m['same_answers']}/{m['n']}, max |ll diff| "
                  f"{m['max_abs_ll_diff']:.2e}, identical accuracy {m['identical_accuracy']}; "
                  f"ratio lm-eval/clinitune wall {m['ratio_wall']:.2f}x "
                  "(target >= 1.0)")  # fmt: skip
        if "generation" not in args.skip:
            g = res["generation"] = bench_generation(args, work)
            print(f"generation, {g['prompts']} prompts (mean {g['prompt_tokens_mean']:.0f} "
                  f"tokens), <= {g['max_new_tokens']} new tokens, greedy:")  # fmt: skip
            print(f"  batched (8)    {g['batched']['tok_per_s']:.1f} new tok/s "
                  f"({g['batched']['wall_s']:.1f} s)")  # fmt: skip
            print(f"  one at a time  {g['one_at_a_time']['tok_per_s']:.1f} new tok/s "
                  f"({g['one_at_a_time']['wall_s']:.1f} s)")  # fmt: skip
            print(f"  ratio {g['ratio']:.2f}x (target >= 3x); identical outputs "
                  f"{g['identical_outputs']}/{g['prompts']}")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
