"""Random translation of a batch by up to ``max_shift`` pixels: the augmentation chapter 04's runs and ceilings share.

One offset (dx, dy), each uniform in {-max_shift, ..., +max_shift}, for the whole batch, the
vacated border filled with the batch's background (each channel's minimum, the ink-free level of
the normalised digit images): the +-1 px shifts the small-CNN ceiling has always trained with
(``nora.experiments.ceilings``), so that full fine-tuning and its ceiling see the same data.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["random_shift"]


def random_shift(images: torch.Tensor, max_shift: int, generator: torch.Generator,
                 background: float | None = None) -> torch.Tensor:
    """``images`` (N, C, H, W) moved by one random offset of at most ``max_shift`` px in x and y; 0 returns them as is.

    ``background`` fills the border (default: each channel's minimum over the batch). The offsets are drawn
    from ``generator``.
    """
    if not isinstance(max_shift, int) or isinstance(max_shift, bool) or max_shift < 0:
        raise ValueError(f"max_shift must be an int >= 0, got {max_shift!r}")
    if max_shift == 0:
        return images
    if images.dim() != 4:
        raise ValueError(f"images must be a (N, C, H, W) batch, got shape {tuple(images.shape)}")
    n, c, h, w = images.shape
    s = max_shift
    if background is None:
        fill = images.amin(dim=(0, 2, 3), keepdim=True).expand(n, c, h + 2 * s, w + 2 * s)
        padded = fill.clone()
        padded[:, :, s:s + h, s:s + w] = images
    else:
        padded = nn.functional.pad(images, (s,) * 4, value=float(background))
    dx, dy = torch.randint(0, 2 * max_shift + 1, (2,), generator=generator).tolist()
    return padded[:, :, dy:dy + h, dx:dx + w]
