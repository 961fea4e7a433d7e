"""nora.experiments.llm: Alpaca prompts and masking, the 5-shot MMLU scorer (against lm-eval), the generated world, LoRA / NoRA++ SFT."""

from __future__ import annotations

import json
import random
from pathlib import Path

import nora  # noqa: F401  (first: torchvision next to CPU torch)
import pytest
import torch

from nora.experiments.llm import corpus, instruct, mmlu
from nora.experiments.llm.corpus import Benchmark, Question
from nora.experiments.llm.tokenizer import train_tokenizer

ALPACA_INPUT = (
    "Below is an instruction that describes a task, paired with an input that provides further context. "
    "Write a response that appropriately completes the request.\n\n"
    "### Instruction:\nSort the words.\n\n### Input:\npear apple\n\n### Response:"
)
ALPACA_NO_INPUT = (
    "Below is an instruction that describes a task. Write a response that appropriately completes the request.\n\n"
    "### Instruction:\nSay hi.\n\n### Response:"
)


@pytest.fixture(scope="module")
def world():
    return corpus.make_world(seed=3, practice=6, exam=4, max_operand=6)


@pytest.fixture(scope="module")
def tokenizer(world):
    docs = corpus.pretraining_documents(world, 300, seed=0)
    sets = {s: corpus.instruction_set(world, s, 20) for s in corpus.INSTRUCTION_STYLES}
    return train_tokenizer(corpus.iter_text(world, docs, sets), vocab_size=400)


def tiny_llama(vocab: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=512, tie_word_embeddings=True)
    return LlamaForCausalLM(cfg).eval()


# ------------------------------------------------------------------------------------ prompts


def test_alpaca_prompt_is_stanfords_template_exactly():
    assert instruct.alpaca_prompt("Sort the words.", "pear apple") == ALPACA_INPUT
    assert instruct.alpaca_prompt("Say hi.") == ALPACA_NO_INPUT
    assert instruct.alpaca_prompt("Say hi.", "   ") == ALPACA_NO_INPUT  # blank input: the no-input template
    assert instruct.alpaca_prompt("Use {braces}.") .count("{braces}") == 1  # values are not re-formatted
    with pytest.raises(ValueError, match="instruction"):
        instruct.alpaca_prompt("  ")


def test_mmlu_prompt_is_hendrycks_format():
    dev = [Question("high_school_geography", "Social Sciences", f"Q{i}?", ("w", "x", "y", "z"), i % 4) for i in range(5)]
    q = Question("high_school_geography", "Social Sciences", " Where is X? ", ("a", "b", "c", "d"), 2)
    expected = "The following are multiple choice questions (with answers) about high school geography.\n\n"
    for i in range(5):
        expected += f"Q{i}?\nA. w\nB. x\nC. y\nD. z\nAnswer: {'ABCD'[i % 4]}\n\n"
    expected += "Where is X?\nA. a\nB. b\nC. c\nD. d\nAnswer:"
    assert mmlu.prompt(dev, q, k=5) == expected
    assert mmlu.prompt(dev, q, k=0).endswith("about high school geography.\n\nWhere is X?\nA. a\nB. b\nC. c\nD. d\nAnswer:")


def test_our_prompts_equal_the_ones_lm_eval_builds(world, tmp_path):
    bench = Benchmark.from_world(world)
    top = mmlu.write_lm_eval_task(bench, tmp_path)
    for subject in ("high_school_geography", "elementary_mathematics"):
        pairs = mmlu.lm_eval_prompts(tmp_path, f"{top}_{subject}", num_fewshot=5)
        questions = bench.test[subject]
        assert len(pairs) == 4 * len(questions)
        for i, q in enumerate(questions):
            ours = mmlu.prompt(bench.dev[subject], q, 5)
            for letter in range(4):
                context, continuation = pairs[4 * i + letter]
                assert context == ours
                assert continuation == " " + "ABCD"[letter]


# ------------------------------------------------------------------------------------ masking


def test_prompt_tokens_are_masked_and_the_response_is_learned(tokenizer):
    record = {"instruction": "Which star does the planet Zed orbit?", "input": "", "output": "Zed orbits Vega."}
    ex = instruct.encode_example(record, tokenizer, cutoff=512)
    prompt_ids = tokenizer.encode(instruct.alpaca_prompt(record["instruction"]) + "\n")
    n = len(prompt_ids)
    assert ex["input_ids"][:n] == prompt_ids
    assert ex["labels"][:n] == [-100] * n
    assert ex["labels"][n:] == ex["input_ids"][n:]
    assert tokenizer.decode(ex["labels"][n:]) == "Zed orbits Vega.<|eos|>"
    long = dict(record, output="word " * 400)
    cut = instruct.encode_example(long, tokenizer, cutoff=64)
    assert len(cut["input_ids"]) == 64 and cut["labels"][-1] != -100 and cut["labels"][0] == -100
    with pytest.raises(ValueError, match="output"):
        instruct.encode_example(dict(record, output=" "), tokenizer)
    batch = instruct.SFTCollator(tokenizer.pad_token_id)([ex, cut])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert (batch["labels"][0, len(ex["input_ids"]):] == -100).all() and batch["attention_mask"][0].sum() == len(ex["input_ids"])


# ------------------------------------------------------------------------------------ scorer


class StubLM(torch.nn.Module):
    """A 'model' whose next-token logits after each prompt are fixed in advance (by the prompt's text)."""

    def __init__(self, tokenizer, table: dict[str, dict[str, float]]):
        super().__init__()
        self.tok, self.table = tokenizer, table
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.config = type("C", (), {"max_position_embeddings": 4096})()
        self.calls = 0

    def forward(self, input_ids, attention_mask):
        self.calls += 1
        v = len(self.tok)
        logits = torch.zeros(*input_ids.shape, v)
        for row in range(input_ids.shape[0]):
            n = int(attention_mask[row].sum())
            text = self.tok.decode(input_ids[row, :n])
            for letter, value in self.table[text].items():
                logits[row, n - 1, self.tok.encode(" " + letter)[0]] = value
        return type("Out", (), {"logits": logits})()


def _bench(sizes: dict[str, tuple[str, int]]) -> Benchmark:
    dev, test, cats = {}, {}, {}
    for subject, (category, n) in sizes.items():
        dev[subject] = [Question(subject, category, f"dev {i} of {subject}?", ("p", "q", "r", "s"), i % 4) for i in range(5)]
        test[subject] = [Question(subject, category, f"test {i} of {subject}?", ("p", "q", "r", "s"), i % 4) for i in range(n)]
        cats[subject] = category
    return Benchmark(dev=dev, test=test, categories=cats)


def test_scorer_takes_the_argmax_over_the_four_letters_and_micro_averages(tokenizer):
    bench = _bench({"chemistry": ("STEM", 4), "astronomy": ("STEM", 12), "philosophy": ("Humanities", 4),
                    "sociology": ("Social Sciences", 4), "nutrition": ("Other", 4)})
    rng = random.Random(0)
    table, truth = {}, {}
    for subject, qs in bench.test.items():
        for i, q in enumerate(qs):
            text = mmlu.prompt(bench.dev[subject], q, 5)
            pick = rng.randrange(4)
            scores = {letter: rng.uniform(-5, 0) for letter in "ABCD"}
            scores["ABCD"[pick]] = 3.0 if subject != "astronomy" or i < 3 else scores["ABCD"[pick]]
            if subject == "astronomy" and i >= 3:  # an exact tie between B and D: the first (B) wins, as np.argmax
                scores = {"A": -1.0, "B": 2.0, "C": 0.0, "D": 2.0}
                pick = 1
            table[text], truth[(subject, i)] = scores, pick
    model = StubLM(tokenizer, table)
    result = mmlu.score(model, tokenizer, bench, k=5, batch_size=5)
    assert result.predictions == [truth[(s, i)] for s, qs in bench.test.items() for i in range(len(qs))]
    assert model.calls == -(-len(bench) // 5)  # one forward per question (single-token letters), batched
    # accuracy against the answers, per category micro-averaged: STEM pools 16 questions of two subjects
    correct = {key: truth[key] == bench.test[key[0]][key[1]].answer for key in truth}
    stem = [correct[(s, i)] for s in ("chemistry", "astronomy") for i in range(len(bench.test[s]))]
    cats = result.by_category()
    assert cats["STEM"] == pytest.approx(100 * sum(stem) / 16)
    assert result.average == pytest.approx(100 * sum(correct.values()) / len(bench))
    subj = result.by_subject()
    macro = (subj["chemistry"] + subj["astronomy"]) / 2
    assert cats["STEM"] != pytest.approx(macro) or subj["chemistry"] == subj["astronomy"]
    assert list(result.table_row()) == ["STEM", "Humanities", "Social Sciences", "Other", "Average"]


def test_scorer_and_lm_eval_agree_on_a_tiny_llama(world, tokenizer, tmp_path):
    full = Benchmark.from_world(world)
    keep = ("chemistry", "philosophy", "sociology", "nutrition")  # one subject per category keeps it fast
    bench = Benchmark(dev={s: full.dev[s] for s in keep}, test={s: full.test[s] for s in keep},
                      categories={s: full.categories[s] for s in keep})
    model = tiny_llama(len(tokenizer), seed=1)
    ours = mmlu.score(model, tokenizer, bench, k=5, batch_size=16).table_row()
    top = mmlu.write_lm_eval_task(bench, tmp_path)
    theirs = mmlu.lm_eval_score(model, tokenizer, top, include_path=tmp_path, num_fewshot=5, batch_size=16)
    assert theirs.keys() == ours.keys()
    for key in ours:
        assert theirs[key] == pytest.approx(ours[key], abs=1e-9), key
    # the same on an adapted (peft-wrapped NoRA++) model, as the notebook evaluates tuned models
    plus = instruct.adapt(model, "nora++", 0, lora={"rank": 2, "alpha": 4})
    with torch.no_grad():
        for p in plus.parameters():
            if p.requires_grad:
                p.normal_(0, 0.05)
    ours = mmlu.score(plus, tokenizer, bench, k=5, batch_size=16).table_row()
    theirs = mmlu.lm_eval_score(plus, tokenizer, top, include_path=tmp_path, num_fewshot=5, batch_size=16)
    assert all(theirs[key] == pytest.approx(ours[key], abs=1e-9) for key in ours)


def _small_bench(world, keep=("chemistry", "philosophy", "sociology", "nutrition")):
    full = Benchmark.from_world(world)
    return Benchmark(dev={s: full.dev[s] for s in keep}, test={s: full.test[s] for s in keep},
                     categories={s: full.categories[s] for s in keep})


def _base_and_moved_plus(tokenizer, seed):
    """A tiny LLaMA and a NoRA++ copy of it whose trainable parameters are moved off their zero start."""
    base = tiny_llama(len(tokenizer), seed=seed)
    plus = instruct.adapt(base, "nora++", 0, lora={"rank": 2, "alpha": 4})
    with torch.no_grad():
        for p in plus.parameters():
            if p.requires_grad:
                p.normal_(0, 0.05)
    return base, plus


def test_evaluate_keeps_per_question_correctness_aligned_across_models(world, tokenizer):
    import numpy as np

    from nora.experiments import llama_instruct as experiment

    bench = _small_bench(world)
    cfg = {"eval_batch_size": 8}
    base, plus = _base_and_moved_plus(tokenizer, seed=1)
    rows, results = [], []
    for model in (base, plus):
        row = experiment.evaluate(model, tokenizer, "smoke", cfg, bench)
        result = experiment.evaluate(model, tokenizer, "smoke", cfg, bench, per_question=True)
        assert result.table_row() == row  # the same numbers, now with the questions behind them
        rows.append(row)
        results.append(result)
    matrix, cats, ids = mmlu.correctness_matrix(results)
    assert matrix.shape == (2, len(bench)) and set(np.unique(matrix)) <= {0.0, 1.0}
    assert ids == [f"{s}/{i}" for s, qs in bench.test.items() for i in range(len(qs))]
    for r, row in zip(matrix, rows):
        assert 100 * r.mean() == pytest.approx(row["Average"])
        assert 100 * r[cats == "STEM"].mean() == pytest.approx(row["STEM"])
    other = mmlu.score(base, tokenizer, _small_bench(world, ("philosophy", "chemistry", "sociology", "nutrition")), k=5)
    with pytest.raises(ValueError, match="question_ids differ"):
        mmlu.correctness_matrix([results[0], other])
    with pytest.raises(NotImplementedError, match="paper"):
        experiment.evaluate(base, tokenizer, "paper", cfg, per_question=True)


def test_shared_prefix_kv_cache_scores_like_full_sequences(world, tokenizer):
    bench = _small_bench(world)
    base, plus = _base_and_moved_plus(tokenizer, seed=2)
    for model in (base, plus):  # plain transformers and peft-wrapped NoRA++
        full = mmlu.score(model, tokenizer, bench, k=5, batch_size=3)
        shared = mmlu.score(model, tokenizer, bench, k=5, batch_size=3, share_prefix=True)
        assert shared.predictions == full.predictions and shared.question_ids == full.question_ids
        assert shared.table_row() == full.table_row()
    # the log-likelihoods themselves agree to float rounding
    items = [(q, [mmlu._encode_pair(tokenizer, mmlu.prompt(bench.dev[s], q, 5), f" {x}") for x in "ABCD"])
             for s, qs in bench.test.items() for q in qs]
    runs, _ = mmlu._runs(items)
    groups = {}
    for n, (q, _) in enumerate(items):
        groups.setdefault(q.subject, []).append(n)
    assert len(runs) == len(items)  # single-token letters: one run per question
    with torch.no_grad():
        a = mmlu._loglik_unshared(base, tokenizer, runs, 4, 512, "cpu")
        b = mmlu._loglik_shared(base, tokenizer, runs, groups, 4, 512, "cpu")
    assert torch.allclose(torch.tensor(a), torch.tensor(b), atol=1e-4)
    assert mmlu._common_prefix([runs[i][0] for i in groups["chemistry"]]) > 0.5 * len(runs[groups["chemistry"][0]][0])
    # sequences the unshared path would truncate go through it unchanged
    with torch.no_grad():
        c = mmlu._loglik_shared(base, tokenizer, runs, groups, 4, 50, "cpu")
        d = mmlu._loglik_unshared(base, tokenizer, runs, 4, 50, "cpu")
    assert c == d


def test_lm_eval_category_map_has_57_subjects_in_four_categories():
    cats = mmlu.lm_eval_category_map()
    assert len(cats) == 57 and set(cats.values()) == {"STEM", "Humanities", "Social Sciences", "Other"}
    assert cats["anatomy"] == "STEM" and cats["high_school_geography"] == "Social Sciences"


# ------------------------------------------------------------------------------------ world and tokenizer


def test_world_is_seeded_and_exam_questions_never_occur_in_pretraining(world):
    again = corpus.make_world(seed=3, practice=6, exam=4, max_operand=6)
    assert [(f.entity, f.value) for f in again.all_facts()] == [(f.entity, f.value) for f in world.all_facts()]
    other = corpus.make_world(seed=4, practice=6, exam=4, max_operand=6)
    assert [f.entity for f in other.all_facts()] != [f.entity for f in world.all_facts()]
    bench = Benchmark.from_world(world)
    assert len(bench) == 12 * 4 and all(len(d) == 5 for d in bench.dev.values())
    letters = [q.answer for qs in bench.test.values() for q in qs]
    assert all(letters.count(a) == len(letters) // 4 for a in range(4))  # balanced letters
    docs = "\n".join(corpus.pretraining_documents(world, 3000, seed=0))
    for fact in world.exam():
        if fact.operands is None:
            assert fact.entity in docs  # every exam fact is stated in the pre-training text ...
    for qs in bench.test.values():
        for q in qs:
            assert q.question + "\nA." not in docs  # ... but never asked as a multiple-choice question
    assert world.practice()[0].question() + "\nA." in docs  # (practice facts are: the quizzes)
    exam_entities = {f.entity for f in world.exam()}
    for style in corpus.INSTRUCTION_STYLES:
        text = json.dumps(corpus.instruction_set(world, style, 50))
        assert not any(e in text for e in exam_entities if not e[0].isdigit()), style


def test_validation_split_takes_exam_questions_the_test_then_leaves_out(world):
    from nora.experiments.llama_instruct import benchmarks

    full = Benchmark.from_world(world)
    val, test = full.split(1)
    assert val.dev == test.dev == full.dev and val.categories == test.categories == full.categories
    assert len(val) == 12 and len(test) == 12 * 3 and len(val) + len(test) == len(full)
    asked = lambda b: [(s, q.question) for s, qs in b.test.items() for q in qs]  # noqa: E731
    assert not set(asked(val)) & set(asked(test)) and sorted(asked(val) + asked(test)) == sorted(asked(full))
    exam = {f.question() for f in world.exam()}
    assert {q for _, q in asked(val)} <= exam  # exam facts: never asked in pre-training nor in the instruction data
    for bad, match in ((0, "positive int"), (True, "positive int"), (4, "leaves no test question")):
        with pytest.raises(ValueError, match=match):
            full.split(bad)
    v, t = benchmarks(world, {"validation_per_subject": 2})
    assert len(v) == 24 and [q.question for q in t.test["chemistry"]] == [q.question for q in full.test["chemistry"][2:]]
    assert benchmarks(world, {"validation_per_subject": 0})[0] is None and len(benchmarks(world, {})[1]) == len(full)


def test_the_learning_rate_is_the_largest_that_keeps_the_base_models_knowledge():
    from nora.experiments.llama_instruct import choose_learning_rate

    scores = {1e-4: 70.0, 3e-4: 68.5, 1e-3: 60.0}
    assert choose_learning_rate(scores, base=71.0) == (3e-4, True)          # 68.5 >= 71 - 3
    assert choose_learning_rate(scores, base=71.0, retention_points=12.0) == (1e-3, True)
    assert choose_learning_rate(scores, base=80.0) == (1e-4, False)         # none keeps it: the smallest, flagged
    assert choose_learning_rate({3e-4: 50.0}, base=53.0) == (3e-4, True)    # exactly at the bound counts
    for bad, match in (({}, "non-empty"), ({0.0: 1.0}, "positive learning rates"), ({1e-3: float("nan")}, r"validation\[0.001\]")):
        with pytest.raises(ValueError, match=match):
            choose_learning_rate(bad, base=50.0)
    with pytest.raises(ValueError, match="retention_points"):
        choose_learning_rate(scores, base=50.0, retention_points=-1)


def test_book_learning_rate_is_the_one_chapter_06_chose_on_its_validation_split():
    from nora.experiments.llama_instruct import choose_learning_rate
    from nora.experiments.profiles import settings

    book = settings("06_llama_instruct", "book")
    grid = sorted(book["lr_grid"])
    assert 1e-4 in grid and all(2.9 < b / a < 3.5 for a, b in zip(grid, grid[1:]))  # from the paper's rate, half-decade steps
    values = json.loads((Path(__file__).resolve().parents[2] / "results" / "book" / "06_llama_instruct.json").read_text())["values"]
    assert book["learning_rate"] == pytest.approx(values["learning_rate_chosen"])
    validation = {lr: values[f"validation_lora_average_lr{lr:g}"] for lr in grid}
    chosen, kept = choose_learning_rate(validation, values["validation_base_average"], book["retention_points"])
    assert chosen == pytest.approx(values["learning_rate_chosen"]) and kept == values["learning_rate_keeps_base"]
    assert settings("06_llama_instruct", "paper")["lr_grid"] == () and settings("06_llama_instruct", "paper")["learning_rate"] == 1e-4


def test_tokenizer_round_trips_and_letters_are_single_tokens(tokenizer):
    text = "The planet Zorb orbits the star Vega.\nA. 12\nAnswer: C\n\n  spaces\tand tabs — ünïcode"
    ids = tokenizer.encode(text)
    assert tokenizer.decode(ids) == text
    assert all(len(tokenizer.encode(f" {c}")) == 1 for c in "ABCD")
    assert tokenizer.encode("Answer: B") == tokenizer.encode("Answer:") + tokenizer.encode(" B")
    with pytest.raises(ValueError, match="vocab_size"):
        train_tokenizer(["a b"], vocab_size=10)


# ------------------------------------------------------------------------------------ SFT: LoRA vs NoRA++


def test_two_trainer_steps_of_lora_and_nora_plus_on_a_tiny_llama(world, tokenizer):
    base = tiny_llama(len(tokenizer))
    records = corpus.instruction_set(world, "openorca", 8)
    lora_kw, nora_kw = {"rank": 2, "alpha": 4}, {"groups": 8, "rank": 3, "alpha": 6}
    lora = instruct.adapt(base, "lora", 0, lora=lora_kw)
    plus = instruct.adapt(base, "nora++", 0, lora=lora_kw, nora_cfg=nora_kw)
    n_lora, n_plus = nora.count_parameters(lora).trainable, nora.count_parameters(plus).trainable
    assert n_plus - n_lora == 2 * 3 * (10 + 2 * 8)  # one NoRA layer per decoder layer: r (10 + 2G)
    assert all(isinstance(layer.mlp.act_fn, nora.NoraActivation) for layer in plus.base_model.model.model.layers)
    before = {m: {n: p.detach().clone() for n, p in model.named_parameters()} for m, model in (("lora", lora), ("plus", plus))}
    for name, model in (("lora", lora), ("plus", plus)):
        result = instruct.finetune(model, tokenizer, records, seed=0, steps=2, batch_size=4, learning_rate=1e-2, cutoff=128)
        assert result.steps == 2 and len(result.step_seconds) == 2 and result.median_step > 0
        changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[name][n])}
        trainable = {n for n, p in model.named_parameters() if p.requires_grad}
        assert changed and changed <= trainable  # only adapter factors moved
        assert any("lora_B" in n for n in changed)
        if name == "plus":
            assert any(n.endswith(("num_B", "den_B")) for n in changed)
    mem_lora = instruct.step_memory(lora, instruct.SFTCollator(tokenizer.pad_token_id)(instruct.encode_records(records[:4], tokenizer, 128)))
    assert mem_lora["saved_activations"] > 0 and mem_lora["peak"] > mem_lora["saved_activations"]
    assert isinstance(instruct.generate(plus, tokenizer, "Say hi.", max_new_tokens=4), str)
    # the base model is untouched (adapt works on deep copies)
    assert isinstance(base.model.layers[0].mlp.act_fn, torch.nn.Module) and not isinstance(base.model.layers[0].mlp.act_fn, nora.NoraActivation)


def test_saved_adapter_reloads_to_the_same_outputs(world, tokenizer, tmp_path):
    from nora.experiments import llama_instruct as experiment

    base = tiny_llama(len(tokenizer))
    model = instruct.adapt(base, "nora++", 1, lora={"rank": 2, "alpha": 4})
    with torch.no_grad():
        for n, p in model.named_parameters():
            if p.requires_grad:
                p.normal_(0, 0.02)
    spec = {"profile": "smoke", "dataset": "alpaca", "method": "nora++", "seed": 1, "lora": {"rank": 2, "alpha": 4},
            "nora": {"groups": 8, "rank": 3, "alpha": 6}}
    experiment.save_trained(model, spec, tmp_path)  # peft's files: one NORA_PLUS adapter with both parts
    assert json.loads((tmp_path / "adapter_config.json").read_text())["peft_type"] == "NORA_PLUS"
    loaded, loaded_spec = experiment.load_trained(tiny_llama(len(tokenizer)), tmp_path)
    ids = torch.tensor([tokenizer.encode("The planet Zorb orbits")])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, loaded(ids).logits)
    assert loaded_spec == spec
    config = json.loads((tmp_path / "adapter_config.json").read_text())
    (tmp_path / "adapter_config.json").write_text(json.dumps(dict(config, r=3)))  # the recorded LoRA rank is wrong
    with pytest.raises(ValueError, match="shape"):
        experiment.load_trained(tiny_llama(len(tokenizer)), tmp_path)


def test_chapter_06_nora_plus_is_the_model_the_pre_peft_construction_built():
    """NoRA++ as one peft method (NoraPlusConfig) builds, for the same seed, exactly the model that NoRA
    injected first and peft LoRA second built before issue 19 (digest and counts recorded with that code
    on the book profile's shipped LLaMA; the factors' names lose their ``.nora_delta.default``)."""
    import hashlib

    from nora.experiments.llm.pretrain import pretrained_llama
    from nora.experiments.profiles import settings

    cfg = settings("06_llama_instruct", "book")
    base, _, _ = pretrained_llama("book")
    model = instruct.adapt(base, "nora++", 0, lora=cfg["lora"], nora_cfg=cfg["nora"])
    assert type(model.peft_config["default"]).__name__ == "NoraPlusConfig"
    count = nora.count_parameters(model)
    assert (count.trainable, count.total) == (55_608, 560_280)
    params = {n.replace(".nora_delta.default", ""): p.detach() for n, p in model.named_parameters() if p.requires_grad}
    digest = hashlib.sha256()
    for name in sorted(params):
        digest.update(name.encode())
        digest.update(params[name].contiguous().numpy().tobytes())
    assert digest.hexdigest() == "a6828085b4b26c59d80a83b70cb4d624f3e7d66d2086eaaefac15d656b27b548"


# ------------------------------------------------------------------------------------ paper profile, offline


FAKES = {
    "alpaca": [{"instruction": "Add 2 and 3.", "input": "", "output": "5"}, {"instruction": "Echo.", "input": "hi", "output": "hi"}],
    "mathinstruct": [{"source": "x", "instruction": "What is 2+2?", "output": "4"}],
    "openorca": [{"id": "1", "system_prompt": "Be brief.", "question": "Capital of France?", "response": "Paris."},
                 {"id": "2", "system_prompt": "", "question": "Empty answer?", "response": ""}],
    "sharegpt_hyper": [{"conversations": [{"from": "system", "value": "Sys."}, {"from": "human", "value": "Hello?"},
                                          {"from": "gpt", "value": "Hi!"}, {"from": "human", "value": "More?"}]}],
    "ultrachat": [{"prompt": "p", "messages": [{"role": "user", "content": "Tell me a fact."},
                                               {"role": "assistant", "content": "Water is wet."}]}],
}
EXPECTED = {
    "alpaca": [{"instruction": "Add 2 and 3.", "input": "", "output": "5"}, {"instruction": "Echo.", "input": "hi", "output": "hi"}],
    "mathinstruct": [{"instruction": "What is 2+2?", "input": "", "output": "4"}],
    "openorca": [{"instruction": "Be brief.\n\nCapital of France?", "input": "", "output": "Paris."}],
    "sharegpt_hyper": [{"instruction": "Sys.\n\nHello?", "input": "", "output": "Hi!"}],
    "ultrachat": [{"instruction": "Tell me a fact.", "input": "", "output": "Water is wet."}],
}


@pytest.mark.parametrize("name", sorted(FAKES))
def test_paper_datasets_load_from_local_files_in_their_hub_layout(name, tmp_path, monkeypatch):
    from nora.experiments.llm import sources

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    path = tmp_path / f"{name}.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in FAKES[name]))
    assert sources.load_instructions(name, data_files=str(path)) == EXPECTED[name]
    if len(EXPECTED[name]) > 1:
        assert sources.load_instructions(name, max_samples=1, data_files=str(path)) == EXPECTED[name][:1]
    with pytest.raises(ValueError, match="name"):
        sources.load_instructions("dolly", data_files=str(path))


def test_accelerate_fsdp_config_parses_and_wraps_llama_layers():
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    path = Path(nora.__file__).parent / "experiments" / "llm" / "configs" / "accelerate_fsdp.yaml"
    cfg = load_config_from_file(str(path))
    assert str(cfg.distributed_type).endswith("FSDP") and cfg.mixed_precision == "bf16"
    assert cfg.fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "LlamaDecoderLayer"
    # FSDP2 (issue 19; tests/experiments/test_fsdp.py runs it): original parameters always, no use_orig_params
    assert cfg.fsdp_config["fsdp_version"] == 2 and cfg.fsdp_config["fsdp_state_dict_type"] == "FULL_STATE_DICT"
    from transformers.models.llama import modeling_llama

    assert hasattr(modeling_llama, cfg.fsdp_config["fsdp_transformer_layer_cls_to_wrap"])


# ------------------------------------------------------------------------------------ pre-training


def test_pretraining_is_reproducible_cached_and_checked(tmp_path, monkeypatch):
    from nora.experiments.llm import pretrain

    tiny = pretrain.PretrainConfig(practice=5, exam=2, documents=300, vocab_size=600, hidden_size=32, intermediate_size=64,
                                   layers=1, heads=2, kv_heads=1, seq_len=64, batch_size=4, steps=3, warmup_steps=1,
                                   anneal_documents=20, anneal_steps=2, anneal_warmup_steps=0)
    model, tok, prov = pretrain.train(tiny, tmp_path / "a")
    _, _, again = pretrain.train(tiny, None)
    assert again["weights_sha256"] == prov["weights_sha256"] == pretrain.weights_sha256(model)
    assert [s for s, _ in prov["loss_curve"]][-1] == 5 and prov["tokens_seen"] == 5 * 4 * 64
    loaded, tok2, prov2 = pretrain.load(tmp_path / "a")
    assert pretrain.weights_sha256(loaded) == prov["weights_sha256"] and tok2.encode("Answer: C") == tok.encode("Answer: C")
    # a profile's model is trained once, then read from $NORA_CACHE_DIR
    monkeypatch.setenv("NORA_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(pretrain.PRETRAIN, "smoke", tiny)
    first = pretrain.pretrained_llama("smoke")[2]
    second = pretrain.pretrained_llama("smoke")[2]
    assert first["cached"] is False and second["cached"] is True and first["weights_sha256"] == second["weights_sha256"]
    # tampered weights are refused
    from safetensors.torch import load_file, save_file

    path = tmp_path / "a" / "model.safetensors"
    tensors = load_file(str(path))
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1
    save_file(tensors, str(path), metadata={"format": "pt"})
    with pytest.raises(ValueError, match="SHA-256"):
        pretrain.load(tmp_path / "a")


def test_book_model_ships_for_the_current_settings_and_loads_without_a_cache(tmp_path, monkeypatch):
    from nora.experiments.llm import pretrain

    config = pretrain.PRETRAIN["book"]
    shipped = pretrain.SHIPPED_DIR / f"llm-book-{config.key()}"
    # changing the book's pre-training settings without re-shipping its model fails here
    assert (shipped / "provenance.json").is_file(), f"re-ship the book model: python -m nora.experiments.llm.pretrain --profile book, copy to {shipped}"
    provenance = json.loads((shipped / "provenance.json").read_text())
    assert provenance["key"] == config.key() and provenance["parameters"] == 504_672
    monkeypatch.setenv("NORA_CACHE_DIR", str(tmp_path / "empty"))
    model, tok, prov = pretrain.pretrained_llama("book")
    assert prov["cached"] is True and pretrain.weights_sha256(model) == provenance["weights_sha256"]
    assert not (tmp_path / "empty").exists()  # read from the package, nothing trained or written
