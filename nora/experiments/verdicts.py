"""Verdicts from numbers: the criteria that decide a claim from a chapter's recorded results.

A criterion reads keys of ``results/<profile>/<chapter>.json`` (a mean ``k`` with its std over
seeds ``k_std``, a recorded difference ``d`` with its standard error ``d_se``, a count, a flag)
and returns an :class:`Outcome`: one of :data:`VERDICTS`, the numbers shown as "ours", and the
reason. Comparisons of seeded numbers use one rule everywhere: a difference of more than
:data:`Z` standard errors in the claimed direction holds, as much in the other direction fails,
anything in between is inconclusive; ``s.e. = sqrt((s_a^2 + s_b^2) / n)`` for two means with
stds ``s`` over ``n`` seeds. A key that is absent (or not a number) makes the claim "not testable
here" with the key named, never an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

HOLDS, FAILS, INCONCLUSIVE, UNTESTABLE = "holds", "fails", "inconclusive", "not testable here"
VERDICTS = (HOLDS, FAILS, INCONCLUSIVE, UNTESTABLE)
Z = 2.0  # standard errors a seeded difference must clear

__all__ = [
    "FAILS", "HOLDS", "INCONCLUSIVE", "UNTESTABLE", "VERDICTS", "Z",
    "AllOf", "Best", "Criterion", "Exceeds", "Flag", "Gain", "Gate", "Majority", "Missing", "NotTestable", "Outcome",
    "Ratio", "Regime", "Values", "Within", "ZeroMean", "fmt",
]


class Missing(LookupError):
    """A key a criterion needs is not recorded (or is not a number)."""

    def __init__(self, key: str, why: str = "is not recorded"):
        super().__init__(f"{key} {why}")
        self.key = key


@dataclass(frozen=True)
class Outcome:
    """A verdict, the numbers behind it as shown in the "ours" column, and why."""

    verdict: str
    ours: str
    reason: str
    short: str = ""  # a compact "ours" for a part of a composite claim (defaults to ``ours``)


class Values:
    """A chapter's recorded values, read by key; a missing or non-numeric key raises :class:`Missing`."""

    def __init__(self, values: Mapping[str, Any]):
        self._values = dict(values)

    def num(self, key: str) -> float:
        if key not in self._values:
            raise Missing(key)
        value = self._values[key]
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise Missing(key, f"is {value!r}, not a finite number")
        return float(value)

    def flag(self, key: str) -> bool:
        if not isinstance(self._values.get(key), bool):
            raise Missing(key, "is not a recorded true/false value" if key in self._values else "is not recorded")
        return self._values[key]

    def seeds(self, key: str = "seeds") -> int:
        value = self._values.get(key)
        n = len(value) if isinstance(value, list) else value
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise Missing(key, "(the number of seeds) is not recorded" if value is None else f"is {value!r}, not a seed count")
        return n


def fmt(x: float, digits: int | None = None) -> str:
    """A number for the ledger: ``digits`` decimals when given, else 4 significant digits; ints with separators."""
    if float(x).is_integer() and abs(x) < 1e15 and digits is None:
        text = f"{int(x):,}"
    else:
        text = f"{x:.{digits}f}" if digits is not None else f"{x:.4g}"
    return text.replace("-", "−")


def _pm(mean: float, std: float, digits: int) -> str:
    return f"{fmt(mean, digits)} ± {fmt(std, digits)}"


def _signed(d: float, se: float, digits: int) -> str:
    d = 0.0 if round(d, digits) == 0 else d  # no "-0.00"
    return f"Δ {d:+.{digits}f} ± {se:.{digits}f}".replace("-", "−")


def _compare(d: float, se: float) -> str:
    """The one rule for seeded differences: beyond Z s.e. either way decides, else inconclusive."""
    if se == 0:
        return HOLDS if d > 0 else FAILS
    if d > Z * se:
        return HOLDS
    if d < -Z * se:
        return FAILS
    return INCONCLUSIVE


class Criterion:
    """Base of the criteria: ``judge`` may raise :class:`Missing`; ``evaluate`` never raises for missing keys."""

    def keys(self) -> tuple[str, ...]:
        raise NotImplementedError

    def words(self) -> str:
        raise NotImplementedError

    def judge(self, v: Values) -> Outcome:
        raise NotImplementedError

    def evaluate(self, values: Mapping[str, Any]) -> Outcome:
        try:
            return self.judge(Values(values))
        except Missing as exc:
            return Outcome(UNTESTABLE, "—", str(exc))


@dataclass(frozen=True)
class Exceeds(Criterion):
    """Mean ``a`` above mean ``b`` beyond seed noise (stds ``a_std``, ``b_std``, seed count ``seeds``)."""

    a: str
    b: str
    labels: tuple[str, str]
    digits: int = 2
    seeds: str = "seeds"
    tag: str = ""  # e.g. " (easy)": which task, when a claim compares on several

    def keys(self):
        return (self.a, f"{self.a}_std", self.b, f"{self.b}_std", self.seeds)

    def words(self):
        return f"{self.labels[0]} − {self.labels[1]}{self.tag} > {Z:g} s.e."

    def judge(self, v):
        ma, sa, mb, sb, n = v.num(self.a), v.num(f"{self.a}_std"), v.num(self.b), v.num(f"{self.b}_std"), v.seeds(self.seeds)
        d, se = ma - mb, math.sqrt((sa**2 + sb**2) / n)
        la, lb = self.labels
        ours = f"{la} {_pm(ma, sa, self.digits)} vs {lb} {_pm(mb, sb, self.digits)}{self.tag}: {_signed(d, se, self.digits)} (n = {n})"
        short = f"{la} − {lb}{self.tag}: {_signed(d, se, self.digits)}"
        return Outcome(_compare(d, se), ours, f"{la} − {lb}{self.tag} = {d:+.3g}, s.e. {se:.3g}", short)


@dataclass(frozen=True)
class Gain(Criterion):
    """A difference the chapter recorded with its uncertainty: ``diff`` and ``se`` (default ``diff_se``) or a 95 % ``ci95``."""

    diff: str
    label: str
    se: str | None = None
    ci95: str | None = None
    digits: int = 2
    seeds: str = "seeds"

    def keys(self):
        return (self.diff, self.ci95 or self.se or f"{self.diff}_se") + ((self.seeds,) if self.ci95 else ())

    def words(self):
        return f"{self.label} > {Z:g} s.e." + (" (s.e. from the 95 % CI)" if self.ci95 else "")

    def judge(self, v):
        d = v.num(self.diff)
        if self.ci95:
            from scipy import stats

            n = v.seeds(self.seeds)
            if n < 2:
                raise Missing(self.seeds, "is 1: a single seed has no confidence interval")
            se = v.num(self.ci95) / float(stats.t.ppf(0.975, n - 1))
        else:
            se = v.num(self.se or f"{self.diff}_se")
        return Outcome(_compare(d, se), f"{self.label}: {_signed(d, se, self.digits)}", f"{self.label} = {d:+.3g}, s.e. {se:.3g}")


@dataclass(frozen=True)
class Best(Criterion):
    """``target`` above the best of ``others`` (``prefix + name`` keys, each with ``_std``) beyond seed noise."""

    prefix: str
    target: str
    others: tuple[str, ...]
    labels: Mapping[str, str]
    digits: int = 2
    tag: str = ""

    def keys(self):
        names = (self.target, *self.others)
        return tuple(k for n in names for k in (self.prefix + n, f"{self.prefix}{n}_std")) + ("seeds",)

    def words(self):
        return f"{self.labels[self.target]} − the best other method > {Z:g} s.e."

    def judge(self, v):
        rival = max(self.others, key=lambda n: v.num(self.prefix + n))
        return Exceeds(self.prefix + self.target, self.prefix + rival, (self.labels[self.target], self.labels[rival]),
                       self.digits, tag=self.tag).judge(v)


@dataclass(frozen=True)
class Within(Criterion):
    """A number inside [lo, hi]; when ``seeded`` (std ``key_std`` over ``seeds``) the whole ±Z s.e. interval must be."""

    key: str
    label: str
    lo: float | None = None
    hi: float | None = None
    seeded: bool = False
    digits: int | None = None
    unit: str = ""

    def keys(self):
        return (self.key,) + ((f"{self.key}_std", "seeds") if self.seeded else ())

    def _bounds(self) -> str:
        if self.lo is not None and self.hi is not None:
            return f"{fmt(self.lo)} ≤ {self.label} ≤ {fmt(self.hi)}"
        return f"{self.label} ≥ {fmt(self.lo)}" if self.lo is not None else f"{self.label} ≤ {fmt(self.hi)}"

    def words(self):
        return self._bounds() + (f", ±{Z:g} s.e. included" if self.seeded else "")

    def _inside(self, x: float) -> bool:
        return (self.lo is None or x >= self.lo) and (self.hi is None or x <= self.hi)

    def judge(self, v):
        x = v.num(self.key)
        if not self.seeded:
            return Outcome(HOLDS if self._inside(x) else FAILS, f"{self.label} = {fmt(x, self.digits)}{self.unit}",
                           f"{self.label} = {x:.4g}")
        s, n = v.num(f"{self.key}_std"), v.seeds()
        half = Z * s / math.sqrt(n)
        lo_in, hi_in = self._inside(x - half), self._inside(x + half)
        outside = (self.lo is not None and x + half < self.lo) or (self.hi is not None and x - half > self.hi)
        verdict = HOLDS if lo_in and hi_in else FAILS if outside else INCONCLUSIVE
        shown = f"{self.label} = {_pm(x, s, self.digits if self.digits is not None else 3)}{self.unit} (n = {n})"
        return Outcome(verdict, shown, f"{self.label} = {x:.4g} ± {half:.3g} ({Z:g} s.e.)")


@dataclass(frozen=True)
class Ratio(Criterion):
    """A deterministic ratio ``a / b`` (counts, FLOPs, ranks) inside [lo, hi]."""

    a: str
    b: str
    label: str
    lo: float | None = None
    hi: float | None = None
    digits: int = 2

    def keys(self):
        return (self.a, self.b)

    def words(self):
        return Within("", self.label, self.lo, self.hi).words()

    def judge(self, v):
        a, b = v.num(self.a), v.num(self.b)
        if b == 0:
            raise Missing(self.b, "is 0: the ratio is undefined")
        r = a / b
        ok = (self.lo is None or r >= self.lo) and (self.hi is None or r <= self.hi)
        return Outcome(HOLDS if ok else FAILS, f"{self.label} = {fmt(a)} / {fmt(b)} = {r:.{self.digits}f}", f"ratio {r:.4g}")


@dataclass(frozen=True)
class ZeroMean(Criterion):
    """A quantity claimed to be zero, recorded as ``z`` = estimate / s.e.: holds if |z| ≤ Z (consistent with 0), fails beyond."""

    z: str
    label: str

    def keys(self):
        return (self.z,)

    def words(self):
        return f"|{self.label}| / s.e. ≤ {Z:g} (consistent with zero)"

    def judge(self, v):
        z = v.num(self.z)
        return Outcome(HOLDS if abs(z) <= Z else FAILS, f"{self.label}: {abs(z):.1f} s.e. from 0", f"|z| = {abs(z):.3g}")


@dataclass(frozen=True)
class Majority(Criterion):
    """A sign count: ``count`` of ``total`` cases go the claimed way; all of them holds, fewer than half fails."""

    count: str
    total: str
    label: str

    def keys(self):
        return (self.count, self.total)

    def words(self):
        return f"{self.label} in every case (fails in fewer than half; otherwise inconclusive)"

    def judge(self, v):
        k, n = v.num(self.count), v.num(self.total)
        if n <= 0:
            raise Missing(self.total, "is 0: no cases")
        verdict = HOLDS if k == n else FAILS if k < n / 2 else INCONCLUSIVE
        return Outcome(verdict, f"{self.label}: {fmt(k)} of {fmt(n)}", f"{k:g} of {n:g}")


@dataclass(frozen=True)
class Flag(Criterion):
    """A recorded true/false fact (e.g. "every error curve decreases"): true holds, false fails."""

    key: str
    label: str

    def keys(self):
        return (self.key,)

    def words(self):
        return f"{self.label} (recorded true)"

    def judge(self, v):
        ok = v.flag(self.key)
        return Outcome(HOLDS if ok else FAILS, f"{self.label}: {'yes' if ok else 'no'}", f"{self.key} = {ok}")


@dataclass(frozen=True)
class AllOf(Criterion):
    """Every part: fails if any part fails, holds if all hold, not testable if none is testable, else inconclusive."""

    parts: Sequence[Criterion]
    summary: str | None = None

    def keys(self):
        return tuple(k for p in self.parts for k in p.keys())

    def words(self):
        return self.summary or "each of: " + "; ".join(p.words() for p in self.parts)

    def judge(self, v):
        outs = [p.evaluate(v._values) for p in self.parts]
        verdicts = {o.verdict for o in outs}
        if FAILS in verdicts:
            verdict = FAILS
        elif verdicts == {HOLDS}:
            verdict = HOLDS
        elif verdicts == {UNTESTABLE}:
            verdict = UNTESTABLE
        else:
            verdict = INCONCLUSIVE
        ours = "\n".join(o.short or o.ours for o in outs if o.verdict != UNTESTABLE) or "—"
        missing = [o.reason for o in outs if o.verdict == UNTESTABLE]
        reasons = "; ".join(missing) if verdict == UNTESTABLE else "; ".join(f"{o.verdict}: {o.reason}" for o in outs)
        return Outcome(verdict, ours, reasons)


@dataclass(frozen=True)
class Gate:
    """A regime gate: ``a`` (minus ``b`` when given) inside [lo, hi], on recorded means; ``name`` as the chapter prints it."""

    name: str
    a: str
    b: str | None = None
    lo: float | None = None
    hi: float | None = None

    def keys(self) -> tuple[str, ...]:
        return (self.a,) + ((self.b,) if self.b else ())

    def holds(self, v: Values) -> bool:
        x = v.num(self.a) - (v.num(self.b) if self.b else 0.0)
        return (self.lo is None or x >= self.lo) and (self.hi is None or x <= self.hi)


@dataclass(frozen=True)
class Regime(Criterion):
    """``inner``, decided only where the setting could show the claim either way.

    When one of ``gates`` (the regime gates of the task the comparison runs on) fails, a "holds" or
    "fails" of ``inner`` is reported as inconclusive, with the gate named and the comparison's own
    verdict kept in the reason: a verdict is only worth printing where the setting could have
    shown the claim holding. ``where`` names the task in the reason (e.g. "mnist20").
    """

    inner: Criterion
    gates: Sequence[Gate]
    where: str = ""

    def keys(self):
        return tuple(self.inner.keys()) + tuple(k for g in self.gates for k in g.keys())

    def words(self):
        return f"{self.inner.words()}, where the task's regime gates hold"

    def judge(self, v):
        out = self.inner.evaluate(v._values)
        if out.verdict not in (HOLDS, FAILS):
            return out
        failing = [g.name for g in self.gates if not g.holds(v)]
        if not failing:
            return out
        where = f" on {self.where}" if self.where else ""
        reason = (f"regime gate{'s' if len(failing) > 1 else ''} {', '.join(failing)} fail{'' if len(failing) > 1 else 's'}"
                  f"{where}, so the setting cannot decide; the comparison alone {out.verdict}: {out.reason}")
        return Outcome(INCONCLUSIVE, out.ours, reason, out.short)


@dataclass(frozen=True)
class NotTestable(Criterion):
    """A claim this book cannot test, with the reason."""

    reason: str

    def keys(self):
        return ()

    def words(self):
        return self.reason

    def judge(self, v):
        return Outcome(UNTESTABLE, "—", self.reason)
