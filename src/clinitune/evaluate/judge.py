"""A judge model for HEAL's rubric: split a note into atomic claims, then check claims against a
text (supported / contradicted / not mentioned).

Two backends answer the same chat prompts: an OpenAI-compatible ``/chat/completions`` endpoint
(stdlib ``urllib``; no SDK needed, works with vLLM, TGI, llama.cpp's server and hosted APIs) and
a local Hugging Face model (greedy, through its chat template). Every answer must be JSON of the
expected shape (claims of a non-empty text: a non-empty list); a timeout, a dropped connection
or cut-off answer, a 429/5xx answer or malformed JSON is retried with exponential backoff, and
when the retries run out a :class:`JudgeError` names the call (note and step) -- the rubric
then fails instead of reporting a partial score as if it were complete.

A local model can instead skip both JSON steps (``claims: sentences``, ``verdicts: scores``):
claims are the note's sentences and clauses, split by rule, and each verdict is a constrained
choice among three answer letters scored by log-likelihood -- the way lm-eval scores multiple
choice -- with the text's KV cache computed once and shared by all claims checked against it.

Note text goes to the judge: use an endpoint inside your site (or a local model) for PHI.
"""

from __future__ import annotations

import http.client
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


SCORE_PROMPT = """Read the TEXT, then say whether it supports the CLAIM.
A: supported (the text states it or clearly implies it)
B: contradicted (the text states otherwise, e.g. another dose, side or negation)
C: not mentioned in the text

TEXT:
{text}

CLAIM: {claim}
Answer with one letter: A, B or C."""
SCORE_LETTERS = ("A", "B", "C")  # in the order of VERDICTS
CONTENT_FREE = "N/A"  # the claim whose verdict probabilities are the judge's prior

# Rule-based claims: sentence ends (not after an initial, a title such as "Dr." or a dotted
# abbreviation such as "y.o.", "b.i.d.", "e.g."), line breaks, semicolons; list markers and
# bare section headers ("PLAN:") are not claims.
_SENT_END = re.compile(
    r"(?<!\b[A-Z])(?<!\.[a-z])(?<!\b(?:Dr|Mr|Ms|vs|St))(?<!\bMrs)[.!?]+(?=\s|$)|;|\n+"
)
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+")
_HEADER = re.compile(r"^[A-Za-z /&]{1,40}:$")


def split_claims(text: str) -> list[str]:
    """A note's atomic claims by rule: its sentences, semicolon clauses and list items, without
    list markers and bare headers. Coarser than a model's split ("No fever or chills" stays one
    claim) but deterministic and free; ``JudgeSpec.claims: sentences`` selects it."""
    out = []
    for part in _SENT_END.split(text or ""):
        part = _BULLET.sub("", part).strip(" \t,")
        if _HEADER.match(part):
            continue
        # "Allergies: penicillin" keeps its header: without it the claim would change meaning
        # ("Family history: breast cancer" is not the patient's own)
        if len(re.findall(r"[A-Za-z0-9]+", part)) >= 2 or re.search(r"\d", part):
            out.append(part)
    return out


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

    def _load_local(self) -> tuple[Any, Any]:
        from clinitune.models import load_model, load_tokenizer, resolve_model

        if self._local is None:
            path = resolve_model(self.spec.model)
            tok = load_tokenizer(path)
            model = load_model(path, dtype="auto", attn="sdpa", device=self._device).eval()
            self._local = (model, tok)
        return self._local

    def _ask_local(self, prompt: str) -> str:
        import torch

        from clinitune.data.pack import pad_id

        model, tok = self._load_local()
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
            except http.client.HTTPException as e:  # e.g. IncompleteRead: a cut-off answer
                last = f"no complete answer ({type(e).__name__})"
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
            # a text of a few words may truly assert nothing ("N/A", "-"); a longer one does
            if not any(x.strip() for x in v) and len(re.findall(r"[A-Za-z]{2,}", text)) >= 5:
                raise ValueError("no claims for a text of several words")

        if not text.strip():
            return []
        if self.spec.claims == "sentences":
            return split_claims(text)
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

        if self.spec.verdicts == "scores":
            model, tok = self._load_local()
            self.calls += 1
            calibrate = self.spec.calibrate
            try:
                lp = verdict_logprobs(
                    model, tok, text, claims + [CONTENT_FREE] * calibrate,
                    batch_size=self.spec.batch_size, device=self._device,
                )  # fmt: skip
                if calibrate:
                    lp = lp[:-1] - lp[-1]
            except ValueError as e:
                raise JudgeError(
                    f"judge call {what}: {e} (local judge {self.spec.model})"
                ) from None
            return [VERDICTS[int(i)] for i in lp.argmax(dim=-1).tolist()]

        numbered = "\n".join(f"{i + 1}. {c}" for i, c in enumerate(claims))
        out = self.ask_json(
            CHECK_PROMPT.format(text=text, n=len(claims), claims=numbered), what, check
        )
        return [x.strip().lower() for x in out]


def _score_prompts(tok: Any, text: str, claims: list[str]) -> list[list[int]]:
    rendered = [
        tok.apply_chat_template(
            [{"role": "user", "content": SCORE_PROMPT.format(text=text, claim=c)}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for c in claims
    ]
    return [tok(r, add_special_tokens=False)["input_ids"] for r in rendered]


def _letter_ids(tok: Any) -> list[int]:
    ids = []
    for letter in SCORE_LETTERS:
        enc = tok.encode(letter, add_special_tokens=False)
        if len(enc) != 1:
            raise ValueError(f"answer letter {letter!r} is {len(enc)} tokens for this tokenizer")
        ids.append(enc[0])
    return ids


def verdict_logprobs(
    model: Any, tok: Any, text: str, claims: list[str], *, batch_size: int = 16,
    device: str = "cpu",
) -> Any:  # fmt: skip
    """Log-probabilities (normalized over the three answer letters) of supported /
    contradicted / not mentioned for each claim against ``text``: a ``(len(claims), 3)``
    tensor. The prompts share everything up to the claim, so that prefix -- the long text --
    runs once and its KV cache is repeated for each batch of claims; each claim's suffix is
    right-padded, which leaves its real tokens' attention untouched (causal). Equal to scoring
    every prompt alone (test)."""
    import copy

    import torch

    from clinitune.data.pack import pad_id
    from clinitune.models import cache_kwarg

    seqs = _score_prompts(tok, text, claims)
    letters = _letter_ids(tok)
    limit = getattr(model.config, "max_position_embeddings", None)
    longest = max(len(x) for x in seqs)
    if limit and longest > limit:
        raise ValueError(f"a prompt of {longest} tokens exceeds the model's {limit} positions")
    k = 0  # longest common prefix, leaving at least one token of each prompt to run
    first = seqs[0]
    while k < min(len(x) for x in seqs) - 1 and all(x[k] == first[k] for x in seqs):
        k += 1
    pad = pad_id(tok)
    out = []
    with torch.inference_mode():
        name = cache_kwarg(model)
        cache = None
        if k:
            res = model(input_ids=torch.tensor([first[:k]], device=device), use_cache=True)
            cache = res[name]  # the output field has the input's name in 5.23 and 5.24
        for i in range(0, len(seqs), batch_size):
            chunk = [x[k:] for x in seqs[i : i + batch_size]]
            width = max(len(x) for x in chunk)
            ids = torch.tensor([x + [pad] * (width - len(x)) for x in chunk], device=device)
            mask = torch.tensor(
                [[1] * (k + len(x)) + [0] * (width - len(x)) for x in chunk], device=device
            )
            past = None
            if cache is not None:
                past = copy.deepcopy(cache)
                past.batch_repeat_interleave(len(chunk))
            logits = model(
                input_ids=ids,
                attention_mask=mask,
                **{name: past},
                position_ids=torch.arange(k, k + width, device=device).expand(len(chunk), -1),
                use_cache=past is not None,
            ).logits
            last = torch.tensor([len(x) - 1 for x in chunk], device=device)
            picked = logits[torch.arange(len(chunk), device=device), last][:, letters].float()
            out.append(torch.log_softmax(picked, dim=-1))
    return torch.cat(out).cpu()


def describe(spec: JudgeSpec) -> str:
    """How a judge scores, in words (the report's and the validation bench's method line)."""
    claims = "claims split by rule" if spec.claims == "sentences" else "claims split by the judge"
    if spec.verdicts == "scores":
        verdicts = "verdicts by answer-letter log-likelihood" + (
            ", contextually calibrated" if spec.calibrate else ""
        )
    else:
        verdicts = "verdicts generated as JSON"
    return (
        f"atomic claims + entailment by the {spec.kind} judge {spec.model} ({claims}; {verdicts})"
    )


def judged_rubric(judge: Judge, source: str, reference: str, output: str, what: str) -> dict:
    """HEAL's counts by claims: missed = reference claims the output does not support;
    incorrect = output claims the source contradicts (whatever the reference says), or does
    not mention unless the reference supports them (facts a physician adds from the chart);
    irrelevant = output claims the source supports but the
    reference does not. A rate without claims to divide by (an empty output or reference) is
    None: undefined, not 0 (see :mod:`clinitune.evaluate.rubric`)."""
    ref_claims = judge.claims(reference, f"{what}/claims(reference)")
    out_claims = judge.claims(output, f"{what}/claims(output)")
    in_output = judge.verdicts(ref_claims, output, f"{what}/reference-vs-output")
    in_source = judge.verdicts(out_claims, source, f"{what}/output-vs-source")
    in_ref = judge.verdicts(out_claims, reference, f"{what}/output-vs-reference")
    missed = sum(v != "supported" for v in in_output)
    incorrect = sum(
        s == "contradicted" or (s != "supported" and r != "supported")
        for s, r in zip(in_source, in_ref, strict=True)
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
        "missed_rate": missed / len(ref_claims) if ref_claims else None,
        "incorrect_rate": incorrect / len(out_claims) if out_claims else None,
        "irrelevant_rate": irrelevant / len(out_claims) if out_claims else None,
        "contradicted": sum(v == "contradicted" for v in in_source),
    }
