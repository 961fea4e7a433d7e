"""nora.experiments.llm.power: paired delta over questions × seeds, its variance components, intervals and design sizes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from nora.experiments.llm import power
from nora.experiments.llm.power import (
    AVERAGE,
    VarianceComponents,
    compare,
    decompose,
    half_width,
    minimum_detectable_effect,
    mixed_interval,
    paired_bootstrap,
    required_design,
)

# uniform half-widths of the three effects: variances w^2 / 3; their sum stays inside (-0.5, 0.5)
W_SEED, W_Q, W_RES = 0.10, 0.15, 0.20


def _continuous(rng, s, q, mu=0.0, w=(W_SEED, W_Q, W_RES)):
    """a = 0.5, b = 0.5 + mu + seed + question + residual: D has known components (w^2 / 3 each) and mean mu."""
    d = (mu + rng.uniform(-w[0], w[0], (s, 1)) + rng.uniform(-w[1], w[1], (1, q)) + rng.uniform(-w[2], w[2], (s, q)))
    return np.full((s, q), 0.5), 0.5 + d


def _binary(rng, s, q, mu=0.05, sd_seed=0.04, sd_q=0.08, p=0.45):
    """0/1 outcomes: a ~ Bernoulli(p), b ~ Bernoulli(p + mu + seed_s + question_q); E[b - a] = mu exactly."""
    seed = np.clip(rng.normal(0, sd_seed, (s, 1)), -0.1, 0.1)  # symmetric clipping keeps the means 0
    ques = np.clip(rng.normal(0, sd_q, (1, q)), -0.2, 0.2)
    a = (rng.random((s, q)) < p).astype(float)
    b = (rng.random((s, q)) < p + mu + seed + ques).astype(float)
    return a, b


# ------------------------------------------------------------------------------------ decomposition


def test_decomposition_recovers_known_variances():
    rng = np.random.default_rng(0)
    est = np.array([[c.seed, c.question, c.residual] for c in
                    (decompose(*_continuous(rng, 20, 400), scale=1.0) for _ in range(40))])
    truth = np.array([W_SEED, W_Q, W_RES]) ** 2 / 3
    # the moment estimators are unbiased (up to truncation at 0, negligible here): the mean of 40 pilots is close
    assert est.mean(0) == pytest.approx(truth, rel=0.12)
    # one pilot is within a loose tolerance too, and the scale enters squared
    one = decompose(*_continuous(np.random.default_rng(1), 20, 400), scale=100.0)
    assert [one.seed, one.question, one.residual] == pytest.approx(list(1e4 * truth), rel=0.5)
    assert one.n_seeds == 20 and one.n_questions == 400


def test_components_explain_the_variance_of_the_mean_and_the_two_level_views():
    rng = np.random.default_rng(2)
    s, q = 5, 60
    means = np.array([(lambda ab: (ab[1] - ab[0]).mean())(_continuous(rng, s, q)) for _ in range(3000)])
    truth = VarianceComponents(seed=W_SEED**2 / 3, question=W_Q**2 / 3, residual=W_RES**2 / 3, ms_seed=0, ms_question=0,
                               ms_residual=0, n_seeds=s, n_questions=q)
    assert means.var() == pytest.approx(truth.variance(q, s), rel=0.08)
    parts = truth.split(q, s)
    assert sum(parts.values()) == pytest.approx(truth.variance(q, s))
    assert parts["seed"] == pytest.approx(truth.seed / s) and parts["residual"] == pytest.approx(truth.residual / (s * q))
    assert truth.between_seed == pytest.approx(truth.seed + truth.residual / q)
    assert truth.within_seed == pytest.approx((truth.question + truth.residual) / q)


def test_a_pure_seed_effect_and_a_pure_question_effect_are_told_apart():
    rng = np.random.default_rng(3)
    s, q = 8, 300
    shift = rng.uniform(-0.2, 0.2, (s, 1))
    only_seed = decompose(np.full((s, q), 0.5), 0.5 + shift + 0 * np.ones((1, q)), scale=1.0)
    assert only_seed.question == pytest.approx(0, abs=1e-12) and only_seed.residual == pytest.approx(0, abs=1e-12)
    assert only_seed.seed == pytest.approx(shift.var(ddof=1))
    pref = rng.uniform(-0.2, 0.2, (1, q))
    only_q = decompose(np.full((s, q), 0.5), 0.5 + pref + 0 * np.ones((s, 1)), scale=1.0)
    assert only_q.seed == pytest.approx(0, abs=1e-12) and only_q.question == pytest.approx(pref.var(ddof=1))


# ------------------------------------------------------------------------------------ intervals


def test_intervals_cover_the_true_delta_at_about_the_nominal_rate():
    rng = np.random.default_rng(4)
    mu, n = 0.05, 300
    hits_boot = hits_mixed = 0
    widths = []
    for i in range(n):
        a, b = _binary(rng, 6, 120, mu=mu)
        boot = paired_bootstrap(a, b, n_boot=300, seed=i, scale=1.0)[AVERAGE]
        mixed = mixed_interval(a, b, scale=1.0)
        hits_boot += boot.low <= mu <= boot.high
        hits_mixed += mixed.low <= mu <= mixed.high
        widths.append(boot.half_width / mixed.half_width)
    # 300 designs: a binomial s.d. of 1.3 points around 95 %
    assert 0.92 <= hits_mixed / n <= 0.99  # Satterthwaite t with ~5 d.f.: slightly conservative (96 % on 1000 designs)
    # the pigeonhole bootstrap counts the residual (here the largest part) about three times: conservative
    assert 0.93 <= hits_boot / n <= 1.0
    assert 1.0 < np.median(widths) < 1.6


def test_bootstrap_is_seeded_paired_and_stratified():
    rng = np.random.default_rng(5)
    a, b = _binary(rng, 5, 80)
    cats = np.repeat(["STEM", "Humanities", "Social Sciences", "Other"], 20)
    one = paired_bootstrap(a, b, cats, n_boot=500, seed=7)
    two = paired_bootstrap(a, b, cats, n_boot=500, seed=np.random.default_rng(7))
    assert one == two
    assert list(one) == [AVERAGE, "STEM", "Humanities", "Social Sciences", "Other"]
    assert one[AVERAGE].mean == pytest.approx(100 * (b - a).mean())
    assert one["STEM"].mean == pytest.approx(100 * (b - a)[:, :20].mean())
    # paired: identical methods give a zero-width interval; stratified: the average is the mean of equal-sized categories
    same = paired_bootstrap(a, a, cats, n_boot=200, seed=0)
    assert all(r.low == r.high == 0 for r in same.values())


def test_compare_reports_every_group():
    rng = np.random.default_rng(6)
    a, b = _binary(rng, 4, 40)
    cats = ["STEM"] * 10 + ["Other"] * 30
    out = compare(a, b, cats, n_boot=200, seed=0)
    assert list(out) == [AVERAGE, "STEM", "Other"]
    g = out["Other"]
    assert g.n_questions == 30 and g.n_seeds == 4
    assert g.delta == pytest.approx(g.mean_b - g.mean_a) and g.delta == pytest.approx(g.per_seed_delta.mean())
    assert g.mixed.low < g.delta < g.mixed.high and g.bootstrap is not None
    assert compare(a, b, n_boot=0)[AVERAGE].bootstrap is None


# ------------------------------------------------------------------------------------ design


COMP = VarianceComponents(seed=1.0, question=30.0, residual=3000.0, ms_seed=0, ms_question=0, ms_residual=0,
                          n_seeds=5, n_questions=288)


def test_mde_and_half_width_scale_as_one_over_sqrt_n():
    no_seed = VarianceComponents(0.0, 30.0, 3000.0, 0, 0, 0, 5, 288)
    h1 = half_width(no_seed, 1000, 4, use_t=False)
    assert half_width(no_seed, 4000, 4, use_t=False) == pytest.approx(h1 / 2)
    assert half_width(no_seed, 1000, 4, level=0.95, use_t=False) == pytest.approx(1.959964 * math.sqrt(no_seed.variance(1000, 4)))
    m1 = minimum_detectable_effect(no_seed, 1000, 4, use_t=False)
    assert m1 == pytest.approx((1.959964 + 0.841621) * math.sqrt(no_seed.variance(1000, 4)), rel=1e-5)
    assert minimum_detectable_effect(no_seed, 9000, 4, use_t=False) == pytest.approx(m1 / 3)
    only_seed = VarianceComponents(4.0, 0.0, 0.0, 0, 0, 0, 5, 288)
    assert half_width(only_seed, 500, 16, use_t=False) == pytest.approx(half_width(only_seed, 500, 4, use_t=False) / 2)
    # t quantiles: wider than normal with few seeds, converging with many
    assert half_width(COMP, 1000, 3) > half_width(COMP, 1000, 3, use_t=False)
    assert half_width(COMP, 10**5, 200) == pytest.approx(half_width(COMP, 10**5, 200, use_t=False), rel=0.01)


def test_required_design_is_the_smallest_reaching_the_target():
    search = required_design(COMP, 0.5, use_t=False, max_seeds=30, max_questions=10**6)
    for d in search.frontier:
        assert d.half_width <= 0.5
        assert d.n_questions == 2 or half_width(COMP, d.n_questions - 1, d.n_seeds, use_t=False) > 0.5
    # closed form for the normal case
    z = 1.959964
    for d in search.frontier[:5]:
        s = d.n_seeds
        assert d.n_questions == math.ceil((COMP.question + COMP.residual / s) / ((0.5 / z) ** 2 - COMP.seed / s) - 1e-9)
    assert search.best in search.frontier
    assert search.best.cost == min(d.cost for d in search.frontier)
    # more expensive seeds move the best design towards fewer seeds and more questions
    pricey = required_design(COMP, 0.5, use_t=False, max_seeds=30, seed_cost=1e5, question_cost=1.0).best
    assert pricey.n_seeds <= search.best.n_seeds
    # with t quantiles, each seed count needs at least as many questions
    with_t = {d.n_seeds: d.n_questions for d in required_design(COMP, 0.5, max_seeds=30).frontier}
    assert all(with_t[d.n_seeds] >= d.n_questions for d in search.frontier if d.n_seeds in with_t)
    for d in required_design(COMP, 0.5, max_seeds=12).frontier:  # t quantiles: still the fewest questions
        assert d.half_width <= 0.5 and half_width(COMP, d.n_questions - 1, d.n_seeds) > 0.5
    # a seed variance puts a floor under the half-width that no number of questions removes
    floor = VarianceComponents(1.0, 30.0, 3000.0, 0, 0, 0, 5, 288)
    smallest = required_design(floor, 0.5, use_t=False, max_seeds=40).frontier[0].n_seeds
    assert smallest > 1.0 / (0.5 / 1.959964) ** 2 > smallest - 2  # S > sigma2_seed / (target / z)^2, a 15.4 seed floor
    # an unreachable target within the limits: no best design
    assert required_design(COMP, 0.01, max_seeds=3, max_questions=1000).best is None
    # halving the target multiplies the questions by about four when seeds are free of variance
    free = VarianceComponents(0.0, 30.0, 3000.0, 0, 0, 0, 5, 288)
    q1 = {d.n_seeds: d.n_questions for d in required_design(free, 1.0, use_t=False, max_seeds=10).frontier}
    q2 = {d.n_seeds: d.n_questions for d in required_design(free, 0.5, use_t=False, max_seeds=10).frontier}
    assert all(q2[s] == pytest.approx(4 * q1[s], rel=0.01) for s in q1)


# ------------------------------------------------------------------------------------ errors


def test_bad_input_names_the_field():
    a = np.zeros((3, 10))
    with pytest.raises(ValueError, match="b has shape"):
        decompose(a, np.zeros((3, 9)))
    with pytest.raises(ValueError, match="a must be 2-D"):
        decompose(np.zeros(10), np.zeros(10))
    with pytest.raises(ValueError, match=r"b must hold per-question scores in \[0, 1\]"):
        decompose(a, np.full((3, 10), 2.0))
    with pytest.raises(ValueError, match="a has non-finite"):
        decompose(np.full((3, 10), np.nan), a)
    with pytest.raises(ValueError, match="at least 2 seeds"):
        decompose(np.zeros((1, 10)), np.zeros((1, 10)))
    with pytest.raises(ValueError, match="categories must hold one label per question"):
        paired_bootstrap(a, a, ["x"] * 9)
    with pytest.raises(ValueError, match="reserved label"):
        paired_bootstrap(a, a, [AVERAGE] * 10)
    with pytest.raises(ValueError, match="n_boot"):
        paired_bootstrap(a, a, n_boot=1)
    with pytest.raises(ValueError, match="seed must be an int"):
        paired_bootstrap(a, a, seed=None)
    with pytest.raises(ValueError, match="level"):
        mixed_interval(a, a, level=95)
    with pytest.raises(ValueError, match="scale"):
        decompose(a, a, scale=-1)
    with pytest.raises(ValueError, match="fewer than 2 questions"):
        compare(a, a, ["x"] * 9 + ["y"], n_boot=0)
    with pytest.raises(ValueError, match="n_questions"):
        half_width(COMP, 0, 3)
    with pytest.raises(ValueError, match="power"):
        minimum_detectable_effect(COMP, 100, 3, power=80)
    with pytest.raises(ValueError, match="target"):
        required_design(COMP, 0)
    with pytest.raises(ValueError, match="seed_cost"):
        required_design(COMP, 0.5, seed_cost=-1)
    with pytest.raises(TypeError, match="components"):
        half_width({"seed": 1}, 100, 3)
    with pytest.raises(ValueError, match="no t d.f."):
        half_width(COMP, 100, 1)
    assert power.__all__ == sorted(power.__all__)


def test_identical_methods_give_a_zero_width_design_not_an_error():
    """Two models that answer every question alike (a smoke run's untrained adapters): no variance, nothing to size."""
    same = np.tile(np.array([1.0, 0.0, 1.0, 0.0]), (2, 1))
    comp = power.decompose(same, same)
    assert comp.variance(4, 2) == 0
    assert power.half_width(comp, 4, 2) == 0.0 and power.minimum_detectable_effect(comp, 4, 2) == 0.0
    design = power.required_design(comp, 0.5)
    assert design.best is not None and design.best.half_width == 0.0
