"""Chapter 10 (LoRAN): generated dialogues + ROUGE, batched generation, the QLoRA / LoRAN LLM path
(book scale and the paper's loaders on tiny local fakes, no network), and the LoRAN update probe."""

from __future__ import annotations

import json
import math

import nora  # noqa: F401  (first: torchvision next to CPU torch)
import pytest
import torch
from torch import nn

from nora.adapters.loran import LoRANConfig, LoRANLinear, apply_loran
from nora.adapters.loran_probe import swapped_activation, update_statistics
from nora.experiments.llm import corpus
from nora.experiments import loran as lx
from nora.experiments.llm.summarize import SPEAKERS, canonical, dialogue_records, generate_batch, rouge_scores
from nora.experiments.llm.tokenizer import train_tokenizer

bnb = pytest.importorskip("bitsandbytes")


@pytest.fixture(scope="module")
def world():
    return corpus.make_world(seed=3, practice=6, exam=4, max_operand=6)


@pytest.fixture(scope="module")
def tokenizer(world):
    docs = corpus.pretraining_documents(world, 300, seed=0)
    sets = {s: corpus.instruction_set(world, s, 20) for s in corpus.INSTRUCTION_STYLES}
    dialogues = [r["input"] + "\n" + r["output"] for r in dialogue_records(world, 40)]
    texts = list(corpus.iter_text(world, docs, sets)) + dialogues + ["Summarize the dialogue.\nSummary: Newsgroup:"]
    return train_tokenizer(texts, vocab_size=400)


def tiny_llama(vocab: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=1024, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


RUN_CFG = dict(rank=4, alpha=1.0, dropout=0.2, steps=2, batch_size=4, learning_rate=1e-2, warmup_ratio=0.0, cutoff=200,
               max_new_tokens=6, eval_batch_size=3, device="cpu")


# ------------------------------------------------------------------------------------ the generated task


def test_dialogues_are_seeded_split_by_entity_and_their_summaries_copy_the_dialogue(world):
    train = dialogue_records(world, 60, "practice", seed=0)
    assert train == dialogue_records(world, 60, "practice", seed=0)
    assert train != dialogue_records(world, 60, "practice", seed=1)
    test = dialogue_records(world, 30, "exam", seed=0)
    practice = {f.entity for f in world.practice()}
    exam = {f.entity for f in world.exam()}
    for records, own, other in ((train, practice, exam), (test, exam, practice)):
        for r in records:
            speakers = {line.split(":")[0] for line in r["input"].split("\n")}
            assert speakers <= set(SPEAKERS) and len(speakers) == 2
            assert r["output"].split(" answers that ")[0] in speakers
            named = [e for e in own | other if e in r["output"]]
            assert named and all(e in own and e in r["input"] for e in named)  # names come from the dialogue
    assert any(" and that " in r["output"] for r in train) and any(" and that " not in r["output"] for r in train)


def test_canonical_wording_is_the_first_template_and_values_are_kept(world):
    fact = next(f for f in world.practice() if f.relation.subject == "astronomy")
    assert canonical(fact) == f"the planet {fact.entity} orbits the star {fact.value}"
    fact = next(f for f in world.practice() if f.relation.subject == "high_school_geography")
    assert canonical(fact) == f"{fact.entity} is a city in {fact.value}"


@pytest.mark.parametrize("kwargs, field", [(dict(split="dev"), "split"), (dict(n=0), "n"), (dict(two_facts=1.5), "two_facts"),
                                           (dict(greeting=-0.1), "greeting")])
def test_dialogue_records_reject_bad_arguments(world, kwargs, field):
    args = dict(n=3, split="practice")
    args.update(kwargs)
    with pytest.raises(ValueError, match=field):
        dialogue_records(world, **args)


def test_rouge_is_googles_rouge_score_f_measure_times_100():
    same = rouge_scores(["the cat sat on the mat"], ["the cat sat on the mat"])
    assert same.means == pytest.approx({"rouge1": 100.0, "rouge2": 100.0, "rougeL": 100.0})
    half = rouge_scores(["the cat sat"], ["the cat sat on the mat"])  # P = 1, R = 1/2
    assert half["rouge1"] == pytest.approx(100 * 2 * 0.5 / 1.5)
    assert half["rouge2"] == pytest.approx(100 * 2 * (2 / 2) * (2 / 5) / (1 + 2 / 5))
    none = rouge_scores(["dogs bark"], ["the cat sat"])
    assert none.means == pytest.approx({"rouge1": 0.0, "rouge2": 0.0, "rougeL": 0.0})
    both = rouge_scores(["the cat sat on the mat", "dogs bark"], ["the cat sat on the mat", "the cat sat"])
    assert both.per_example["rouge1"] == pytest.approx([100.0, 0.0]) and both["rouge1"] == pytest.approx(50.0)
    assert rouge_scores(["Cats running."], ["cat runs"], use_stemmer=True)["rouge1"] > 0  # Porter stemming
    with pytest.raises(ValueError, match="equally long"):
        rouge_scores(["a"], ["a", "b"])
    with pytest.raises(ValueError, match="predictions\\[0\\]"):
        rouge_scores([None], ["a"])
    with pytest.raises(ValueError, match="not one string"):
        rouge_scores("a", "a")


def test_batched_left_padded_generation_equals_one_by_one(world, tokenizer):
    model = tiny_llama(len(tokenizer))
    records = dialogue_records(world, 5, "exam")
    prompts = [lx.SUMMARY.prompt(r["input"]) for r in records]
    assert len({len(tokenizer.encode(p)) for p in prompts}) > 1  # different lengths: padding is exercised
    batched = generate_batch(model, tokenizer, prompts, max_new_tokens=7, batch_size=5)
    single = [generate_batch(model, tokenizer, [p], max_new_tokens=7)[0] for p in prompts]
    assert batched == single
    ids = [tokenizer.encode(p) for p in prompts]
    assert generate_batch(model, tokenizer, ids, max_new_tokens=7, batch_size=2) == batched
    with pytest.raises(ValueError, match="prompts"):
        generate_batch(model, tokenizer, "one string")
    with pytest.raises(ValueError, match="max_new_tokens"):
        generate_batch(model, tokenizer, prompts, max_new_tokens=0)


# ------------------------------------------------------------------------------------ encoding


def test_encoding_masks_the_prompt_and_learns_the_target_then_eos(tokenizer):
    record = {"input": "Mira: What do you know about Lev?\nLev: Nothing.", "output": "Lev answers nothing."}
    enc = lx.encode(record, tokenizer, lx.SUMMARY, cutoff=512)
    prompt = tokenizer.encode(lx.SUMMARY.prompt(record["input"]))
    target = tokenizer.encode(" " + record["output"], add_special_tokens=False) + [tokenizer.eos_token_id]
    assert enc["input_ids"] == prompt + target
    assert enc["labels"] == [-100] * len(prompt) + target
    assert tokenizer.decode(enc["input_ids"]).endswith("Summary: Lev answers nothing.<|eos|>")


def test_a_long_input_is_cut_inside_the_text_keeping_format_and_target(tokenizer):
    record = {"input": " ".join(["The planet Zorb orbits the star Quux."] * 80), "output": "comp.graphics"}
    enc = lx.encode(record, tokenizer, lx.NEWSGROUPS, cutoff=64)
    assert len(enc["input_ids"]) <= 64
    n_target = sum(label != -100 for label in enc["labels"])
    assert tokenizer.decode(enc["input_ids"][-n_target:]) == " comp.graphics<|eos|>"
    prompt_text = tokenizer.decode(enc["input_ids"][:-n_target])
    assert prompt_text.startswith(lx.NEWSGROUPS.instruction + "\n") and prompt_text.endswith("\nNewsgroup:")
    with pytest.raises(ValueError, match="cutoff"):
        lx.encode(record, tokenizer, lx.NEWSGROUPS, cutoff=4)
    with pytest.raises(ValueError, match="output"):
        lx.encode({"input": "x", "output": " "}, tokenizer, lx.SUMMARY)
    with pytest.raises(ValueError, match="input"):
        lx.encode({"output": "x"}, tokenizer, lx.SUMMARY)


def test_accuracy_compares_the_first_generated_line_normalised():
    assert lx.accuracy(["Comp.Graphics\nmore text", "sci.space ", "rec.autos"], ["comp.graphics", "sci.space", "sci.med"]) \
        == pytest.approx(200 / 3)
    with pytest.raises(ValueError, match="equally long"):
        lx.accuracy(["a"], [])


# ------------------------------------------------------------------------------------ methods


def test_method_names_parse_and_bad_ones_raise():
    assert lx.method_spec("qlora") == {"kind": "lora", "activation": None, "quantize": True}
    assert lx.method_spec("lora") == {"kind": "lora", "activation": None, "quantize": False}
    assert lx.method_spec("loran-sinter") == {"kind": "loran", "activation": "sinter", "quantize": True}
    assert lx.method_spec("loran-tanh-float") == {"kind": "loran", "activation": "tanh", "quantize": False}
    for bad in ("loran", "loran-swish", "dora", None):
        with pytest.raises(ValueError, match="method"):
            lx.method_spec(bad)


def test_qlora_and_loran_sit_on_the_same_nf4_base_with_equal_counts_and_start_at_it(tokenizer):
    base = tiny_llama(len(tokenizer))
    tokens = torch.randint(0, len(tokenizer), (2, 10), generator=torch.Generator().manual_seed(0))
    quantized = lx.quantize_llama_4bit(tiny_llama(len(tokenizer)))
    assert sum(isinstance(m, bnb.nn.Linear4bit) for m in quantized.modules()) == 2 * 7
    assert type(quantized.lm_head) is nn.Linear  # the tied output layer stays float
    with torch.no_grad():
        reference = quantized(tokens).logits
    counts = {}
    for method in ("qlora", "loran-sinter", "loran-relu", "loran-sigmoid", "loran-tanh"):
        model = lx.adapt(base, method, seed=0, rank=4, alpha=1.0, dropout=0.0)
        assert sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()) == 2 * 7
        counts[method] = nora.count_parameters(model).trainable
        with torch.no_grad():
            assert torch.allclose(model(tokens).logits, reference, atol=1e-6)  # B = 0: exactly the 4-bit base
    assert len(set(counts.values())) == 1 and counts["qlora"] == 2 * 4 * ((64 + 64) + (64 + 32))
    assert all(isinstance(m, nn.Linear) and not isinstance(m, bnb.nn.Linear4bit) for m in base.modules()
               if isinstance(m, nn.Linear))  # the base was copied, not changed
    float_loran = lx.adapt(base, "loran-tanh-float", seed=0, rank=4, alpha=1.0)
    assert not any(isinstance(m, bnb.nn.Linear4bit) for m in float_loran.modules())
    layers = [m for m in float_loran.modules() if isinstance(m, LoRANLinear)]
    assert len(layers) == 4 and all(m.activation == "tanh" for m in layers)


def test_adapt_rejects_a_float_method_on_a_4bit_base_and_bad_options(tokenizer):
    quantized = lx.quantize_llama_4bit(tiny_llama(len(tokenizer)))
    with pytest.raises(ValueError, match="float base"):
        lx.adapt(quantized, "lora", seed=0, rank=4)
    with pytest.raises(ValueError, match="LoRAN option"):
        lx.adapt(quantized, "loran-sinter", seed=0, rank=4, omega=3.0)
    with pytest.raises(ValueError, match="no LoRAN options"):
        lx.adapt(quantized, "qlora", seed=0, rank=4, sinter_amplitude=0.1)
    with pytest.raises(ValueError, match="rank"):
        lx.adapt(quantized, "qlora", seed=0, rank=0)
    with pytest.raises(ValueError, match="float linear layer"):
        lx.quantize_llama_4bit(quantized)
    with pytest.raises(ValueError, match="LLaMA"):
        lx.quantize_llama_4bit(nn.Linear(4, 4))


def test_book_run_end_to_end_trains_generates_and_scores(world, tokenizer):
    base = tiny_llama(len(tokenizer))
    train = dialogue_records(world, 8, "practice")
    test = dialogue_records(world, 3, "exam")
    import copy

    out = lx.run(lambda: copy.deepcopy(base), tokenizer, "loran-sinter", 0, train, test, lx.SUMMARY, "summarization", RUN_CFG,
                 sinter_amplitude=0.5, sinter_frequency=100.0)
    assert set(out) >= {"rouge1", "rouge2", "rougeL", "trainable", "final_loss", "predictions", "model"}
    assert len(out["predictions"]) == 3 and all(0 <= out[k] <= 100 for k in ("rouge1", "rouge2", "rougeL"))
    layers = [m for m in out["model"].modules() if isinstance(m, LoRANLinear)]
    assert layers and all(m.lora_B.abs().sum() > 0 for m in layers)  # trained
    assert all(m.act.amplitude == 0.5 and m.act.frequency == 100.0 for m in layers)
    out_q = lx.run(lambda: copy.deepcopy(base), tokenizer, "qlora", 0, train, test, lx.SUMMARY, "summarization", RUN_CFG)
    assert out_q["trainable"] == out["trainable"]


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_paper_datasets_load_from_local_files_in_their_hub_layout(tmp_path):
    samsum = _write_jsonl(tmp_path / "samsum.jsonl", [
        {"id": "1", "dialogue": "Amanda: I baked cookies.\nJerry: Sure!", "summary": "Amanda baked cookies."},
        {"id": "2", "dialogue": "  ", "summary": "empty dialogue, skipped"},
        {"id": "3", "dialogue": "Tom: Late again.\nAnna: Ok.", "summary": "Tom is late."}])
    rows = lx.load_task("samsum", "test", data_files=samsum)
    assert rows == [{"input": "Amanda: I baked cookies.\nJerry: Sure!", "output": "Amanda baked cookies."},
                    {"input": "Tom: Late again.\nAnna: Ok.", "output": "Tom is late."}]
    assert len(lx.load_task("samsum", "train", max_samples=1, data_files=samsum)) == 1
    news = _write_jsonl(tmp_path / "news.jsonl", [{"text": f"post {i}", "label": i % 2, "label_text": ["sci.space", "rec.autos"][i % 2]}
                                                  for i in range(5)])
    rows = lx.load_task("newsgroups", "train", data_files=news, seed=0)
    assert len(rows) == 5 and {r["output"] for r in rows} == {"sci.space", "rec.autos"}
    with pytest.raises(ValueError, match="no field"):
        lx.load_task("newsgroups", "train", data_files=samsum)
    with pytest.raises(ValueError, match="name"):
        lx.load_task("cnn", "train", data_files=samsum)
    with pytest.raises(ValueError, match="split"):
        lx.load_task("samsum", "validation", data_files=samsum)
    with pytest.raises(ValueError, match="max_samples"):
        lx.load_task("samsum", "train", max_samples=0, data_files=samsum)


def test_paper_classification_run_on_fake_newsgroups(tokenizer, tmp_path):
    import copy

    news = _write_jsonl(tmp_path / "news.jsonl", [{"text": f"The planet Zorb{i} orbits a star.", "label": i % 2,
                                                   "label_text": ["sci.space", "rec.autos"][i % 2]} for i in range(6)])
    records = lx.load_task("newsgroups", "train", data_files=news)
    base = tiny_llama(len(tokenizer))
    out = lx.run(lambda: copy.deepcopy(base), tokenizer, "loran-relu", 1, records, records[:3], lx.NEWSGROUPS, "classification", RUN_CFG)
    assert 0 <= out["accuracy"] <= 100 and len(out["predictions"]) == 3


def test_paper_base_is_llama2_7b_in_nf4_with_double_quant_and_bf16_compute(monkeypatch, tokenizer):
    config = lx.paper_quantization_config()
    assert config.load_in_4bit and config.bnb_4bit_quant_type == "nf4" and config.bnb_4bit_use_double_quant
    assert config.bnb_4bit_compute_dtype == torch.bfloat16
    import transformers

    seen = {}

    def fake_from_pretrained(model_id, **kwargs):
        seen.update(model_id=model_id, **kwargs)
        return tiny_llama(len(tokenizer))

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", fake_from_pretrained)
    model = lx.load_paper_base(gradient_checkpointing=False)
    assert seen["model_id"] == "meta-llama/Llama-2-7b-hf" and seen["quantization_config"].bnb_4bit_quant_type == "nf4"
    assert seen["dtype"] == torch.bfloat16
    assert isinstance(model, transformers.LlamaForCausalLM)


# ------------------------------------------------------------------------------------ the update probe


def _loran_mlp(activation, **constants):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 24), nn.Tanh(), nn.Linear(24, 8))
    apply_loran(model, LoRANConfig(rank=3, alpha=6.0, targets=("0", "2"), activation=activation, **constants))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, LoRANLinear):
                m.lora_B.copy_(torch.randn(m.lora_B.shape, generator=g) * 0.05)
    return model


def test_update_statistics_measure_sinter_on_the_trained_factors():
    model = _loran_mlp("sinter")
    rows = update_statistics(model)
    assert [r["layer"] for r in rows] == ["0", "2"]
    for r, layer in zip(rows, [model[0], model[2]]):
        z = (layer.lora_B @ layer.lora_A).detach().double()
        assert r["max_abs_z"] == pytest.approx(float(z.abs().max()))
        assert 0 < r["relative_change"] <= 5e-5  # |Sinter(z) - z| <= A |z|
        assert r["max_slope_deviation"] <= 5e-5 + 0.5 * r["max_abs_z"] + 1e-12
        assert r["effective_rank"] == 3  # Sinter at the released constants keeps rank r to 1e-3
        w = layer.base_layer.weight.double()
        assert r["relative_update"] == pytest.approx(float((layer.delta_weight(torch.float64)).norm() / w.norm()))
    strong = update_statistics(_loran_mlp("sine", sine_frequency=300.0))
    assert all(r["effective_rank"] > 3 for r in strong)  # a high-frequency sine raises the rank of BA
    with pytest.raises(ValueError, match="no LoRAN layer"):
        update_statistics(nn.Linear(2, 2))
    with pytest.raises(ValueError, match="rank_tol"):
        update_statistics(model, rank_tol=0)


def test_swapped_activation_evaluates_the_same_factors_as_plain_lora_and_restores():
    model = _loran_mlp("tanh")
    x = torch.randn(5, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        before = model(x)
        with swapped_activation(model, "identity"):
            swapped = model(x)
        after = model(x)
        layer = model[0]
        lora = layer.base_layer(x) + x @ (layer.lora_B @ layer.lora_A).T * layer.scale
        plain = model[2].base_layer(torch.tanh(lora)) + torch.tanh(lora) @ (model[2].lora_B @ model[2].lora_A).T * model[2].scale
    assert torch.allclose(swapped, plain, atol=1e-6)
    assert not torch.allclose(before, swapped) and torch.equal(before, after)
    assert model[0].activation == "tanh"
    with pytest.raises(ValueError, match="activation"):
        with swapped_activation(model, "gelu"):
            pass
    with pytest.raises(ValueError, match="constant"):
        with swapped_activation(model, "sinter", omega=1.0):
            pass
    with pytest.raises(RuntimeError):  # restored even when the block raises
        with swapped_activation(model, "relu"):
            raise RuntimeError
    assert model[0].activation == "tanh" and model[0].act.name == "tanh"


# ------------------------------------------------------------------------------------ profiles


def test_chapter_profiles_scale_up_and_name_the_paper_setting():
    from nora.experiments.profiles import settings

    smoke, book, paper = (settings("10_loran", p) for p in ("smoke", "book", "paper"))
    for role in ("easy", "hard"):  # per task role: the 200-image easy task needs its own epoch count
        assert smoke["epochs"][role] <= book["epochs"][role] <= paper["epochs"][role]
    # the book tasks (easy first: mnist10-20shot, 200 training images; mnist20, 1,200) get about 200 optimiser
    # steps each, so that the sweep on the easy task is not a sixth of the runs on the hard one
    from nora.experiments.data import downstream_tasks

    easy, hard = downstream_tasks("book").values()
    assert (book["sweep_task"], book["class_task"], book["h2h_task"]) == (easy.name, hard.name, hard.name)
    book_steps = {role: book["epochs"][role] * math.ceil(len(task.train) / book["batch_size"])
                  for role, task in (("easy", easy), ("hard", hard))}
    assert all(200 <= n <= 260 for n in book_steps.values()), book_steps
    assert smoke["llm"]["steps"] <= book["llm"]["steps"]
    assert paper["llm"]["tasks"] == ("samsum", "newsgroups")
    assert (paper["llm"]["rank"], paper["llm"]["alpha"], paper["llm"]["dropout"]) == (64, 16.0, 0.2)
    assert book["llm"]["alpha"] / book["llm"]["rank"] == pytest.approx(16 / 64)  # the paper's alpha / rank
    for cfg in (smoke, book, paper):
        assert set(cfg["llm"]["max_new_tokens"]) == set(cfg["llm"]["tasks"])
        assert all(a > 0 and w > 0 for a, w in cfg["sinter_sweep"]) and not math.isnan(cfg["lr_grid"][0])


def test_vision_methods_are_picklable_and_take_constants_only_for_loran():
    import pickle

    method, over, prepare = lx.vision_method("loran-sinter", rank=8, alpha=16.0, sinter_amplitude=0.5)
    assert (method, over["targets"], over["activation"], over["sinter_amplitude"]) == ("loran", lx.VISION_QV, "sinter", 0.5)
    assert pickle.loads(pickle.dumps(prepare)).keywords["config"].quantize_4bit  # goes to worker processes
    assert lx.vision_method("qlora", rank=8, alpha=16.0)[1]["gradient_checkpointing"] is False
    assert lx.vision_method("loran-all", rank=8, alpha=16.0)[1]["targets"] == lx.VISION_ALL_LINEARS
    with pytest.raises(ValueError, match="takes no constants"):
        lx.vision_method("qlora", rank=8, alpha=16.0, sinter_amplitude=0.5)
    with pytest.raises(ValueError, match="unknown"):
        lx.vision_method("dora", rank=8, alpha=16.0)


def test_vision_run_measures_the_trained_loran_factors_and_the_identity_swap(monkeypatch):
    from nora.experiments import backbone
    from nora.experiments.data.digits import digits10
    from nora.experiments.train import TrainConfig

    real = backbone.pretrained_vit  # the smoke architecture with random weights: no pre-training in tests
    monkeypatch.setattr(backbone, "pretrained_vit", lambda profile, num_classes=None, seed=0, weights=True:
                        real("smoke", num_classes, seed=seed, weights=False))
    task = digits10().subset(train_per_class=2, test_per_class=2)
    row = lx.vision_run(part="sweep", name="loran-sinter", task=task, config=TrainConfig(epochs=1, batch_size=8, lr=1e-2),
                        profile="smoke", seed=0, rank=4, alpha=8.0, constants={"sinter_amplitude": 0.5})
    assert (row["part"], row["method"], row["seed"], row["lr"], row["sinter_amplitude"]) == ("sweep", "loran-sinter", 0, 1e-2, 0.5)
    assert row["steps"] == 3 and 0 <= row["accuracy"] <= 100 and 0 <= row["accuracy_identity_swap"] <= 100
    assert 0 < row["relative_change"] <= 0.5 + 1e-9  # |Sinter(z) - z| <= A |z|
    assert all(isinstance(row[k], float) for k in ("max_abs_z", "rms_z", "max_slope_deviation", "effective_rank"))
    plain = lx.vision_run(part="classification", name="lora", task=task, config=TrainConfig(epochs=1, batch_size=8, lr=1e-2),
                          profile="smoke", seed=0, rank=4, alpha=8.0)
    assert "max_abs_z" not in plain and "accuracy_identity_swap" not in plain
