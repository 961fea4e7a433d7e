"""The generated SOURCE task of the ``glyphs`` backbone: 127 classes of stroke-font glyphs, drawn on the fly.

Formula-driven supervised pre-training (FractalDB, Kataoka et al. 2020; Nakashima et al. 2022;
Baradad et al. 2021) with a source made of strokes, like the handwritten digits the book fine-tunes
on: the glyphs of the Hershey vector fonts that ship in the ``Hershey-Fonts`` package (the ``data``
extra), each drawn from its stroke polylines under heavy random augmentation.  Nothing is
downloaded and no image is stored: every batch is rendered from the strokes and a seed.

**Classes** (:data:`GROUPS`; a class is a list of ``(font, key)`` glyph instances):

- ``latin`` (42): the 26 letters in both cases, from 20 fonts (Roman, Times, Futura-like, script,
  cursive and gothic styles, plus the astrology and meteorology fonts' alphabets and the math fonts'
  sans-serif letters).  Cases whose shapes differ only in size, which the random scale erases,
  are one class: C/c, O/o, P/p, S/s, U/u, V/v, W/w, X/x, Z/z, and I/l (a bar in sans-serif fonts).
- ``greek`` (25): 15 lower-case and 10 capital Greek letters (4 fonts) that no Latin letter
  already draws: the capitals Γ Δ Θ Λ Ξ Π Σ Φ Ψ Ω (Cyrillic Г, Л, П, Ф and the math fonts' ∏, Σ
  join their twins), the small letters α β γ δ ε ζ η ϑ λ μ ξ σ τ φ ω (π and ψ join Π and Ψ; ι κ ν
  ο ρ υ χ are dropped as Latin look-alikes).
- ``cyrillic`` (11): Б Д Ж И Ц Ч Ш Ы Э Ю Я (2 fonts; small letters join their capitals, Й joins
  И, Щ joins Ш); З (a digit 3), Ь and Ъ (a Latin b) are dropped.
- ``symbols`` (19): ``# $ % & ( ) * + < > ? @ [ ] { } ~ ! =`` from 23 text fonts (small marks
  such as ``. , ' -`` carry too little ink; ``/ \\ |`` are a sheared I).
- ``math`` (20): ± ∓ ≠ ≡ ∞ √ ⊃ → ↑ ← ↓ ∂ ∫ ∃ ℵ ÷ ‖ ⊥ ∠ ∴ (the two math fonts; ∪ ∩ ⊂ ∈ ∝ × are
  dropped as twins of u n C ε α x).
- ``markers`` (10): □ ◇ ☆ ▽ § † ♠ ♡ ♣ ✡ (the markers and symbolic fonts; ○ △ ✚ join O Δ +).
- ``digits`` (10, **not in the default source**): 0-9 from 28 fonts, for the in-domain ablation.

**Why no digits.** The downstream tasks are handwritten digits.  ImageNet does contain CIFAR's
categories, but as 10 of 1,000 classes of photographs unlike CIFAR's 32-px images; printed digit
glyphs drawn like strokes are nearly the downstream images themselves, and a source with them
would hand the backbone a digit classifier: a head-only probe would then measure how close
printed digits are to handwritten ones, not whether pre-trained features transfer to a new task,
and the book's rule that no downstream image or label enters pre-training would break.  Letters
that resemble digits (O, I/l, S, Z, b, g, q) stay: they are the "in-domain strokes" whose share of
the transfer the ablations measure (``groups`` without ``latin``; ``digits=True``).

**Augmentation** (:class:`GlyphConfig`; every draw from the ``torch.Generator`` passed in): the
glyph's stroke points (its box centred, longest side 1) are displaced by a smooth random field
(three sinusoids per axis: elastic jitter), then scaled (longest side 55-90 % of the image, aspect
jitter), sheared, rotated and shifted; they are splatted on a ``canvas`` x ``canvas`` grid (64 px),
thickened with a disc brush of random width (0.8-2.6 output pixels), area-downsampled to ``size``
(16 px), optionally blurred (Gaussian, random sigma), composited light ink on a dark background of
random levels, plus Gaussian noise: grey levels in [0, 1] copied to three channels, like the
downstream digits.

Rendering is vectorised over the batch (ragged point lists, one scatter, one convolution per brush
width); :func:`render_speed` measures it: about 3,000 images per CPU-second on one thread on the
book's 2-core machine, where a 12-block ViT-Tiny training step takes 100 images per CPU-second
(rendering is 2-3 % of pre-training).  Building the point table (loading 30 fonts) takes about
2 CPU-seconds once per process.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["DEFAULT_GROUPS", "GROUPS", "HELDOUT_CHUNK", "GlyphConfig", "GlyphSource", "class_table", "glyph_batch", "heldout_set",
           "render_speed"]

# --- the class table --------------------------------------------------------------------------

# Fonts whose ASCII letters are Latin letters (the 18 text fonts, then two symbol fonts with an alphabet).
LATIN_FONTS = ("futural", "futuram", "rowmans", "rowmand", "rowmant", "timesr", "timesi", "timesib", "timesrb",
               "cursive", "scripts", "scriptc", "gothiceng", "gothicger", "gothicita", "gothgbt", "gothgrt",
               "gothitt", "astrology", "meteorology")
TEXT_FONTS = LATIN_FONTS[:18]
# The Greek fonts in two key layouts: "G1" (greek, timesg: A=Alpha, B=Beta, C=Chi, D=Delta, ...) and
# "G2" (greekc, greeks: the Greek alphabet in order on A..X / a..x).
_GREEK_G1 = {"Γ": "G", "Δ": "D", "Θ": "Q", "Λ": "L", "Ξ": "X", "Π": "P", "Σ": "S", "Φ": "F", "Ψ": "Y", "Ω": "W",
             "α": "a", "β": "b", "γ": "g", "δ": "d", "ε": "e", "ζ": "z", "η": "h", "ϑ": "q", "λ": "l", "μ": "m",
             "ξ": "x", "π": "p", "σ": "s", "τ": "t", "φ": "f", "ψ": "y", "ω": "w"}
_GREEK_ORDER = "ΑΒΓΔΕΖΗΘΙΚΛΜΝΞΟΠΡΣΤΥΦΧΨΩ"
_GREEK_ORDER_LOWER = "αβγδεζηϑικλμνξοπρστυφχψω"
_GREEK_G2 = {**{c: chr(ord("A") + i) for i, c in enumerate(_GREEK_ORDER)},
             **{c: chr(ord("a") + i) for i, c in enumerate(_GREEK_ORDER_LOWER)}}
GREEK_FONTS = {"greek": _GREEK_G1, "timesg": _GREEK_G1, "greekc": _GREEK_G2, "greeks": _GREEK_G2}
# Cyrillic: "cyrillic" maps keys by sound, "cyrilc_1" in alphabetical order (A..Z = А..Щ).
_CYRILLIC = {  # letter -> keys in font "cyrillic" (capital and small), keys in font "cyrilc_1"
    "Б": ("B", "B"), "Д": ("Dd", "Ee"), "Ж": ("Hh", "Gg"), "И": ("Ii", "IiJj"), "Ц": ("`%", "Ww"), "Ч": ("Jj", "Xx"),
    "Ш": ("QqWw", "YyZz"), "Ы": ("$&", ""), "Э": ("Cc", ""), "Ю": ("Uu", ""), "Я": ("^}", ""),
}
# Cyrillic letters that are Greek capitals' twins join them: Г Л П Ф.
_CYRILLIC_TWINS = {"Γ": ("Gg", "Dd"), "Λ": ("Ll", "Ll"), "Π": ("Pp", "Pp"), "Φ": ("Ff", "Uu")}
MATH_FONTS = ("mathlow", "mathupp")  # mathlow draws a..z on keys A..Z, mathupp A..Z
_MATH = {"±": "!", "∓": '"', "≠": "?", "≡": "@", "∞": "_", "√": "bo", "⊃": "f", "→": "i", "↑": "j", "←": "k",
         "↓": "l", "∂": "m", "∫": "p", "∃": "v", "ℵ": "w", "÷": "x", "‖": "y", "⊥": "z", "∠": "|", "∴": "~"}
_MARKERS = {"□": (("markers", "B"), ("symbolic", "I")), "◇": (("markers", "D"), ("symbolic", "K"), ("symbolic", "o")),
            "☆": (("markers", "E"), ("symbolic", "L")), "▽": (("markers", "P"), ("symbolic", "G")),
            "§": (("symbolic", "i"),), "†": (("symbolic", "j"),), "♠": (("symbolic", "m"),), "♡": (("symbolic", "n"),),
            "♣": (("symbolic", "p"),), "✡": (("symbolic", "`"),)}
SYMBOLS = "#$%&()*+<>?@[]{}~!="
SYMBOL_FONTS = TEXT_FONTS + ("greek", "timesg", "greekc", "greeks", "cyrilc_1")
MERGED_CASES = "COPSUVWXZ"  # upper and lower case one class; and l joins I

GROUP_NAMES = ("latin", "greek", "cyrillic", "symbols", "math", "markers", "digits")
DEFAULT_GROUPS = ("latin", "greek", "cyrillic", "symbols", "math", "markers")


def _build_groups() -> dict[str, tuple[tuple[str, tuple[tuple[str, str], ...]], ...]]:
    groups: dict[str, list[tuple[str, list[tuple[str, str]]]]] = {g: [] for g in GROUP_NAMES}
    # Latin: upper case, lower case, with merges
    latin: dict[str, list[tuple[str, str]]] = {}
    for up in "ABCDEFGHIJKLMNOPQRSTUVWXYZ":
        low = up.lower()
        for letter, math_font in ((up, "mathupp"), (low, "mathlow")):
            target = "I" if letter == "l" else up if up in MERGED_CASES else letter
            # both math fonts draw their letters on the capital keys
            latin.setdefault(target, []).extend([(f, letter) for f in LATIN_FONTS] + [(math_font, up)])
    latin["O"] += [("markers", "A"), ("symbolic", "H")]  # the circle marker
    groups["latin"] = [(f"{k}/{k.lower()}" if k in MERGED_CASES else ("I/l" if k == "I" else k), v)
                       for k, v in latin.items()]
    # Greek
    greek_names = ("Γ", "Δ", "Θ", "Λ", "Ξ", "Π", "Σ", "Φ", "Ψ", "Ω", "α", "β", "γ", "δ", "ε", "ζ", "η", "ϑ", "λ", "μ",
                   "ξ", "σ", "τ", "φ", "ω")
    greek: dict[str, list[tuple[str, str]]] = {g: [] for g in greek_names}
    for font, layout in GREEK_FONTS.items():
        for letter, key in layout.items():
            target = {"π": "Π", "ψ": "Ψ"}.get(letter, letter)
            if target in greek:
                greek[target].append((font, key))
    for letter, (keys_c, keys_c1) in _CYRILLIC_TWINS.items():
        greek[letter] += [("cyrillic", k) for k in keys_c] + [("cyrilc_1", k) for k in keys_c1]
    greek["Π"] += [(f, ":") for f in MATH_FONTS]
    greek["Σ"] += [(f, ";") for f in MATH_FONTS]
    greek["Δ"] += [("markers", "C"), ("symbolic", "J")]  # the triangle marker
    groups["greek"] = list(greek.items())
    groups["cyrillic"] = [(letter, [("cyrillic", k) for k in kc] + [("cyrilc_1", k) for k in kc1])
                          for letter, (kc, kc1) in _CYRILLIC.items()]
    symbols = [(s, [(f, s) for f in SYMBOL_FONTS]) for s in SYMBOLS]
    symbols[SYMBOLS.index("+")][1].extend([("markers", "F"), ("symbolic", "^")])  # the outlined cross
    groups["symbols"] = symbols
    groups["math"] = [(s, [(f, k) for f in MATH_FONTS for k in keys]) for s, keys in _MATH.items()]
    markers = {name: list(inst) for name, inst in _MARKERS.items()}
    markers["▽"] += [(f, "n") for f in MATH_FONTS]  # the nabla
    groups["markers"] = list(markers.items())
    digit_fonts = LATIN_FONTS + ("greek", "timesg", "greekc", "greeks", "cyrillic", "cyrilc_1") + MATH_FONTS
    groups["digits"] = [(d, [(f, d) for f in digit_fonts]) for d in "0123456789"]
    return {g: tuple((name, tuple(inst)) for name, inst in v) for g, v in groups.items()}


GROUPS = _build_groups()


def class_table(groups: tuple[str, ...] = DEFAULT_GROUPS) -> tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...]:
    """``(name, group, instances)`` of every class of a source made of ``groups`` (in ``GROUP_NAMES`` order)."""
    groups = _check_groups(groups)
    return tuple((name, g, inst) for g in GROUP_NAMES if g in groups for name, inst in GROUPS[g])


def _check_groups(groups) -> tuple[str, ...]:
    if isinstance(groups, str) or not groups:
        raise ValueError(f"groups must be a non-empty tuple of names from {GROUP_NAMES}, got {groups!r}")
    unknown = [g for g in groups if g not in GROUP_NAMES]
    if unknown or len(set(groups)) != len(groups):
        raise ValueError(f"groups must be distinct names from {GROUP_NAMES}, got {tuple(groups)!r}")
    return tuple(g for g in GROUP_NAMES if g in groups)


# --- strokes -> normalised point clouds -------------------------------------------------------

@lru_cache(maxsize=None)
def _font_glyphs(font: str) -> dict[str, list[list[tuple[int, int]]]]:
    try:
        from HersheyFonts import HersheyFonts
    except ImportError as exc:  # pragma: no cover - the data extra is installed with the book
        raise ImportError("the glyph source needs the Hershey-Fonts package: pip install 'nora[data]' "
                          "(or pip install Hershey-Fonts)") from exc
    h = HersheyFonts()
    h.load_default_font(font)
    return {key: [list(s) for s in g.strokes if len(s) > 1] for key, g in h.all_glyphs.items()}


def _points(strokes: list[list[tuple[int, int]]], spacing: float) -> np.ndarray:
    """Points every ``spacing`` (in units of the glyph's longest side) along the strokes, box centred, side 1."""
    pts = np.concatenate([np.asarray(s, dtype=np.float64) for s in strokes])
    lo, hi = pts.min(0), pts.max(0)
    side = float((hi - lo).max())
    if side <= 0:
        raise ValueError("glyph has no extent")
    centre = (lo + hi) / 2
    out = []
    for s in strokes:
        v = (np.asarray(s, dtype=np.float64) - centre) / side
        a, b = v[:-1], v[1:]
        k = np.maximum(1, np.ceil(np.linalg.norm(b - a, axis=1) / spacing)).astype(np.int64)
        seg = np.repeat(np.arange(len(k)), k + 1)  # k + 1 points per segment, both ends included
        t = (np.arange(len(seg)) - np.repeat(np.cumsum(k + 1) - (k + 1), k + 1)) / k[seg]
        out.append(a[seg] + t[:, None] * (b[seg] - a[seg]))
    return np.unique(np.round(np.concatenate(out) / (spacing / 4)), axis=0) * (spacing / 4)


@lru_cache(maxsize=8)
def _point_table(groups: tuple[str, ...], spacing: float):
    """All instances' points concatenated: (points (T, 2) float32, offsets (I,), lengths (I,), class offsets/counts)."""
    table = class_table(groups)
    chunks, lengths, class_first, class_count = [], [], [], []
    for name, _, instances in table:
        first = len(lengths)
        for font, key in instances:
            strokes = _font_glyphs(font).get(key) or []
            if not strokes:
                continue
            p = _points(strokes, spacing)
            chunks.append(p)
            lengths.append(len(p))
        if len(lengths) == first:
            raise ValueError(f"glyph class {name!r} has no drawable instance")
        class_first.append(first)
        class_count.append(len(lengths) - first)
    lengths_t = torch.tensor(lengths, dtype=torch.long)
    offsets = torch.cumsum(lengths_t, 0) - lengths_t
    points = torch.from_numpy(np.concatenate(chunks).astype(np.float32))
    return points, offsets, lengths_t, torch.tensor(class_first), torch.tensor(class_count)


# --- the source --------------------------------------------------------------------------------

@dataclass(frozen=True)
class GlyphConfig:
    """What the generated glyph source draws (every range is sampled uniformly per image).

    ``groups``: the class groups (see the module docstring); ``digits=True`` adds the digit glyphs.
    Geometry in units of the output image side unless said otherwise: ``scale`` the glyph's longest
    side, ``aspect`` the log-uniform aspect jitter (1 + aspect at most), ``rotation`` degrees either
    way, ``shear`` the x += shear * y factor either way, ``translate`` the centre's shift either way,
    ``elastic`` the largest amplitude of each of the three sinusoids per axis (units of the glyph's
    longest side).  ``width`` the stroke width in output pixels; ``blur`` (probability, largest
    sigma in output pixels); ``ink`` / ``background`` grey levels; ``noise`` the largest std.
    """

    size: int = 16
    canvas: int = 64
    groups: tuple[str, ...] = DEFAULT_GROUPS
    digits: bool = False
    scale: tuple[float, float] = (0.55, 0.9)
    aspect: float = 0.25
    rotation: float = 15.0
    shear: float = 0.3
    translate: float = 0.08
    elastic: float = 0.03
    width: tuple[float, float] = (0.8, 2.6)
    blur: tuple[float, float] = (0.4, 1.0)
    ink: tuple[float, float] = (0.7, 1.0)
    background: tuple[float, float] = (0.0, 0.15)
    noise: float = 0.05
    spacing: float = field(default=1 / 96, metadata={"doc": "point spacing along strokes (glyph units)"})

    def __post_init__(self) -> None:
        for name in ("size", "canvas"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 4:
                raise ValueError(f"{name} must be an int >= 4, got {v!r}")
        if self.canvas % self.size:
            raise ValueError(f"canvas ({self.canvas}) must be a multiple of size ({self.size})")
        groups = _check_groups(tuple(self.groups))
        if "digits" in groups:
            raise ValueError("add the digit glyphs with digits=True, not in groups")
        object.__setattr__(self, "groups", groups)
        for name in ("scale", "width", "ink", "background"):
            lo, hi = getattr(self, name)
            if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0 or hi < lo:
                raise ValueError(f"{name} must be a range (lo, hi) with 0 <= lo <= hi, got {getattr(self, name)!r}")
        for name in ("aspect", "rotation", "shear", "translate", "elastic", "noise"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        p, sigma = self.blur
        if not 0 <= p <= 1 or sigma < 0:
            raise ValueError(f"blur must be (probability in [0, 1], sigma >= 0), got {self.blur!r}")
        if not 0 < self.spacing <= 0.1:
            raise ValueError(f"spacing must be in (0, 0.1], got {self.spacing!r}")

    @property
    def all_groups(self) -> tuple[str, ...]:
        return self.groups + (("digits",) if self.digits else ())

    def to_dict(self) -> dict:
        return json_ready(asdict(self))


def json_ready(obj):
    """Tuples -> lists, recursively (what a JSON round trip gives)."""
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    return obj


def _u(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


@lru_cache(maxsize=32)
def _disc(radius: float) -> torch.Tensor:
    k = int(math.ceil(radius - 0.5))
    r = torch.arange(-k, k + 1, dtype=torch.float32)
    return ((r[:, None] ** 2 + r[None, :] ** 2) <= radius**2).float()[None, None]


class GlyphSource:
    """The glyph source of a :class:`GlyphConfig`: ``classes``, ``render(labels, gen)``, ``sample(n, gen)``."""

    def __init__(self, config: GlyphConfig | None = None) -> None:
        self.config = config if config is not None else GlyphConfig()
        if not isinstance(self.config, GlyphConfig):
            raise TypeError(f"config must be a GlyphConfig, got {type(self.config).__name__}")
        table = class_table(self.config.all_groups)
        self.classes: tuple[str, ...] = tuple(name for name, _, _ in table)
        self.class_groups: tuple[str, ...] = tuple(g for _, g, _ in table)
        (self._points, self._offsets, self._lengths, self._class_first,
         self._class_count) = _point_table(self.config.all_groups, self.config.spacing)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_instances(self) -> int:
        return int(self._lengths.numel())

    def render(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Images (n, 3, size, size) in [0, 1] of the classes ``labels``, every random draw from ``generator``."""
        cfg = self.config
        labels = torch.as_tensor(labels, dtype=torch.long)
        if labels.dim() != 1 or labels.numel() == 0:
            raise ValueError(f"labels must be a non-empty 1-D tensor of class indices, got shape {tuple(labels.shape)}")
        if labels.min() < 0 or labels.max() >= self.num_classes:
            raise ValueError(f"labels must lie in [0, {self.num_classes - 1}], got {labels.min().item()}..{labels.max().item()}")
        gen = generator
        n, c, s = labels.numel(), cfg.canvas, cfg.size
        inst = self._class_first[labels] + (torch.rand(n, generator=gen) * self._class_count[labels]).long().clamp(
            max=self._class_count[labels] - 1)
        lengths = self._lengths[inst]
        image = torch.repeat_interleave(torch.arange(n), lengths)
        start = torch.cumsum(lengths, 0) - lengths
        local = torch.arange(int(lengths.sum())) - start[image]
        p = self._points[self._offsets[inst][image] + local]  # (T, 2) in glyph units, centred
        # elastic jitter: three sinusoids per axis, 1-2.5 cycles per glyph side
        k = 3
        amp = _u(n * 2 * k, 0.0, cfg.elastic, gen).view(n, 2, k)
        freq = _u(n * 2 * k, 1.0, 2.5, gen).view(n, 2, k) * 2 * math.pi
        ang = _u(n * 2 * k, 0.0, 2 * math.pi, gen).view(n, 2, k)
        phase = _u(n * 2 * k, 0.0, 2 * math.pi, gen).view(n, 2, k)
        wx, wy = (freq * torch.cos(ang))[image], (freq * torch.sin(ang))[image]  # (T, 2, k)
        arg = wx * p[:, 0, None, None] + wy * p[:, 1, None, None] + phase[image]
        p = p + (amp[image] * torch.sin(arg)).sum(-1)
        # affine: scale with aspect jitter, shear, rotation, shift (units of the image side)
        size = _u(n, *cfg.scale, gen)
        log_a = _u(n, -math.log1p(cfg.aspect), math.log1p(cfg.aspect), gen)
        sx, sy = size * torch.exp(log_a / 2), size * torch.exp(-log_a / 2)
        shear = _u(n, -cfg.shear, cfg.shear, gen)
        rot = _u(n, -cfg.rotation, cfg.rotation, gen) * (math.pi / 180)
        tx, ty = _u(n, -cfg.translate, cfg.translate, gen), _u(n, -cfg.translate, cfg.translate, gen)
        cos, sin = torch.cos(rot), torch.sin(rot)
        a11, a12 = cos * sx, cos * shear * sy - sin * sy
        a21, a22 = sin * sx, sin * shear * sy + cos * sy
        x, y = p[:, 0], p[:, 1]
        gx = a11[image] * x + a12[image] * y + tx[image]
        gy = a21[image] * x + a22[image] * y + ty[image]
        ix = ((gx + 0.5) * c).floor().long()
        iy = ((gy + 0.5) * c).floor().long()
        inside = (ix >= 0) & (ix < c) & (iy >= 0) & (iy < c)
        canvas = torch.zeros(n * c * c)
        canvas[(image * (c * c) + iy * c + ix)[inside]] = 1.0
        canvas = canvas.view(n, 1, c, c)
        # disc brush of a random width, bucketed to half canvas pixels
        factor = c // s
        radius = _u(n, *cfg.width, gen) * factor / 2
        bucket = (radius * 2).round() / 2
        ink = torch.empty_like(canvas)
        for r in torch.unique(bucket).tolist():
            idx = (bucket == r).nonzero().flatten()
            kernel = _disc(max(r, 0.5))
            ink[idx] = (F.conv2d(canvas[idx], kernel, padding=kernel.shape[-1] // 2) > 0).float()
        alpha = F.avg_pool2d(ink, factor) if factor > 1 else ink  # (n, 1, s, s), area downsampling
        # optional Gaussian blur, per image sigma (grouped separable convolution)
        p_blur, max_sigma = cfg.blur
        blurred = torch.rand(n, generator=gen) < p_blur
        sigma = _u(n, 0.3, max(0.3, max_sigma), gen)
        if max_sigma > 0 and bool(blurred.any()):
            idx = blurred.nonzero().flatten()
            half = 3
            t = torch.arange(-half, half + 1, dtype=torch.float32)
            w = torch.exp(-(t[None] ** 2) / (2 * sigma[idx, None] ** 2))
            w = w / w.sum(1, keepdim=True)
            a = alpha[idx].view(1, -1, s, s)
            a = F.conv2d(F.pad(a, (half, half, 0, 0), mode="replicate"), w.view(-1, 1, 1, 2 * half + 1), groups=idx.numel())
            a = F.conv2d(F.pad(a, (0, 0, half, half), mode="replicate"), w.view(-1, 1, 2 * half + 1, 1), groups=idx.numel())
            alpha[idx] = a.view(-1, 1, s, s)
        fg = _u(n, *cfg.ink, gen).view(n, 1, 1, 1)
        bg = _u(n, *cfg.background, gen).view(n, 1, 1, 1)
        noise = torch.randn(n, 1, s, s, generator=gen) * _u(n, 0.0, cfg.noise, gen).view(n, 1, 1, 1)
        grey = (bg + (fg - bg) * alpha + noise).clamp(0.0, 1.0)
        return grey.expand(n, 3, s, s).contiguous()

    def sample(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` images with labels drawn uniformly from the classes: ``(images in [0, 1], labels)``."""
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ValueError(f"n must be a positive int, got {n!r}")
        labels = torch.randint(self.num_classes, (n,), generator=generator)
        return self.render(labels, generator), labels


@lru_cache(maxsize=4)
def _source(config: GlyphConfig) -> GlyphSource:
    return GlyphSource(config)


def glyph_batch(config: GlyphConfig, seed: int, step: int, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch ``step`` of the endless training stream ``seed``: a pure function of its arguments (images in [0, 1])."""
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))
    return _source(config).sample(batch, gen)


HELDOUT_CHUNK = 512


def heldout_set(config: GlyphConfig, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` held-out images and labels, from a generator no training step uses (its own seed space).

    Drawn in chunks of ``HELDOUT_CHUNK``, so the first ``k * HELDOUT_CHUNK`` images of a larger set
    are the smaller set: a test can check the shipped backbone on a prefix of its held-out set.
    """
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    source = _source(config)
    gen = torch.Generator().manual_seed(2**40 + int(seed))
    parts = [source.sample(min(HELDOUT_CHUNK, n - i), gen) for i in range(0, n, HELDOUT_CHUNK)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def render_speed(config: GlyphConfig | None = None, batch: int = 256, batches: int = 8, threads: int = 1) -> float:
    """Images rendered per CPU-second on ``threads`` torch threads (after one warm-up batch)."""
    config = config or GlyphConfig()
    saved = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        glyph_batch(config, 0, 0, batch)
        t0 = time.process_time()
        for step in range(1, batches + 1):
            glyph_batch(config, 0, step, batch)
        return batch * batches / max(time.process_time() - t0, 1e-9)
    finally:
        torch.set_num_threads(saved)
