"""The ``clinitune`` command: parse, load the recipe, call a stage, print a summary.

Every flag maps to a recipe field (``--run-dir`` -> ``run_dir``, ``--model`` -> ``model.name``,
``--seed`` -> ``seed``; ``--set a.b=c`` reaches any other). User errors exit with code 2 and a
one-line message, no traceback.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from clinitune import __version__
from clinitune.errors import ClinituneError

app = typer.Typer(
    name="clinitune",
    help="Turn de-identified clinical notes into a specialized open LLM, and prove what it "
    "gained and kept. Stages: prepare -> train -> generate -> evaluate -> report "
    "(`run` does them all; `quickstart` runs the bundled demo on a CPU in minutes).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

RecipeArg = Annotated[
    str,
    typer.Argument(
        help="Recipe YAML file, or a bundled recipe name (quickstart, mdm_qwen3_4b, heal_soap)."
    ),
]
SetOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--set", "-s", help="Override a recipe field: --set train.sft.max_steps=10 (repeatable)."
    ),
]
RunDirOpt = Annotated[
    Path | None,
    typer.Option("--run-dir", "-o", help="Run directory (recipe: run_dir; default runs/<name>)."),
]
ModelOpt = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Model name, local path or hub id (recipe: model.name)."),
]
SeedOpt = Annotated[int | None, typer.Option(help="Random seed (recipe: seed).")]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Rerun even if the stage's outputs are up to date.")
]
ResumeOpt = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Continue an interrupted stage from its newest complete checkpoint "
        "(train.<stage>.save_steps): model, optimizer, scheduler, RNG and data position.",
    ),
]


def _quiet_libraries() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore", message=".*Gemma.*|.*torch_dtype.*|.*resume_download.*")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def user_errors(fn: F) -> F:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ClinituneError as e:
            console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper  # type: ignore[return-value]


def _load(
    recipe: str,
    sets: list[str] | None,
    run_dir: Path | None = None,
    model: str | None = None,
    seed: int | None = None,
):
    from clinitune.recipe import load_recipe
    from clinitune.run import RunLayout

    overrides = list(sets or [])
    if run_dir is not None:
        overrides.append(f"run_dir={run_dir}")
    if model is not None:
        overrides.append(f"model.name={model}")
    if seed is not None:
        overrides.append(f"seed={seed}")
    r = load_recipe(recipe, overrides)
    _quiet_libraries()
    return r, RunLayout(r.run_path)


def _done(what: str, skipped: bool, t0: float, detail: str = "") -> None:
    if os.environ.get("RANK", "0") != "0":
        return  # under accelerate launch / torchrun, one summary line (from rank 0)
    state = "[dim]up to date, skipped[/]" if skipped else f"done in {time.perf_counter() - t0:.0f}s"
    console.print(f"[bold]{what}[/]: {state}{(' · ' + detail) if detail else ''}")


# ------------------------------------------------------------------------------ stages
def _prepare(r: Any, layout: Any, force: bool) -> None:
    from clinitune.data.prepare import prepare as run_prepare

    t0 = time.perf_counter()
    res = run_prepare(r, layout, force=force)
    c = res.manifest.get("counts", {})
    tok = c.get("tokenize", {})
    detail = ", ".join(
        f"{s} {v.get('rows_out', 0)} rows / {v.get('tokens', 0):,} tokens" for s, v in tok.items()
    )
    _done("prepare", res.skipped, t0, detail)
    for w in res.manifest.get("warnings", []):
        console.print(f"[yellow]warning:[/] {w}")


def _train(r: Any, layout: Any, force: bool, resume: bool = False) -> None:
    from clinitune.train.runner import train as run_train

    t0 = time.perf_counter()
    for res in run_train(r, layout, force=force, resume=resume):
        s = res.summary
        detail = (
            f"{s.get('steps')} steps, training loss (mean of first/last 5 steps) "
            f"{s['first_loss_mean5']:.3f} -> {s['last_loss_mean5']:.3f}, "
            f"{s.get('tokens_per_s_estimate')} tok/s"
            if s.get("first_loss_mean5") is not None
            else ""
        )
        _done(f"train:{res.name}", res.skipped, t0, detail)


def _evaluate(r: Any, layout: Any, force: bool) -> dict[str, Any]:
    from clinitune.evaluate.suite import evaluate as run_evaluate

    t0 = time.perf_counter()
    res = run_evaluate(r, layout, force=force)
    _done("generate + evaluate", res.skipped, t0, str(res.metrics_path))
    return res.metrics


def _report(r: Any, layout: Any) -> Path:
    from clinitune.report.html import write_report

    t0 = time.perf_counter()
    path = write_report(r, layout)
    _done("report", False, t0, str(path))
    return path


def _summary(metrics: dict[str, Any]) -> None:
    from clinitune.report.html import classification_rows, comparison_rows

    models = list(metrics["models"])
    t = Table(title="base vs tuned", show_lines=False)
    t.add_column("metric")
    for m in models:
        t.add_column(m, justify="right")
    others = [m for m in models if m != metrics["baseline"]]
    for m in others:
        t.add_column(f"Δ {m} [95% CI]", justify="right")
    keep = ("loss", " accuracy (n=", " F1", " MCC", " AUROC", "diagnosis")
    for row in comparison_rows(metrics):
        # per-task note scores, divisions and MMLU subjects are in the report only
        if "·" in row["name"] and not any(k in row["name"] for k in keep):
            continue
        vals = [
            f"{v:.3f}" if isinstance(v, float) else "—" if v is None else str(v)
            for v in row["vals"]
        ]
        deltas = []
        for m in others:
            c = row["cmp"].get(m)
            if not c:
                deltas.append("")
            elif "ci_low" in c:
                p = f" p={c['p_value']:.2f}" if "p_value" in c else ""
                deltas.append(f"{c['diff']:+.3f} [{c['ci_low']:+.3f}, {c['ci_high']:+.3f}]{p}")
            else:
                deltas.append(f"{c['diff']:+.3f} (p={c['p_value']:.2f})")
        t.add_row(row["name"], *vals, *deltas)
    console = Console()
    console.print(t)
    for r in classification_rows(metrics):
        if r["collapse"]["collapsed"]:
            c = r["collapse"]
            console.print(
                f"[bold red]label collapse[/]: {r['model']} · {r['task']} · {r['method']}: "
                f"{c['pred_majority_share']:.0%} of answers are {c['pred_majority']!r} "
                "(see report.html; a brief task fine-tune or calibration may fix it)"
            )


@app.command()
@user_errors
def prepare(
    recipe: RecipeArg,
    set_: SetOpt = None,
    run_dir: RunDirOpt = None,
    model: ModelOpt = None,
    seed: SeedOpt = None,
    force: ForceOpt = False,
) -> None:
    """Ingest raw notes, split into sections, build task records, split by patient, tokenize."""
    r, layout = _load(recipe, set_, run_dir, model, seed)
    _prepare(r, layout, force)


@app.command()
@user_errors
def train(
    recipe: RecipeArg,
    set_: SetOpt = None,
    run_dir: RunDirOpt = None,
    model: ModelOpt = None,
    seed: SeedOpt = None,
    force: ForceOpt = False,
    resume: ResumeOpt = False,
) -> None:
    """Run the recipe's training stages in order (cpt -> sft -> task), each from the last."""
    r, layout = _load(recipe, set_, run_dir, model, seed)
    _train(r, layout, force, resume)


@app.command("merge-lora")
@user_errors
def merge_lora(
    adapter: Annotated[Path, typer.Argument(help="A LoRA adapter directory (a stage's model/).")],
    out: Annotated[Path, typer.Argument(help="Where to write the merged model.")],
    base: Annotated[
        Path | None, typer.Option(help="Base model directory (default: the adapter's own).")
    ] = None,
) -> None:
    """Merge a LoRA adapter into its base weights: a plain HF model for serving or evaluation."""
    from clinitune.train.runner import merge_lora as run_merge

    t0 = time.perf_counter()
    path = run_merge(adapter, out, base)
    _done("merge-lora", False, t0, str(path))


@app.command()
@user_errors
def generate(
    recipe: RecipeArg,
    set_: SetOpt = None,
    run_dir: RunDirOpt = None,
    model: ModelOpt = None,
    seed: SeedOpt = None,
    force: ForceOpt = False,
) -> None:
    """Generate on the held-out split with every model in evaluate.models."""
    from clinitune.generate import generate as run_generate

    r, layout = _load(recipe, set_, run_dir, model, seed)
    t0 = time.perf_counter()
    paths = run_generate(r, layout, force=force)
    _done("generate", False, t0, ", ".join(str(p) for p in paths.values()))


@app.command()
@user_errors
def evaluate(
    recipe: RecipeArg,
    set_: SetOpt = None,
    run_dir: RunDirOpt = None,
    model: ModelOpt = None,
    seed: SeedOpt = None,
    force: ForceOpt = False,
    models: Annotated[
        str | None,
        typer.Option(
            "--models",
            help="Comma-separated models to evaluate, the first is the baseline: base, final, "
            "a stage name, a model directory, an embedded name or a hub id in the local cache "
            "(recipe: evaluate.models). --model stays the base model (model.name), as in every "
            "command.",
        ),
    ] = None,
    baseline: Annotated[
        str | None,
        typer.Option(
            "--baseline",
            help="The model every other is compared with, put first in evaluate.models "
            "(base, final, a stage or a directory).",
        ),
    ] = None,
) -> None:
    """Evaluate evaluate.models (base vs tuned by default): held-out loss, perplexity, ROUGE,
    benchmarks, yes/no classification; each model compared with the first (the baseline).
    Writes eval/metrics.json, then report.html."""
    sets = list(set_ or [])
    if models is not None or baseline is not None:
        from clinitune.recipe import load_recipe

        names = [x.strip() for x in models.split(",") if x.strip()] if models else None
        if names is None:
            names = list(load_recipe(recipe, sets).evaluate.models)
        if baseline is not None:
            names = [baseline] + [x for x in names if x != baseline]
        sets.append("evaluate.models=" + json.dumps(names))
    r, layout = _load(recipe, sets, run_dir, model, seed)
    _summary(_evaluate(r, layout, force))
    _report(r, layout)


@app.command()
@user_errors
def report(
    recipe: RecipeArg, set_: SetOpt = None, run_dir: RunDirOpt = None, model: ModelOpt = None
) -> None:
    """Write report.html from the run's metrics, training logs and data manifest."""
    r, layout = _load(recipe, set_, run_dir, model)
    _report(r, layout)


def _run_all(r: Any, layout: Any, force: bool) -> None:
    t0 = time.perf_counter()
    console.print(f"[bold]run[/] {r.name} -> {layout.root}")
    _prepare(r, layout, force)
    if r.train:
        _train(r, layout, force)
    metrics = _evaluate(r, layout, force)
    path = _report(r, layout)
    _summary(metrics)
    console.print(f"[bold green]finished[/] in {time.perf_counter() - t0:.0f}s · report: {path}")


@app.command()
@user_errors
def run(
    recipe: RecipeArg,
    set_: SetOpt = None,
    run_dir: RunDirOpt = None,
    model: ModelOpt = None,
    seed: SeedOpt = None,
    force: ForceOpt = False,
) -> None:
    """All stages in order, skipping those whose outputs are up to date."""
    r, layout = _load(recipe, set_, run_dir, model, seed)
    _run_all(r, layout, force)


@app.command()
@user_errors
def quickstart(run_dir: RunDirOpt = None, set_: SetOpt = None) -> None:
    """Run the bundled quickstart recipe into a fresh run directory (CPU, ~10 minutes)."""
    from clinitune.recipe import bundled_recipe

    if run_dir is None:
        run_dir = Path("runs") / f"quickstart-{time.strftime('%Y%m%d-%H%M%S')}"
    r, layout = _load(str(bundled_recipe("quickstart")), set_, run_dir)
    _run_all(r, layout, force=False)


@app.command()
@user_errors
def validate(recipe: RecipeArg, set_: SetOpt = None) -> None:
    """Check a recipe (keys, types, files) without running anything."""
    r, _ = _load(recipe, set_)
    console.print(
        f"[green]ok[/]: {r.name} · model {r.model.name} · "
        f"{len(r.data.sources)} sources · {len(r.train)} stages"
    )


def _version(value: bool) -> None:
    if value:
        print(f"clinitune {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """clinitune."""


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
