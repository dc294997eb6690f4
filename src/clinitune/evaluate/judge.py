"""A judge model for HEAL's rubric: split a note into atomic claims, then check claims against a
text (supported / contradicted / not mentioned).

Two backends answer the same chat prompts: an OpenAI-compatible ``/chat/completions`` endpoint
(stdlib ``urllib``; no SDK needed, works with vLLM, TGI, llama.cpp's server and hosted APIs) and
a local Hugging Face model (greedy, through its chat template). Every answer must be JSON of the
expected shape; a timeout, a 429/5xx answer or malformed JSON is retried with exponential
backoff, and when the retries run out a :class:`JudgeError` names the call (note and step) --
the rubric then fails instead of reporting a partial score as if it were complete.

Note text goes to the judge: use an endpoint inside your site (or a local model) for PHI.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.request
from typing import Any

from clinitune.errors import StageError
from clinitune.recipe import JudgeSpec

VERDICTS = ("supported", "contradicted", "not_mentioned")

CLAIMS_PROMPT = """Split the clinical text below into atomic claims: short, self-contained \
statements of one fact each (a symptom, a finding, a value, a medication with its dose, a \
diagnosis, a plan item). Keep negations ("no fever") and laterality. Do not add facts.
Answer with a JSON array of strings and nothing else.

TEXT:
{text}"""

CHECK_PROMPT = """For each numbered claim, decide whether the TEXT supports it: "supported" \
(the text states it or clearly implies it), "contradicted" (the text states otherwise, e.g. \
another dose, side or negation) or "not_mentioned".
Answer with a JSON array of {n} strings, one verdict per claim in order, and nothing else.

TEXT:
{text}

CLAIMS:
{claims}"""


class JudgeError(StageError):
    """The judge could not give a usable answer (after retries)."""


def _json_span(text: str) -> Any:
    """The first JSON array or object in ``text`` (models wrap JSON in prose or code fences)."""
    text = re.sub(r"^```(?:json)?\s*|\s*```$", "", text.strip(), flags=re.M)
    for open_, close in (("[", "]"), ("{", "}")):
        i = text.find(open_)
        j = text.rfind(close)
        if i != -1 and j > i:
            try:
                return json.loads(text[i : j + 1])
            except json.JSONDecodeError:
                continue
    raise ValueError("no JSON array or object in the answer")


class Judge:
    def __init__(self, spec: JudgeSpec, device: str = "cpu") -> None:
        self.spec = spec
        self.calls = 0
        self.retried = 0
        self._local: tuple[Any, Any] | None = None
        self._device = device
        if spec.kind == "openai" and spec.api_key_env and not os.environ.get(spec.api_key_env):
            raise JudgeError(f"judge: environment variable {spec.api_key_env} is not set")

    # -------------------------------------------------------------------------- transport
    def _ask_openai(self, prompt: str) -> str:
        spec = self.spec
        body = json.dumps(
            {
                "model": spec.model,
                "messages": [{"role": "user", "content": prompt}],
                "temperature": 0,
                "max_tokens": spec.max_new_tokens,
            }
        ).encode()
        headers = {"Content-Type": "application/json"}
        if spec.api_key_env:
            headers["Authorization"] = f"Bearer {os.environ[spec.api_key_env]}"
        url = (spec.url or "").rstrip("/") + "/chat/completions"
        req = urllib.request.Request(url, data=body, headers=headers, method="POST")
        with urllib.request.urlopen(req, timeout=spec.timeout_s) as resp:
            data = json.loads(resp.read().decode("utf-8"))
        try:
            return str(data["choices"][0]["message"]["content"])
        except (KeyError, IndexError, TypeError):
            raise ValueError("the endpoint's answer has no choices[0].message.content") from None

    def _ask_local(self, prompt: str) -> str:
        import torch

        from clinitune.data.pack import pad_id
        from clinitune.models import load_model, load_tokenizer, resolve_model

        if self._local is None:
            path = resolve_model(self.spec.model)
            tok = load_tokenizer(path)
            model = load_model(path, dtype="auto", attn="sdpa", device=self._device).eval()
            self._local = (model, tok)
        model, tok = self._local
        text = tok.apply_chat_template(
            [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
        )
        ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"].to(self._device)
        with torch.inference_mode():
            out = model.generate(
                input_ids=ids, do_sample=False, max_new_tokens=self.spec.max_new_tokens,
                pad_token_id=pad_id(tok),
            )  # fmt: skip
        return tok.decode(out[0, ids.shape[1] :], skip_special_tokens=True)

    def ask_json(self, prompt: str, what: str, check: Any) -> Any:
        """Send ``prompt``; parse and ``check`` the JSON answer; retry with backoff."""
        spec = self.spec
        last = ""
        for attempt in range(spec.retries + 1):
            if attempt:
                self.retried += 1
                time.sleep(spec.backoff_s * 2 ** (attempt - 1))
            self.calls += 1
            try:
                raw = self._ask_openai(prompt) if spec.kind == "openai" else self._ask_local(prompt)
            except urllib.error.HTTPError as e:
                last = f"HTTP {e.code}"
                if e.code != 429 and e.code < 500:  # a request the endpoint will never accept
                    raise JudgeError(f"judge call {what}: {last} from {spec.url}") from None
                continue
            except (TimeoutError, urllib.error.URLError, ConnectionError, OSError) as e:
                last = f"no answer ({getattr(e, 'reason', e)})"
                continue
            except ValueError as e:
                last = str(e)
                continue
            try:
                value = _json_span(raw)
                check(value)
                return value
            except (ValueError, TypeError) as e:
                last = f"malformed JSON ({e})"
        raise JudgeError(
            f"judge call {what}: {last} after {spec.retries + 1} attempts "
            f"({spec.kind} judge {spec.model})"
        )

    # ------------------------------------------------------------------------------ steps
    def claims(self, text: str, what: str) -> list[str]:
        def check(v: Any) -> None:
            if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                raise ValueError("expected a JSON array of strings")

        if not text.strip():
            return []
        out = self.ask_json(CLAIMS_PROMPT.format(text=text), what, check)
        return [x.strip() for x in out if x.strip()]

    def verdicts(self, claims: list[str], text: str, what: str) -> list[str]:
        if not claims:
            return []

        def check(v: Any) -> None:
            if not isinstance(v, list) or len(v) != len(claims):
                raise ValueError(f"expected a JSON array of {len(claims)} verdicts")
            if not all(isinstance(x, str) and x.strip().lower() in VERDICTS for x in v):
                raise ValueError(f"verdicts must be one of {VERDICTS}")

        numbered = "\n".join(f"{i + 1}. {c}" for i, c in enumerate(claims))
        out = self.ask_json(
            CHECK_PROMPT.format(text=text, n=len(claims), claims=numbered), what, check
        )
        return [x.strip().lower() for x in out]


def judged_rubric(judge: Judge, source: str, reference: str, output: str, what: str) -> dict:
    """HEAL's counts by claims: missed = reference claims the output does not support;
    incorrect = output claims the source contradicts or does not mention (and the reference
    does not support either); irrelevant = output claims the source supports but the
    reference does not."""
    ref_claims = judge.claims(reference, f"{what}/claims(reference)")
    out_claims = judge.claims(output, f"{what}/claims(output)")
    in_output = judge.verdicts(ref_claims, output, f"{what}/reference-vs-output")
    in_source = judge.verdicts(out_claims, source, f"{what}/output-vs-source")
    in_ref = judge.verdicts(out_claims, reference, f"{what}/output-vs-reference")
    missed = sum(v != "supported" for v in in_output)
    incorrect = sum(
        s != "supported" and r != "supported" for s, r in zip(in_source, in_ref, strict=True)
    )
    irrelevant = sum(
        s == "supported" and r != "supported" for s, r in zip(in_source, in_ref, strict=True)
    )
    return {
        "reference_claims": len(ref_claims),
        "output_claims": len(out_claims),
        "missed": missed,
        "incorrect": incorrect,
        "irrelevant": irrelevant,
        "missed_rate": missed / len(ref_claims) if ref_claims else 0.0,
        "incorrect_rate": incorrect / len(out_claims) if out_claims else 0.0,
        "irrelevant_rate": irrelevant / len(out_claims) if out_claims else 0.0,
        "contradicted": sum(v == "contradicted" for v in in_source),
    }
