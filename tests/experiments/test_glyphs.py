"""The generated glyph source (nora.experiments.data.glyphs)."""

import pytest
import torch

pytest.importorskip("HersheyFonts")

from nora.experiments.data import glyphs  # noqa: E402
from nora.experiments.data.glyphs import GlyphConfig, GlyphSource, class_table, glyph_batch, heldout_set  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------- the class table


def test_default_source_has_127_classes_and_no_digit_glyph():
    table = class_table(glyphs.DEFAULT_GROUPS)
    counts = {g: sum(1 for _, group, _ in table if group == g) for g in glyphs.DEFAULT_GROUPS}
    assert counts == {"latin": 42, "greek": 25, "cyrillic": 11, "symbols": 19, "math": 20, "markers": 10}
    assert len(table) == 127
    names = [name for name, _, _ in table]
    assert len(set(names)) == len(names)
    assert not any(ch.isdigit() for name in names for ch in name)
    # no instance is a digit glyph: the digit keys are used only by the optional digits group
    assert not any(key in "0123456789" for _, _, inst in table for _, key in inst)
    # every glyph instance belongs to one class only
    pairs = [p for _, _, inst in table for p in inst]
    assert len(set(pairs)) == len(pairs)


def test_look_alike_cases_are_merged_and_digits_are_opt_in():
    names = {name for name, _, _ in class_table(glyphs.DEFAULT_GROUPS)}
    assert {"C/c", "O/o", "S/s", "I/l", "a", "A"} <= names and not {"c", "o", "l"} & names
    source = GlyphSource(GlyphConfig(digits=True))
    assert source.num_classes == 137 and source.classes[-10:] == tuple("0123456789")
    no_latin = GlyphSource(GlyphConfig(groups=("greek", "cyrillic", "symbols", "math", "markers")))
    assert no_latin.num_classes == 85 and "latin" not in no_latin.class_groups
    with pytest.raises(ValueError, match="digits=True"):
        GlyphConfig(groups=("latin", "digits"))
    with pytest.raises(ValueError, match="groups"):
        GlyphConfig(groups=("latin", "klingon"))


# ------------------------------------------------------------------------------- rendering


def test_batches_are_deterministic_images_in_range_with_ink():
    cfg = GlyphConfig()
    x, y = glyph_batch(cfg, seed=3, step=7, batch=48)
    x2, y2 = glyph_batch(cfg, seed=3, step=7, batch=48)
    x3, _ = glyph_batch(cfg, seed=3, step=8, batch=48)
    assert torch.equal(x, x2) and torch.equal(y, y2) and not torch.equal(x, x3)
    assert x.shape == (48, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.long
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])  # grey, like the digits
    # light ink on a dark background: every image's brightest pixels stand well above its darkest
    flat = x[:, 0].flatten(1)
    assert bool(((flat.max(1).values - flat.quantile(0.1, dim=1)) > 0.25).all())
    assert 0 <= int(y.min()) and int(y.max()) < 127


def test_render_draws_each_class_and_rejects_bad_labels():
    source = GlyphSource()
    gen = torch.Generator().manual_seed(0)
    images = source.render(torch.arange(source.num_classes), gen)
    assert images.shape == (127, 3, 16, 16)
    assert bool((images[:, 0].flatten(1).std(1) > 0.05).all())  # no blank class
    with pytest.raises(ValueError, match="labels"):
        source.render(torch.tensor([127]), gen)
    with pytest.raises(ValueError, match="canvas"):
        GlyphConfig(canvas=60)


def test_heldout_sets_are_prefixes_of_each_other_and_differ_from_training():
    cfg = GlyphConfig()
    small = heldout_set(cfg, glyphs.HELDOUT_CHUNK, seed=0)
    large = heldout_set(cfg, glyphs.HELDOUT_CHUNK + 40, seed=0)
    assert torch.equal(small[0], large[0][: glyphs.HELDOUT_CHUNK]) and len(large[1]) == glyphs.HELDOUT_CHUNK + 40
    train = glyph_batch(cfg, seed=0, step=0, batch=64)[0]
    assert not torch.equal(train, small[0][:64])


def test_rendering_is_much_faster_than_training():
    rate = glyphs.render_speed(batch=128, batches=2)
    assert rate > 500  # images per CPU-second on one thread (about 3,000 measured; a ViT-Tiny step takes ~100)
