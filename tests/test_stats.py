import numpy as np
import pytest

from clinitune.evaluate.stats import mcnemar_exact, paired_bootstrap_mean, paired_bootstrap_ratio


def test_bootstrap_detects_a_clear_shift_and_not_noise():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, 200)
    shifted = paired_bootstrap_mean(a, a + 0.5)
    assert shifted["significant"] and shifted["ci_low"] > 0.4 and shifted["ci_high"] < 0.6
    same = paired_bootstrap_mean(a, a + rng.normal(0, 0.01, 200))
    assert not same["significant"]


def test_bootstrap_ratio_is_token_weighted():
    # Two examples: 1 token with loss 10, 99 tokens with loss 1 each -> weighted loss 109/100.
    r = paired_bootstrap_ratio([10, 99], [1, 99], [10, 99], [1, 99])
    assert r["diff"] == 0.0
    r = paired_bootstrap_ratio([10, 99], [1, 99], [0, 99], [1, 99])
    assert abs(r["diff"] - (-10 / 100)) < 1e-12


def test_mcnemar_exact_values():
    # 10 discordant pairs all favouring B: p = 2 * 0.5**10
    a = [False] * 10 + [True] * 5
    b = [True] * 10 + [True] * 5
    r = mcnemar_exact(a, b)
    assert r["b_only"] == 10 and r["a_only"] == 0
    assert abs(r["p_value"] - 2 * 0.5**10) < 1e-12 and r["significant"]
    assert mcnemar_exact([True, False], [True, False])["p_value"] == 1.0


def test_wilson_and_bootstrap_intervals():
    from clinitune.evaluate.stats import bootstrap_ci, wilson_ci

    lo, hi = wilson_ci(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)
    assert wilson_ci(0, 10)[0] == 0.0 and 0 < wilson_ci(0, 10)[1] < 0.35
    vals = [0.0, 1.0] * 200
    lo, hi = bootstrap_ci(vals, seed=0)
    assert lo < 0.5 < hi and hi - lo < 0.12
    # token-weighted: sum(num)/sum(den)
    lo, hi = bootstrap_ci([2.0] * 50, [1.0] * 50, seed=0)
    assert lo == hi == 2.0


def test_binary_bootstrap_matches_sklearn_and_finds_a_real_gain():
    import numpy as np

    from clinitune.evaluate.classify import binary_metrics
    from clinitune.evaluate.stats import paired_bootstrap_binary

    rng = np.random.default_rng(1)
    gold = rng.random(200) < 0.3
    sa = np.clip(gold * 0.15 + rng.random(200) * 0.85, 0, 1)  # weak model
    sb = np.clip(gold * 0.6 + rng.random(200) * 0.4, 0, 1)  # strong model
    sa[:10] = 0.5  # ties
    pa, pb = sa >= 0.5, sb >= 0.5
    res = paired_bootstrap_binary(gold, pa, pb, sa, sb, n_boot=500)
    lab = lambda v: ["yes" if x else "no" for x in v]  # noqa: E731
    ma = binary_metrics(lab(gold), lab(pa), scores=list(sa))
    mb = binary_metrics(lab(gold), lab(pb), scores=list(sb))
    for k in ("precision", "recall", "f1", "mcc", "balanced_accuracy", "auroc"):
        assert abs(res[k]["diff"] - (mb[k] - ma[k])) < 1e-9, k
        assert res[k]["ci_low"] <= res[k]["diff"] <= res[k]["ci_high"]
    assert res["auroc"]["significant"] and res["f1"]["significant"] and res["f1"]["diff"] > 0
    same = paired_bootstrap_binary(gold, pa, pa, sa, sa, n_boot=200)
    assert all(v["diff"] == 0 and not v["significant"] for v in same.values())
    # one class only in gold: MCC, balanced accuracy and AUROC are undefined, not reported
    one = paired_bootstrap_binary([True] * 5, [True, False] * 2 + [True], [True] * 5, n_boot=50)
    assert set(one) == {"precision", "recall", "f1"}


def test_accuracy_comparison_has_mcnemar_and_an_interval():
    from clinitune.evaluate.stats import accuracy_comparison

    a = [True] * 50 + [False] * 50
    b = [True] * 80 + [False] * 20
    c = accuracy_comparison(a, b, n_boot=500)
    assert c["diff"] == 0.3 and c["b_only"] == 30 and c["a_only"] == 0 and c["significant"]
    assert 0.15 < c["ci_low"] < 0.3 < c["ci_high"] < 0.45
