"""The rubric's judge against a stand-in OpenAI-compatible endpoint (a local HTTP server):
claims and verdicts, HEAL's counts, retries on malformed JSON / timeouts, clear errors."""

import contextlib
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest

from clinitune.evaluate.judge import Judge, JudgeError, judged_rubric
from clinitune.recipe import JudgeSpec


class _Handler(BaseHTTPRequestHandler):
    mode: ClassVar[
        list[str]
    ] = []  # per request, consumed in order: ok | bad_json | slow | 400 | 500

    def log_message(self, *a):  # keep test output quiet
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        mode = self.mode.pop(0) if self.mode else "ok"
        if mode == "slow":
            time.sleep(0.5)
        if mode in ("400", "500"):
            self.send_response(int(mode))
            self.end_headers()
            return
        prompt = body["messages"][0]["content"]
        content = "Sure! here you go" if mode == "bad_json" else _answer(prompt)
        out = json.dumps({"choices": [{"message": {"role": "assistant", "content": content}}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        with contextlib.suppress(BrokenPipeError):
            self.wfile.write(out.encode())


def _answer(prompt: str) -> str:
    """A rule-based 'judge': claims are sentences; a claim is supported when all its words
    occur in the text, contradicted when it differs only by a number or a side."""
    if prompt.startswith("Split"):
        text = prompt.split("TEXT:\n", 1)[1]
        return "```json\n" + json.dumps([s.strip() for s in text.split(".") if s.strip()]) + "\n```"
    text = prompt.split("TEXT:\n", 1)[1].split("\n\nCLAIMS:\n")[0].lower()
    claims = re.findall(r"^\d+\. (.*)$", prompt.split("CLAIMS:\n", 1)[1], re.M)
    out = []
    for c in claims:
        words = re.findall(r"[a-z0-9]+", c.lower())
        if all(w in text for w in words):
            out.append("supported")
        elif all(w in text for w in words if not w.isdigit() and w not in ("left", "right")):
            out.append("contradicted")
        else:
            out.append("not_mentioned")
    return json.dumps(out)


@pytest.fixture()
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    _Handler.mode = []
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def _judge(url, **kw):
    return Judge(JudgeSpec(kind="openai", model="stand-in", url=url, backoff_s=0.0, **kw))


SRC = "Left knee pain. Takes ibuprofen 400 mg. Takes metformin 500 mg. Smokes daily"
REF = "Left knee pain. Takes ibuprofen 400 mg. Takes metformin 500 mg"


def test_judged_counts_follow_heal_definitions(server):
    j = _judge(server)
    same = judged_rubric(j, SRC, REF, REF, "n1")
    assert (same["missed"], same["incorrect"], same["irrelevant"]) == (0, 0, 0)
    assert same["reference_claims"] == 3 and j.calls == 5
    r = judged_rubric(j, SRC, REF, "Right knee pain. Takes ibuprofen 400 mg. Smokes daily", "n2")
    # metformin dropped and the side flipped: 2 reference claims unsupported; the flipped
    # claim is contradicted by the source; "smokes daily" is true but not in the reference
    assert r["missed"] == 2 and r["incorrect"] == 1 and r["contradicted"] == 1
    assert r["irrelevant"] == 1 and r["missed_rate"] == pytest.approx(2 / 3)
    # the source contradicts it: incorrect even though a (wrong) reference says the same
    bad_ref = "Right knee pain. Takes ibuprofen 400 mg"
    r = judged_rubric(j, SRC, bad_ref, bad_ref, "n3")
    assert r["incorrect"] == 1 and r["contradicted"] == 1 and r["missed"] == 0


def test_malformed_json_and_5xx_are_retried(server):
    _Handler.mode = ["bad_json", "500", "ok"]
    j = _judge(server, retries=2)
    assert j.claims("A. B", "n1/claims") == ["A", "B"]
    assert j.calls == 3 and j.retried == 2


def test_backoff_doubles_between_attempts(server, monkeypatch):
    import clinitune.evaluate.judge as judge_mod

    waits: list[float] = []
    monkeypatch.setattr(judge_mod.time, "sleep", waits.append)
    _Handler.mode = ["500", "bad_json", "500", "ok"]
    j = Judge(JudgeSpec(kind="openai", model="m", url=server, backoff_s=0.5, retries=3))
    assert j.claims("A. B", "n1/claims") == ["A", "B"]
    assert waits == [0.5, 1.0, 2.0]


def test_retries_run_out_with_a_message_naming_the_call(server):
    _Handler.mode = ["bad_json"] * 3
    with pytest.raises(
        JudgeError, match=r"judge call n7/claims: malformed JSON .* after 3 attempts"
    ):
        _judge(server, retries=2).claims("A. B", "n7/claims")
    _Handler.mode = ["slow"] * 2
    with pytest.raises(JudgeError, match=r"judge call n8/claims: no answer .* after 2 attempts"):
        _judge(server, retries=1, timeout_s=0.2).claims("A. B", "n8/claims")
    _Handler.mode = ["400"]
    with pytest.raises(JudgeError, match="HTTP 400"):
        _judge(server, retries=3).claims("A", "n9/claims")


def test_wrong_number_of_verdicts_is_malformed(server, monkeypatch):
    j = _judge(server, retries=0)
    monkeypatch.setattr(j, "_ask_openai", lambda prompt: '["supported"]')
    with pytest.raises(JudgeError, match="expected a JSON array of 2 verdicts"):
        j.verdicts(["a", "b"], "text", "n1/check")


def test_judge_config_errors():
    with pytest.raises(ValueError, match="needs a url"):
        JudgeSpec(kind="openai", model="m")
    with pytest.raises(JudgeError, match="CLINITUNE_TEST_NO_SUCH_KEY is not set"):
        Judge(
            JudgeSpec(
                kind="openai", model="m", url="http://x", api_key_env="CLINITUNE_TEST_NO_SUCH_KEY"
            )
        )


def test_a_local_judge_that_answers_nonsense_fails_clearly(tiny_model_dir):
    """kind: local runs a Hugging Face model through its chat template; a (random) model that
    cannot produce the JSON asked for ends in a clear error, not a partial score."""
    j = Judge(JudgeSpec(kind="local", model=str(tiny_model_dir), retries=1, backoff_s=0.0,
                        max_new_tokens=16))  # fmt: skip
    with pytest.raises(JudgeError, match=r"judge call n1/claims: malformed JSON .* after 2"):
        j.claims("Left knee pain. Takes ibuprofen.", "n1/claims")
    assert j.calls == 2


def test_split_claims_by_rule():
    from clinitune.evaluate.judge import split_claims

    text = (
        "The patient is a 45 y.o. male. Dr. Smith saw him; he has left knee pain.\nPLAN:\n"
        "- Start ibuprofen 400 mg b.i.d. for pain.\n- Follow up in 2 weeks\n"
        "Assessment: knee strain. BP 120/80. No fever or chills! History of CHF. Seen by J. Doe."
        "\nAllergies: penicillin\nFamily history: breast cancer"
    )
    assert split_claims(text) == [
        "The patient is a 45 y.o. male", "Dr. Smith saw him", "he has left knee pain",
        "Start ibuprofen 400 mg b.i.d. for pain", "Follow up in 2 weeks", "Assessment: knee strain",
        "BP 120/80", "No fever or chills", "History of CHF", "Seen by J. Doe",
        "Allergies: penicillin", "Family history: breast cancer",
    ]  # fmt: skip
    assert split_claims("") == [] and split_claims("OK.") == []


def test_scored_verdicts_equal_scoring_each_prompt_alone(tiny_model_dir):
    """The shared-prefix KV cache (repeated per batch, right-padded claims) gives the same
    answer-letter log-probabilities as running every full prompt alone."""
    import torch

    from clinitune.evaluate.judge import _letter_ids, _score_prompts, verdict_logprobs
    from clinitune.models import load_model, load_tokenizer

    tok = load_tokenizer(tiny_model_dir)
    model = load_model(tiny_model_dir, dtype="float32", attn="sdpa", device="cpu").eval()
    text = "Left knee pain for 3 days. Takes ibuprofen 400 mg twice a day. Denies fever."
    claims = ["Left knee pain", "Takes ibuprofen 400 mg twice daily for the knee", "Fever", "x y"]
    got = verdict_logprobs(model, tok, text, claims, batch_size=3)
    assert got.shape == (4, 3)
    letters = _letter_ids(tok)
    with torch.inference_mode():
        for row, ids in zip(got, _score_prompts(tok, text, claims), strict=True):
            logits = model(input_ids=torch.tensor([ids])).logits[0, -1, letters]
            torch.testing.assert_close(row, torch.log_softmax(logits, -1), atol=1e-4, rtol=0)


def test_local_judge_by_rule_and_scores_gives_heal_counts(tiny_model_dir):
    """claims: sentences + verdicts: scores needs no JSON from the model: even a random model
    yields complete counts (how good they are is what benchmarks/rubric_validation.py
    measures), with one scoring call per (claims, text) pair."""
    j = Judge(JudgeSpec(kind="local", model=str(tiny_model_dir), claims="sentences",
                        verdicts="scores", batch_size=2))  # fmt: skip
    r = judged_rubric(j, SRC, REF, "Right knee pain. Takes ibuprofen 400 mg. Smokes daily", "n1")
    assert r["reference_claims"] == 3 and r["output_claims"] == 3 and j.calls == 3
    assert 0 <= r["missed"] <= 3 and r["incorrect"] + r["irrelevant"] <= 3
    with pytest.raises(ValueError, match="verdicts 'scores' needs kind local"):
        JudgeSpec(kind="openai", model="m", url="http://x", verdicts="scores")
    with pytest.raises(ValueError, match="calibrate needs verdicts 'scores'"):
        JudgeSpec(kind="local", model="m", calibrate=True)


def test_calibrated_verdicts_remove_the_judges_prior(monkeypatch):
    """calibrate: the verdict is the letter that rose most over the content-free claim. A judge
    that prefers "supported" everywhere (prior 0.6/0.1/0.3) but gives claim b more "not
    mentioned" than its prior is read as "not mentioned" for b only; uncalibrated, both read
    as "supported"."""
    import torch

    import clinitune.evaluate.judge as jm

    rows = {"a": [0.6, 0.1, 0.3], "b": [0.5, 0.1, 0.4], jm.CONTENT_FREE: [0.6, 0.1, 0.3]}
    seen = []

    def fake(model, tok, text, claims, **kw):
        seen.append(list(claims))
        return torch.tensor([rows[c] for c in claims]).log()

    monkeypatch.setattr(jm, "verdict_logprobs", fake)
    for calibrate, want in ((False, ["supported", "supported"]),
                            (True, ["supported", "not_mentioned"])):  # fmt: skip
        j = Judge(JudgeSpec(kind="local", model="m", claims="sentences", verdicts="scores",
                            calibrate=calibrate))  # fmt: skip
        j._local = (None, None)  # no model needed: the scores are the fake's
        assert j.verdicts(["a", "b"], "t", "n1") == want
    assert seen == [["a", "b"], ["a", "b", jm.CONTENT_FREE]]
