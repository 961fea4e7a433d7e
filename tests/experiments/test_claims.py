"""The claims registry and its verdict logic: constructed numbers, missing keys, and the registry against the book."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from nora.experiments import claims as registry
from nora.experiments.verdicts import (FAILS, HOLDS, INCONCLUSIVE, UNTESTABLE, VERDICTS, AllOf, Best, Exceeds, Flag,
                                       Gain, Gate, Majority, NotTestable, Ratio, Regime, Values, Within, ZeroMean, fmt)

ROOT = Path(__file__).resolve().parents[2]


def _pair(ma, sa, mb, sb, n=3):
    return {"a": ma, "a_std": sa, "b": mb, "b_std": sb, "seeds": n}


# ------------------------------------------------------------------------------ the verdict rule


def test_exceeds_holds_fails_and_is_inconclusive_within_two_standard_errors():
    crit = Exceeds("a", "b", ("A", "B"))
    se = math.sqrt((1.0**2 + 1.0**2) / 4)  # 0.707: the rule's s.e. for two stds of 1 over 4 seeds
    assert crit.evaluate(_pair(10 + 2.1 * se, 1, 10, 1, n=4)).verdict == HOLDS
    assert crit.evaluate(_pair(10 - 2.1 * se, 1, 10, 1, n=4)).verdict == FAILS
    assert crit.evaluate(_pair(10 + 1.9 * se, 1, 10, 1, n=4)).verdict == INCONCLUSIVE
    assert crit.evaluate(_pair(10 - 1.9 * se, 1, 10, 1, n=4)).verdict == INCONCLUSIVE
    out = crit.evaluate(_pair(58.72, 0.98, 81.56, 1.45))
    assert out.verdict == FAILS
    assert "58.72 ± 0.98" in out.ours and "81.56 ± 1.45" in out.ours and "−22.84 ± 1.01" in out.ours and "n = 3" in out.ours


def test_exceeds_without_noise_is_decided_by_the_sign():
    crit = Exceeds("a", "b", ("A", "B"))
    assert crit.evaluate(_pair(2, 0, 1, 0)).verdict == HOLDS
    assert crit.evaluate(_pair(1, 0, 1, 0)).verdict == FAILS  # not above


def test_gain_uses_the_recorded_se_or_a_95_percent_ci():
    assert Gain("d", "D").evaluate({"d": 3.0, "d_se": 1.0}).verdict == HOLDS
    assert Gain("d", "D").evaluate({"d": -1.5, "d_se": 1.0}).verdict == INCONCLUSIVE
    assert Gain("d", "D", se="s").evaluate({"d": -3.0, "s": 1.0}).verdict == FAILS
    # ci95 = t(0.975, 4) * se = 2.776 * se: a difference of 2.5 se (ci95 = 1.11 d) holds, of 1.5 se does not
    ci = Gain("d", "D", ci95="ci")
    assert ci.evaluate({"d": 2.5, "ci": 2.776, "seeds": 5}).verdict == HOLDS
    assert ci.evaluate({"d": 1.5, "ci": 2.776, "seeds": 5}).verdict == INCONCLUSIVE
    one = ci.evaluate({"d": 2.5, "ci": 2.776, "seeds": 1})
    assert one.verdict == UNTESTABLE and "single seed" in one.reason


def test_within_deterministic_and_seeded():
    assert Within("x", "X", hi=0.4).evaluate({"x": 0.161}).verdict == HOLDS
    assert Within("x", "X", hi=0.4).evaluate({"x": 0.5}).verdict == FAILS
    assert Within("x", "X", lo=1, hi=2).evaluate({"x": 2.5}).verdict == FAILS
    seeded = Within("x", "X", hi=1.10, seeded=True)
    # s.e. = std / sqrt(n) = 0.1 / 2 = 0.05; +-2 s.e. = 0.1
    assert seeded.evaluate({"x": 0.95, "x_std": 0.1, "seeds": 4}).verdict == HOLDS
    assert seeded.evaluate({"x": 1.05, "x_std": 0.1, "seeds": 4}).verdict == INCONCLUSIVE
    assert seeded.evaluate({"x": 1.25, "x_std": 0.1, "seeds": 4}).verdict == FAILS


def test_ratio_zero_mean_majority_flag():
    assert Ratio("a", "b", "a / b", lo=17).evaluate({"a": 73728, "b": 936}).verdict == HOLDS
    assert Ratio("a", "b", "a / b", lo=15).evaluate({"a": 40724, "b": 4328}).verdict == FAILS
    zero_b = Ratio("a", "b", "a / b", lo=1).evaluate({"a": 1, "b": 0})
    assert zero_b.verdict == UNTESTABLE and "b is 0" in zero_b.reason
    assert ZeroMean("z", "Z").evaluate({"z": -0.48}).verdict == HOLDS
    assert ZeroMean("z", "Z").evaluate({"z": 14.4}).verdict == FAILS
    assert Majority("k", "n", "K").evaluate({"k": 9, "n": 9}).verdict == HOLDS
    assert Majority("k", "n", "K").evaluate({"k": 6, "n": 9}).verdict == INCONCLUSIVE
    assert Majority("k", "n", "K").evaluate({"k": 2, "n": 9}).verdict == FAILS
    assert Flag("f", "F").evaluate({"f": True}).verdict == HOLDS
    assert Flag("f", "F").evaluate({"f": False}).verdict == FAILS
    assert Flag("f", "F").evaluate({"f": 1}).verdict == UNTESTABLE  # a number is not a recorded true/false


def test_best_compares_with_the_strongest_rival():
    values = {"acc_x": 80.0, "acc_x_std": 0.5, "acc_y": 78.0, "acc_y_std": 0.5, "acc_z": 70.0, "acc_z_std": 0.5, "seeds": 3}
    out = Best("acc_", "x", ("y", "z"), {"x": "X", "y": "Y", "z": "Z"}).evaluate(values)
    assert out.verdict == HOLDS and "X" in out.ours and "Y" in out.ours and "Z" not in out.ours
    values["acc_y"] = 81.0
    assert Best("acc_", "x", ("y", "z"), {"x": "X", "y": "Y", "z": "Z"}).evaluate(values).verdict == FAILS


def test_all_of_combines_parts():
    h, f, u = Within("h", "H", hi=1), Within("f", "F", hi=1), Within("missing", "M", hi=1)
    i = Gain("i", "I")
    values = {"h": 0, "f": 2, "i": 1.0, "i_se": 1.0}
    assert AllOf([h, h]).evaluate(values).verdict == HOLDS
    assert AllOf([h, f, i]).evaluate(values).verdict == FAILS
    assert AllOf([h, i]).evaluate(values).verdict == INCONCLUSIVE
    assert AllOf([h, u]).evaluate(values).verdict == INCONCLUSIVE  # partly tested: not a verdict either way
    both = AllOf([u, u]).evaluate(values)
    assert both.verdict == UNTESTABLE and "missing is not recorded" in both.reason
    assert AllOf([h, i]).evaluate(values).ours.count("\n") == 1  # one line per part


@pytest.mark.parametrize("values, key", [
    ({}, "a"),
    ({"a": 1.0, "a_std": 0.1, "b": 1.0, "b_std": 0.1}, "seeds"),
    ({"a": "90.88", "a_std": 0.1, "b": 1.0, "b_std": 0.1, "seeds": 3}, "a"),
    ({"a": float("nan"), "a_std": 0.1, "b": 1.0, "b_std": 0.1, "seeds": 3}, "a"),
    ({"a": 1.0, "a_std": 0.1, "b": 1.0, "seeds": 3}, "b_std"),
])
def test_a_missing_or_bad_key_is_not_testable_with_the_key_named(values, key):
    out = Exceeds("a", "b", ("A", "B")).evaluate(values)
    assert out.verdict == UNTESTABLE
    assert out.reason.startswith(key) and out.ours == "—"


def test_not_testable_and_number_format():
    out = NotTestable("no judge offline").evaluate({"anything": 1})
    assert out.verdict == UNTESTABLE and out.reason == "no judge offline"
    assert fmt(73728) == "73,728" and fmt(-0.1234567) == "−0.1235" and fmt(2.5, 1) == "2.5"


# ------------------------------------------------------------------------------- the registry


def _headings(chapter: str) -> set[str]:
    nb = json.loads((ROOT / "notebooks" / f"{chapter}.ipynb").read_text())
    titles = set()
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            for line in "".join(cell["source"]).splitlines():
                match = re.match(r"#{1,6}\s+(.*\S)", line)
                if match:
                    titles.add(match.group(1))
    return titles


def test_registry_is_complete_and_well_formed():
    ids = [c.id for c in registry.CLAIMS]
    assert len(ids) == len(set(ids)) and len(ids) >= 25
    sources = " ".join(c.source for c in registry.CLAIMS)
    for needed in ["abstract", *(f"Table {i}" for i in range(1, 7)), *(f"Figure {i}" for i in range(2, 8)),
                   "App. A", "App. B", "LoRAN"]:
        assert needed in sources, f"no claim from {needed}"
    for claim in registry.CLAIMS:
        assert (ROOT / "notebooks" / f"{claim.chapter}.ipynb").is_file(), claim.id
        assert claim.text and claim.paper and claim.words, claim.id
        assert claim.section in _headings(claim.chapter), f"{claim.id}: no section {claim.section!r} in {claim.chapter}"
        assert re.fullmatch(r"[a-z0-9-]+", claim.anchor), claim.anchor


def test_every_claims_keys_are_recorded_by_the_book_or_marked():
    """Each key a claim reads is in results/book/<chapter>.json, unless the claim says which run will record it."""
    problems = []
    for claim in registry.CLAIMS:
        path = ROOT / "results" / "book" / f"{claim.chapter}.json"
        values = json.loads(path.read_text())["values"] if path.is_file() else {}
        missing = [k for k in claim.test.keys() if k not in values]
        if isinstance(claim.test, NotTestable):
            continue
        if missing and not claim.unrecorded:
            problems.append(f"{claim.id}: {missing} not in {path.name}")
        if claim.unrecorded and not missing:
            problems.append(f"{claim.id}: every key is recorded now; drop its unrecorded note")
    assert not problems, "\n".join(problems)


def test_the_registry_evaluates_on_the_book_results():
    from nora.experiments.results import load_all

    rows = registry.evaluate(load_all("book", out_dir=ROOT / "results"))
    assert len(rows) == len(registry.CLAIMS)
    for claim, out in rows:
        assert out.verdict in VERDICTS, claim.id
        assert out.verdict == UNTESTABLE or out.ours != "—", claim.id
    assert registry.evaluate({})[0][1].verdict == UNTESTABLE  # no results at all: never a crash
    assert {c.chapter for c in registry.by_chapter("04_vit_transfer")} == {"04_vit_transfer"}


# ------------------------------------------------------------------------------ regime gates


def test_a_failing_regime_gate_turns_a_decided_comparison_inconclusive():
    gate = Gate("full − probe", "full", "probe", hi=10)
    crit = Regime(Exceeds("a", "b", ("A", "B")), (gate,), "the hard task")
    decided = {**_pair(20, 0.1, 10, 0.1, n=3), "full": 90.0}
    assert crit.evaluate({**decided, "probe": 85.0}).verdict == HOLDS  # gate holds: the comparison decides
    out = crit.evaluate({**decided, "probe": 75.0})
    assert out.verdict == INCONCLUSIVE
    assert "full − probe fails on the hard task" in out.reason and "alone holds" in out.reason
    assert out.ours.startswith("A 20.00")  # the numbers stay shown
    undecided = {**_pair(10.1, 1, 10, 1, n=3), "full": 90.0, "probe": 75.0}
    assert crit.evaluate(undecided).verdict == INCONCLUSIVE
    assert "regime" not in crit.evaluate(undecided).reason  # nothing to withhold
    missing = crit.evaluate(decided)  # the gate's own keys are needed, as any criterion's
    assert missing.verdict == UNTESTABLE and "probe" in missing.reason
    assert Gate("in range", "x", lo=70, hi=95).holds(Values({"x": 96.0})) is False


def test_the_registrys_regime_gates_are_the_ones_chapter_04_recorded():
    """The gates the registry recomputes from the means fail exactly where chapter 04's own table said NO."""
    values = json.loads((ROOT / "results" / "book" / "04_vit_transfer.json").read_text())["values"]
    failing = {f"{g.name} ({values[f'{task}_task']})" for task in ("easy", "hard") for g in registry._regime(task)
               if not g.holds(Values(values))}
    recorded = {part.strip() for part in values["gates_failed"].split(";")} - {"none"}
    assert failing == recorded
    assert values["gates_hold"] is (not failing)
