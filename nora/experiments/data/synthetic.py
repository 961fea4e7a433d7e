"""The generated SOURCE task the book profile pre-trains its ViT on: 24 classes of shapes, strokes and textures.

The embedded (offline) stand-in for ImageNet pre-training.  Every image is drawn from a formula,
so no downstream image (digits) can enter the source data.  Each class is a kind of figure that
stays itself under the random nuisance variables drawn for every image: position, size, rotation,
stroke width, foreground and background colour, and pixel noise.  Under random rotation a "plus"
and an "X" are the same figure, so the 24 classes are chosen to stay distinct under rotation.

Images are rendered on a grid ``SUPERSAMPLE`` times finer than the output, thresholded there and
average-pooled (anti-aliasing), then composited ``bg * (1 - a) + fg * a`` plus Gaussian noise,
and clipped to [0, 1].  Rendering is vectorised per class in torch and driven only by the
``torch.Generator`` it is given: the same seed gives the same images on any machine.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["CLASSES", "SUPERSAMPLE", "render", "sample", "synthetic_batch"]

SUPERSAMPLE = 4

# Class index -> name.  Strokes and junctions (segment, corner, T, Y, arc, S-curve, zigzag, spiral)
# give the backbone line features; filled and outlined figures give region and edge features;
# textures give frequency features.
CLASSES = (
    "disk", "ring", "square", "square outline", "triangle", "triangle outline", "plus", "three-arm star",
    "five-point star", "segment", "parallel segments", "right-angle corner", "T-junction", "half-circle arc",
    "S-curve", "zigzag", "spiral", "ellipse outline", "crescent", "two disks", "three dots", "concentric rings",
    "stripes", "checkerboard",
)


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, 1, 1, generator=gen)


def _segment_distance(x, y, ax, ay, bx, by):
    """Distance from the points (x, y) to the segments a-b (all broadcastable)."""
    dx, dy = bx - ax, by - ay
    t = ((x - ax) * dx + (y - ay) * dy) / torch.clamp(torch.as_tensor(dx * dx + dy * dy), min=1e-9)
    t = t.clamp(0.0, 1.0)
    return torch.hypot(x - ax - t * dx, y - ay - t * dy)


def _polyline_distance(x, y, px, py):
    """Distance to a polyline with vertices px, py of shape (n, K) (per sample)."""
    best = None
    for k in range(px.shape[1] - 1):
        d = _segment_distance(x, y, px[:, k, None, None], py[:, k, None, None], px[:, k + 1, None, None],
                              py[:, k + 1, None, None])
        best = d if best is None else torch.minimum(best, d)
    return best


def _shape_mask(name: str, x, y, w, gen: torch.Generator) -> torch.Tensor:
    """Boolean mask of class ``name`` in local coordinates (x, y) (figure roughly in the unit disk)."""
    n = x.shape[0]
    r = torch.hypot(x, y)
    theta = torch.atan2(y, x)
    h = w / 2
    if name == "disk":
        return r < 0.9
    if name == "ring":
        return (r - 0.75).abs() < h
    if name == "square":
        return torch.maximum(x.abs(), y.abs()) < 0.7
    if name == "square outline":
        return (torch.maximum(x.abs(), y.abs()) - 0.7).abs() < h
    if name in ("triangle", "triangle outline"):
        verts = [(math.cos(a), math.sin(a)) for a in (math.pi / 2, math.pi / 2 + 2 * math.pi / 3,
                                                       math.pi / 2 + 4 * math.pi / 3)]
        if name == "triangle":
            inside = torch.ones_like(x, dtype=torch.bool)
            for (ax, ay), (bx, by) in zip(verts, verts[1:] + verts[:1]):
                inside &= ((bx - ax) * (y - ay) - (by - ay) * (x - ax)) >= 0  # counter-clockwise
            return inside
        d = None
        for (ax, ay), (bx, by) in zip(verts, verts[1:] + verts[:1]):
            e = _segment_distance(x, y, ax * 0.9, ay * 0.9, bx * 0.9, by * 0.9)
            d = e if d is None else torch.minimum(d, e)
        return d < h
    if name == "plus":
        return ((x.abs() < h) & (y.abs() < 0.85)) | ((y.abs() < h) & (x.abs() < 0.85))
    if name == "three-arm star":
        d = None
        for k in range(3):
            a = math.pi / 2 + 2 * math.pi * k / 3
            e = _segment_distance(x, y, 0.0, 0.0, 0.85 * math.cos(a), 0.85 * math.sin(a))
            d = e if d is None else torch.minimum(d, e)
        return d < h
    if name == "five-point star":
        tri = 1 - 2 * torch.abs(torch.remainder(5 * theta / (2 * math.pi), 1.0) - 0.5)  # 1 at the tips
        return r < 0.4 + 0.5 * tri
    if name == "segment":
        return _segment_distance(x, y, -0.85, 0.0, 0.85, 0.0) < h
    if name == "parallel segments":
        return torch.minimum(_segment_distance(x, y, -0.8, -0.35, 0.8, -0.35),
                             _segment_distance(x, y, -0.8, 0.35, 0.8, 0.35)) < h
    if name == "right-angle corner":
        return torch.minimum(_segment_distance(x, y, -0.6, -0.6, -0.6, 0.8),
                             _segment_distance(x, y, -0.6, -0.6, 0.8, -0.6)) < h
    if name == "T-junction":
        return torch.minimum(_segment_distance(x, y, -0.8, 0.6, 0.8, 0.6),
                             _segment_distance(x, y, 0.0, 0.6, 0.0, -0.85)) < h
    if name == "half-circle arc":
        return ((r - 0.7).abs() < h) & (y > 0)
    if name in ("S-curve", "zigzag", "spiral"):
        k = 13
        t = torch.linspace(0, 1, k).expand(n, k)
        if name == "S-curve":
            px, py = 1.7 * t - 0.85, 0.55 * torch.sin(2 * math.pi * t)
        elif name == "zigzag":
            px = 1.7 * t - 0.85
            py = 0.5 * (1 - 2 * torch.abs(torch.remainder(3 * t, 1.0) - 0.5) * 2)
        else:
            ang = 3.5 * math.pi * t
            rad = 0.1 + 0.75 * t
            px, py = rad * torch.cos(ang), rad * torch.sin(ang)
        return _polyline_distance(x, y, px, py) < h
    if name == "ellipse outline":
        return (torch.hypot(x, y / 0.45) - 0.8).abs() < h / 0.6
    if name == "crescent":
        return (r < 0.85) & (torch.hypot(x - 0.45, y) > 0.7)
    if name == "two disks":
        return (torch.hypot(x - 0.5, y) < 0.35) | (torch.hypot(x + 0.5, y) < 0.35)
    if name == "three dots":
        out = torch.zeros_like(x, dtype=torch.bool)
        for k in range(3):
            a = math.pi / 2 + 2 * math.pi * k / 3
            out |= torch.hypot(x - 0.6 * math.cos(a), y - 0.6 * math.sin(a)) < 0.25
        return out
    if name == "concentric rings":
        return ((r - 0.8).abs() < h) | ((r - 0.35).abs() < h)
    if name == "stripes":
        period = _uniform(n, 0.35, 0.7, gen)
        phase = _uniform(n, 0.0, 1.0, gen)
        return torch.remainder(x / period + phase, 1.0) < 0.5
    if name == "checkerboard":
        period = _uniform(n, 0.5, 0.9, gen)
        return (torch.floor(x / period) + torch.floor(y / period)).remainder(2) < 1
    raise ValueError(f"unknown synthetic class {name!r}")


def render(labels: torch.Tensor, size: int = 16, generator: torch.Generator | None = None) -> torch.Tensor:
    """Images (n, 3, size, size) in [0, 1] for the class indices ``labels`` (drawn with ``generator``)."""
    labels = torch.as_tensor(labels, dtype=torch.long)
    if labels.dim() != 1:
        raise ValueError(f"labels must be a 1-D tensor of class indices, got shape {tuple(labels.shape)}")
    if labels.numel() and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise ValueError(f"labels must lie in [0, {len(CLASSES) - 1}], got {labels.min().item()}..{labels.max().item()}")
    if not isinstance(size, int) or size < 4:
        raise ValueError(f"size must be an int >= 4, got {size!r}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    s = size * SUPERSAMPLE
    grid = (torch.arange(s, dtype=torch.float32) + 0.5) / s * 2 - 1  # pixel centres in [-1, 1]
    out = torch.empty(labels.numel(), 3, size, size)
    for cls in range(len(CLASSES)):
        idx = (labels == cls).nonzero().flatten()
        n = idx.numel()
        if n == 0:
            continue
        name = CLASSES[cls]
        texture = name in ("stripes", "checkerboard")
        scale = _uniform(n, 0.45, 0.85, gen) if not texture else torch.ones(n, 1, 1)
        cx, cy = (_uniform(n, -0.25, 0.25, gen) for _ in range(2))
        if texture:
            cx, cy = torch.zeros(n, 1, 1), torch.zeros(n, 1, 1)
        rot = _uniform(n, 0.0, 2 * math.pi, gen)
        width = _uniform(n, 0.16, 0.32, gen) / scale  # 1.3 - 2.6 output pixels at size 16
        gy, gx = grid.view(1, s, 1), grid.view(1, 1, s)
        dx, dy = gx - cx, gy - cy
        cos, sin = torch.cos(rot), torch.sin(rot)
        x = (cos * dx + sin * dy) / scale
        y = (-sin * dx + cos * dy) / scale
        mask = _shape_mask(name, x, y, width, gen).float()
        alpha = F.avg_pool2d(mask.unsqueeze(1), SUPERSAMPLE)  # (n, 1, size, size)
        fg = torch.rand(n, 3, 1, 1, generator=gen)
        bg = torch.rand(n, 3, 1, 1, generator=gen)
        # enforce contrast: push the background away from the foreground's brightness
        flip = (fg.mean(1, keepdim=True) - bg.mean(1, keepdim=True)).abs() < 0.3
        bg = torch.where(flip, 1 - fg, bg)
        noise = torch.randn(n, 3, size, size, generator=gen) * _uniform(n, 0.0, 0.08, gen).unsqueeze(1)
        out[idx] = (bg * (1 - alpha) + fg * alpha + noise).clamp(0.0, 1.0)
    return out


def sample(n: int, size: int = 16, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images with labels drawn uniformly from the 24 classes."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    labels = torch.randint(len(CLASSES), (n,), generator=gen)
    return render(labels, size, gen), labels


def synthetic_batch(seed: int, step: int, batch: int, size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch ``step`` of the endless pre-training stream ``seed``: a pure function of (seed, step, batch, size)."""
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(step))
    return sample(batch, size, gen)
