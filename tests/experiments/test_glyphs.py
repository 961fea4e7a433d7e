"""The generated glyph source (nora.experiments.data.glyphs) and the sharded ``glyphs`` backbone (nora.experiments.glyph_backbone)."""

import dataclasses
import json
import shutil
import time
from pathlib import Path

import pytest
import torch

pytest.importorskip("HersheyFonts")

from nora.experiments import backbone, glyph_backbone  # noqa: E402
from nora.experiments.data import glyphs  # noqa: E402
from nora.experiments.data.glyphs import GlyphConfig, GlyphSource, class_table, glyph_batch, heldout_set  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------------------- the class table


def test_default_source_has_127_classes_and_no_digit_glyph():
    table = class_table(glyphs.DEFAULT_GROUPS)
    counts = {g: sum(1 for _, group, _ in table if group == g) for g in glyphs.DEFAULT_GROUPS}
    assert counts == {"latin": 42, "greek": 25, "cyrillic": 11, "symbols": 19, "math": 20, "markers": 10}
    assert len(table) == 127 == backbone.SPECS["glyphs"].source_classes
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


# ------------------------------------------------------------------------------- the backbone

TINY = glyph_backbone.GlyphPretrainConfig(steps=4, batch_size=8, warmup_steps=1, test_images=32, eval_every=2,
                                          max_shard_bytes=300_000)


def tiny_spec():
    return dataclasses.replace(backbone.SPECS["glyphs"], profile="glyphs-tiny", depth=1, pretrain=TINY)


def test_pretrain_writes_sharded_fp16_checkpoint_with_provenance_and_loads_it(tmp_path: Path):
    spec = tiny_spec()
    prov = glyph_backbone.pretrain(spec, tmp_path, progress=False)
    index = json.loads((tmp_path / glyph_backbone.INDEX_NAME).read_text())
    shards = sorted(set(index["weight_map"].values()))
    assert len(shards) >= 2 and shards[0] == f"model-00001-of-{len(shards):05d}.safetensors"
    assert all((tmp_path / s).stat().st_size <= 300_000 for s in shards)
    assert index["metadata"]["total_size"] == 2 * prov["parameters"]  # float16
    assert set(prov["files"]) == set(shards) | {glyph_backbone.INDEX_NAME}
    assert prov["spec"]["pretrain"]["seed"] == 0 and prov["spec"]["pretrain"]["steps"] == 4
    assert prov["images_seen"] == 32 and prov["cpu_seconds"] > 0 and len(prov["curve"]) == 2
    assert 0 <= prov["source_test_accuracy"] <= 100
    state = glyph_backbone.load_state(spec, tmp_path)
    model = glyph_backbone._create(spec, spec.source_classes, seed=1)
    model.load_state_dict(state)
    assert state["head.weight"].dtype == torch.float32 and state["head.weight"].shape == (127, 192)
    # a changed spec, a corrupted shard: refused
    with pytest.raises(ValueError, match="different backbone spec"):
        glyph_backbone.load_state(dataclasses.replace(spec, depth=2), tmp_path)
    bad = tmp_path / "bad"
    shutil.copytree(tmp_path, bad, ignore=shutil.ignore_patterns("bad"))
    raw = bytearray((bad / shards[-1]).read_bytes())
    raw[-1] ^= 0xFF
    (bad / shards[-1]).write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="SHA-256"):
        glyph_backbone.load_state(spec, bad)


def test_shipped_glyphs_checkpoint_checks_out_on_a_held_out_prefix():
    """The packaged checkpoint: shards <= 10 MB, SHA-256 checked on load, held-out accuracy as recorded (< 10 s)."""
    t0 = time.perf_counter()
    spec = backbone.SPECS["glyphs"]
    folder = glyph_backbone.checkpoint_dir(spec)
    assert folder == glyph_backbone.SHIPPED_DIR / "vit-glyphs", "the glyphs checkpoint must ship with the package"
    prov = glyph_backbone.read_provenance(folder)
    assert prov["spec"]["depth"] == 12 and prov["threads"] == 1
    for name, digest in prov["files"].items():
        assert (folder / name).stat().st_size <= 10_000_000
        assert glyph_backbone._sha256(folder / name) == digest
    assert glyph_backbone.RECORDED["glyphs"] == prov["files"]
    model = backbone.pretrained_vit("glyphs")  # checks every SHA-256 and the spec
    assert len(model.blocks) == 12 and model.embed_dim == 192 and model.head.out_features == 127
    n = glyphs.HELDOUT_CHUNK
    x, y = heldout_set(spec.pretrain.source, n, spec.pretrain.seed)
    acc = glyph_backbone.source_accuracy(model, x, y)
    assert acc == pytest.approx(prov[f"source_test_accuracy_first_{n}"], abs=1.0)
    assert acc > 60  # chance is 0.8 %
    assert time.perf_counter() - t0 < 10


def test_pretrained_vit_gives_the_glyphs_backbone_a_fresh_head_and_the_cli_knows_it(capsys):
    model = backbone.pretrained_vit("glyphs", num_classes=20, seed=2)
    assert model.head.out_features == 20
    assert backbone.create_vit("glyphs", 10).patch_embed.proj.kernel_size == (4, 4)
    assert backbone.main(["info", "--spec", "glyphs"]) == 0
    out = capsys.readouterr().out
    assert "vit-glyphs" in out and "source_test_accuracy" in out


# ------------------------------------------------------------------------------- harder easy-task candidates


def test_few_shot_digit_tasks_keep_the_rest_for_test_and_mnist10_avoids_mnist20s_images():
    import numpy as np

    from nora.experiments.data.digits import digits10_few, mnist10_few, mnist20
    from nora.experiments.data.tasks import dataset_labels

    few = digits10_few(per_class=20)
    assert (few.name, len(few.train), len(few.test)) == ("digits10-20shot", 200, 1597)
    assert np.bincount(dataset_labels(few.train)).tolist() == [20] * 10
    m10 = mnist10_few(per_class=20)
    assert (m10.name, len(m10.train), len(m10.test)) == ("mnist10-20shot", 200, 2600)
    hard = mnist20()
    theirs = torch.cat([hard.train.tensors[0], hard.test.tensors[0]]).flatten(1)
    ours = torch.cat([m10.train.tensors[0], m10.test.tensors[0]]).flatten(1)
    assert float(torch.cdist(ours, theirs).min()) > 0.5  # no image of mnist20 is reused
    with pytest.raises(ValueError, match="per_class"):
        mnist10_few(per_class=0)
    with pytest.raises(ValueError, match="per_class"):
        digits10_few(per_class=171)
