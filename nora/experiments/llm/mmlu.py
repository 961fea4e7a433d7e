"""5-shot multiple choice in MMLU's protocol: our scorer, and lm-eval on a local task or on ``mmlu`` itself.

Hendrycks et al.'s protocol (their ``evaluate.py``; lm-eval's ``mmlu`` task builds the same text):

- header ``"The following are multiple choice questions (with answers) about {subject}.\\n\\n"``
  (``subject`` with underscores as spaces);
- the subject's five ``dev`` questions, each ``"Q\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer: X\\n\\n"``;
- the test question in the same layout, ending in ``"Answer:"``;
- prediction = the letter whose continuation ``" A"`` .. ``" D"`` has the highest log-probability;
  accuracy is the micro-average over questions (per category and overall), which is what
  lm-eval's ``mmlu`` groups report (``weight_by_size: True``).

``score`` implements this directly on a transformers causal LM (one forward pass per question when
each continuation is a single token, as for LLaMA-3's and the book's tokenizers). ``lm_eval_score``
runs lm-eval (``HFLM`` on the in-memory model) either on lm-eval's ``mmlu`` (paper profile, needs
the hub) or on a local task that ``write_lm_eval_task`` builds from a ``Benchmark`` (JSONL files +
YAML, no network), so both code paths can be checked against each other.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nora.experiments.llm.corpus import CATEGORIES, HEADER, LETTERS, Benchmark, Question, format_subject, mc_block

__all__ = [
    "MMLUResult",
    "benchmark_from_records",
    "correctness_matrix",
    "format_example",
    "lm_eval_category_map",
    "lm_eval_prompts",
    "lm_eval_score",
    "prompt",
    "score",
    "write_lm_eval_task",
]

# lm-eval's group names for the four categories
LM_EVAL_GROUPS = {"STEM": "stem", "Humanities": "humanities", "Social Sciences": "social_sciences", "Other": "other"}


def format_example(q: Question, include_answer: bool = True) -> str:
    """One question block; with the answer it ends in ``"Answer: X\\n\\n"``, without in ``"Answer:"``."""
    return mc_block(q, include_answer)


def prompt(dev: Sequence[Question], question: Question, k: int = 5) -> str:
    """The k-shot prompt for ``question``: header, the first ``k`` dev examples, the question ending in ``"Answer:"``."""
    if not 0 <= k <= len(dev):
        raise ValueError(f"k must be between 0 and the {len(dev)} dev examples, got {k}")
    return HEADER.format(subject=format_subject(question.subject)) + "".join(format_example(d) for d in dev[:k]) + format_example(question, False)


@dataclass
class MMLUResult:
    """Per-question outcomes and their micro-averages (accuracies in percent)."""

    subjects: list[str]
    categories: list[str]
    predictions: list[int]
    answers: list[int]
    question_ids: list[str] = field(default_factory=list)  # "subject/index" in test order: aligns results across models

    @property
    def correct(self) -> list[bool]:
        return [p == a for p, a in zip(self.predictions, self.answers)]

    def correct_array(self):
        """The per-question 0/1 correctness as a float numpy vector, in ``question_ids`` order."""
        import numpy as np

        return np.array(self.correct, dtype=float)

    def by_category(self) -> dict[str, float]:
        """Micro-average per category (all questions of the category pooled), in ``CATEGORIES`` order."""
        hits: dict[str, list[bool]] = defaultdict(list)
        for c, ok in zip(self.categories, self.correct):
            hits[c].append(ok)
        return {c: 100.0 * sum(hits[c]) / len(hits[c]) for c in CATEGORIES if hits[c]}

    def by_subject(self) -> dict[str, float]:
        hits: dict[str, list[bool]] = defaultdict(list)
        for s, ok in zip(self.subjects, self.correct):
            hits[s].append(ok)
        return {s: 100.0 * sum(v) / len(v) for s, v in hits.items()}

    @property
    def average(self) -> float:
        """Micro-average over every question (lm-eval's ``mmlu`` group accuracy)."""
        return 100.0 * sum(self.correct) / len(self.correct)

    def table_row(self) -> dict[str, float]:
        return {**self.by_category(), "Average": self.average}


def _encode_pair(tokenizer, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's split for causal models: encode context + continuation, the context alone, and take the tail."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation, context = context[-n_spaces:] + continuation, context[:-n_spaces]
    whole = tokenizer.encode(context + continuation)
    ctx = tokenizer.encode(context)
    return ctx, whole[len(ctx):]


def _runs(items):
    """The sequences to run: one per question when all continuations are single tokens after the same context.

    Returns ``runs`` (``(ids, [(start, cont_ids)] per letter)``) and ``owner`` (``(run index, slot)`` for
    each question × 4 + letter).
    """
    runs: list[tuple[list[int], list[tuple[int, list[int]]]]] = []
    owner: list[tuple[int, int]] = []
    for _, pairs in items:
        ctxs = {tuple(c) for c, _ in pairs}
        if len(ctxs) == 1 and all(len(cont) == 1 for _, cont in pairs):
            ctx = list(pairs[0][0])
            for letter in range(4):
                owner.append((len(runs), letter))
            runs.append((ctx, [(len(ctx), cont) for _, cont in pairs]))
        else:
            for letter, (ctx, cont) in enumerate(pairs):
                owner.append((len(runs), 0))
                runs.append((ctx + cont[:-1], [(len(ctx), cont)]))
    return runs, owner


def _pad(tokenizer) -> int:
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def _loglik_unshared(model, tokenizer, runs, batch_size: int, max_length: int, device) -> list[list[float]]:
    """Every run as one full sequence, longest first, right-padded in batches (left-truncated to ``max_length``)."""
    import torch

    loglik: list[list[float]] = [[] for _ in runs]
    order = sorted(range(len(runs)), key=lambda i: -len(runs[i][0]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        seqs = []
        for i in chunk:
            ids = runs[i][0]
            cut = max(0, len(ids) - max_length)  # left-truncate like lm-eval
            seqs.append((ids[cut:], cut))
        width = max(len(s) for s, _ in seqs)
        input_ids = torch.full((len(seqs), width), _pad(tokenizer), dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for row, (s, _) in enumerate(seqs):
            input_ids[row, : len(s)] = torch.tensor(s)
            mask[row, : len(s)] = 1
        logprobs = torch.log_softmax(model(input_ids=input_ids.to(device), attention_mask=mask.to(device)).logits.float(), -1).cpu()
        for row, i in enumerate(chunk):
            cut = seqs[row][1]
            for pos, cont in runs[i][1]:
                total = 0.0
                for j, tok in enumerate(cont):
                    total += float(logprobs[row, pos - 1 - cut + j, tok])
                loglik[i].append(total)
    return loglik


def _common_prefix(seqs: Sequence[Sequence[int]]) -> int:
    first = seqs[0]
    n = min(len(s) for s in seqs)
    for k in range(n):
        t = first[k]
        if any(s[k] != t for s in seqs):
            return k
    return n


def _loglik_shared(model, tokenizer, runs, groups: dict[str, list[int]], batch_size: int, max_length: int, device) -> list[list[float]]:
    """The same log-likelihoods with each group's (subject's) common token prefix run once and reused as a KV cache.

    A group's prefix is the longest common prefix of its runs' token ids (so the header and the
    five dev examples, up to where the questions' tokens diverge), capped one token before the
    first scored position.  Each batch of a group's suffixes (longest first, right-padded) attends
    to a copy of the prefix cache repeated over the batch, at positions ``P, P+1, ..``, exactly as
    in the full sequence.  Groups with a sequence longer than ``max_length`` (which the unshared
    path would left-truncate) and groups whose prefix would be empty go through the unshared path.
    """
    import copy
    import inspect

    import torch

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft-wrapped or not
    name = "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"  # transformers >= 5.24: "cache"
    loglik: list[list[float]] = [[] for _ in runs]
    fallback: list[int] = []
    for members in groups.values():
        ids = [runs[i][0] for i in members]
        first_scored = min(pos for i in members for pos, _ in runs[i][1])
        n_prefix = min(_common_prefix(ids), first_scored - 1)
        if n_prefix < 1 or max(len(x) for x in ids) > max_length:
            fallback += members
            continue
        with torch.no_grad():
            out = model(input_ids=torch.tensor([ids[0][:n_prefix]], device=device), use_cache=True)
            cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
        order = sorted(members, key=lambda i: -len(runs[i][0]))
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            tails = [runs[i][0][n_prefix:] for i in chunk]
            width = max(len(t) for t in tails)
            input_ids = torch.full((len(tails), width), _pad(tokenizer), dtype=torch.long)
            mask = torch.zeros((len(tails), n_prefix + width), dtype=torch.long)
            mask[:, :n_prefix] = 1
            for row, t in enumerate(tails):
                input_ids[row, : len(t)] = torch.tensor(t)
                mask[row, n_prefix : n_prefix + len(t)] = 1
            past = copy.deepcopy(cache)
            past.batch_repeat_interleave(len(tails))
            positions = torch.arange(n_prefix, n_prefix + width).unsqueeze(0).expand(len(tails), -1)
            out = model(input_ids=input_ids.to(device), attention_mask=mask.to(device), position_ids=positions.to(device),
                        use_cache=True, **{name: past})
            logprobs = torch.log_softmax(out.logits.float(), -1).cpu()
            for row, i in enumerate(chunk):
                for pos, cont in runs[i][1]:
                    total = 0.0
                    for j, tok in enumerate(cont):
                        total += float(logprobs[row, pos - 1 - n_prefix + j, tok])
                    loglik[i].append(total)
    if fallback:
        rest = _loglik_unshared(model, tokenizer, [runs[i] for i in fallback], batch_size, max_length, device)
        for i, values in zip(fallback, rest):
            loglik[i] = values
    return loglik


def score(model, tokenizer, benchmark: Benchmark, k: int = 5, batch_size: int = 16, max_length: int | None = None,
          share_prefix: bool = False) -> MMLUResult:
    """Score ``model`` on ``benchmark`` with Hendrycks' k-shot protocol (argmax log-prob of " A".." D").

    ``share_prefix``: run each subject's common prompt prefix (header + k dev examples) once and
    reuse its KV cache for the subject's questions (``_loglik_shared``); the same token sequences
    are scored, so log-likelihoods agree with the default path up to float rounding (a test checks
    predictions are identical).  It needs a model that takes ``past_key_values`` (transformers
    causal LMs, peft-wrapped or not).  Default off: the recorded numbers come from the full-sequence path.
    """
    import torch

    if not isinstance(benchmark, Benchmark):
        raise TypeError(f"benchmark must be a nora.experiments.llm.corpus.Benchmark, got {type(benchmark).__name__}")
    max_length = max_length or getattr(model.config, "max_position_embeddings", 2048)
    device = next(model.parameters()).device
    items = []  # (question, [(ctx_ids, cont_ids) per letter])
    ids: list[str] = []
    for subject, questions in benchmark.test.items():
        for index, q in enumerate(questions):
            text = prompt(benchmark.dev[subject], q, k)
            items.append((q, [_encode_pair(tokenizer, text, f" {letter}") for letter in LETTERS]))
            ids.append(f"{subject}/{index}")
    runs, owner = _runs(items)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            if share_prefix:
                groups: dict[str, list[int]] = defaultdict(list)  # subject -> its runs
                for n, (q, _) in enumerate(items):
                    groups[q.subject] += dict.fromkeys(owner[4 * n + letter][0] for letter in range(4))
                loglik = _loglik_shared(model, tokenizer, runs, dict(groups), batch_size, max_length, device)
            else:
                loglik = _loglik_unshared(model, tokenizer, runs, batch_size, max_length, device)
    finally:
        if was_training:
            model.train()
    preds, k_ = [], 0
    for _ in items:
        lls = [loglik[owner[k_ + letter][0]][owner[k_ + letter][1]] for letter in range(4)]
        k_ += 4
        preds.append(max(range(4), key=lambda j: (lls[j], -j)))  # argmax, first on ties (numpy's rule)
    return MMLUResult(
        subjects=[q.subject for q, _ in items], categories=[q.category for q, _ in items],
        predictions=preds, answers=[q.answer for q, _ in items], question_ids=ids,
    )


def correctness_matrix(results: Sequence[MMLUResult]):
    """``(matrix, categories, question_ids)``: the 0/1 correctness of each result as one row, after checking they are aligned.

    Every result must score the same questions in the same order (same ``question_ids``), as
    ``score`` does for one benchmark; the rows are then the ``a`` / ``b`` arrays of
    ``nora.experiments.llm.power`` (seeds × questions).
    """
    import numpy as np

    results = list(results)
    if not results or not all(isinstance(r, MMLUResult) for r in results):
        raise ValueError("results must be a non-empty sequence of MMLUResult")
    ref = results[0]
    for n, r in enumerate(results[1:], 1):
        if r.question_ids != ref.question_ids:
            raise ValueError(f"results[{n}] scores other questions (or another order) than results[0]: question_ids differ")
        if r.categories != ref.categories:
            raise ValueError(f"results[{n}] has other category labels than results[0]")
    return np.array([r.correct_array() for r in results]), np.array(ref.categories), list(ref.question_ids)


# ----------------------------------------------------------------------------------------- lm-eval


def write_lm_eval_task(benchmark: Benchmark, folder: str | Path, prefix: str = "nora_mmlu") -> str:
    """Write ``benchmark`` as an lm-eval task tree (JSONL + YAML, MMLU's template) into ``folder``; return the top group name.

    One task per subject (``{prefix}_{subject}``, dev/test splits, ``first_n`` few-shot sampler,
    MMLU's ``doc_to_text`` and description), one group per category (``{prefix}_{stem|...}``) and a
    top group ``prefix``, all micro-averaged (``weight_by_size``) as lm-eval's ``mmlu`` is.
    """
    import yaml

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    template = {
        "test_split": "test", "fewshot_split": "dev", "fewshot_config": {"sampler": "first_n"},
        "output_type": "multiple_choice",
        "doc_to_text": "{{question.strip()}}\nA. {{choices[0]}}\nB. {{choices[1]}}\nC. {{choices[2]}}\nD. {{choices[3]}}\nAnswer:",
        "doc_to_choice": ["A", "B", "C", "D"], "doc_to_target": "answer",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "metadata": {"version": 1.0},
    }
    by_category: dict[str, list[str]] = defaultdict(list)
    for subject in benchmark.test:
        files = {}
        for split, questions in (("dev", benchmark.dev[subject]), ("test", benchmark.test[subject])):
            path = (folder / f"{subject}_{split}.jsonl").resolve()
            path.write_text("".join(json.dumps(q.as_record()) + "\n" for q in questions))
            files[split] = str(path)
        name = f"{prefix}_{subject}"
        task = {"task": name, "dataset_path": "json", "dataset_kwargs": {"data_files": files},
                "description": HEADER.format(subject=format_subject(subject)), **template}
        (folder / f"{name}.yaml").write_text(yaml.safe_dump(task, sort_keys=False))
        by_category[benchmark.categories[subject]].append(name)
    agg = [{"metric": "acc", "weight_by_size": True}]
    groups = []
    for category in CATEGORIES:
        if by_category[category]:
            group = f"{prefix}_{LM_EVAL_GROUPS[category]}"
            (folder / f"_{group}.yaml").write_text(yaml.safe_dump(
                {"group": group, "task": by_category[category], "aggregate_metric_list": agg, "metadata": {"version": 1}}, sort_keys=False))
            groups.append(group)
    (folder / f"_{prefix}.yaml").write_text(yaml.safe_dump(
        {"group": prefix, "task": groups, "aggregate_metric_list": agg, "metadata": {"version": 1}}, sort_keys=False))
    return prefix


def _offline_env():
    import os

    for key in ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE"):
        os.environ.setdefault(key, "1")


class _quiet:
    """No progress bars from datasets / lm-eval while lm-eval runs (tqdm writes them to stderr)."""

    def __enter__(self):
        import contextlib
        import io

        import datasets

        self._bars = datasets.utils.logging.is_progress_bar_enabled()
        datasets.disable_progress_bars()
        self._redirect = contextlib.redirect_stderr(io.StringIO())
        self._redirect.__enter__()

    def __exit__(self, *exc):
        import datasets

        self._redirect.__exit__(*exc)
        if self._bars:
            datasets.enable_progress_bars()


def lm_eval_prompts(folder: str | Path, task: str, num_fewshot: int = 5) -> list[tuple[str, str]]:
    """The (context, continuation) pairs lm-eval builds for a local task, in document order (4 per question)."""
    from lm_eval.tasks import TaskManager

    _offline_env()
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    with _quiet():
        task_obj = manager.load([task])["tasks"][task]
        task_obj.set_config(key="num_fewshot", value=num_fewshot)
        task_obj.build_all_requests(rank=0, world_size=1)
    instances = sorted(task_obj.instances, key=lambda inst: (inst.doc_id, inst.idx))
    return [tuple(inst.args) for inst in instances]


def lm_eval_score(model, tokenizer, tasks: str = "mmlu", include_path: str | Path | None = None,
                  num_fewshot: int = 5, batch_size: int = 16, limit: int | None = None) -> dict[str, float]:
    """Run lm-eval (``HFLM`` around the in-memory model) and return the four category accuracies and the average (percent).

    ``tasks="mmlu"`` is lm-eval's own task (downloads ``cais/mmlu``: paper profile only);
    ``include_path`` points at a folder from ``write_lm_eval_task`` (offline).
    """
    import lm_eval
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    if include_path is not None:
        _offline_env()
    manager = TaskManager(include_path=str(include_path), include_defaults=False) if include_path is not None else TaskManager()
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=getattr(model.config, "max_position_embeddings", None))
    with _quiet():
        out = lm_eval.simple_evaluate(model=lm, tasks=[tasks], num_fewshot=num_fewshot, task_manager=manager, limit=limit,
                                      log_samples=False, bootstrap_iters=0, verbosity="ERROR")
    results = out["results"]
    row = {}
    for category, group in LM_EVAL_GROUPS.items():
        key = f"{tasks}_{group}"
        if key in results:
            row[category] = 100.0 * float(results[key]["acc,none"])
    row["Average"] = 100.0 * float(results[tasks]["acc,none"])
    return row


def lm_eval_category_map() -> dict[str, str]:
    """Subject -> category for lm-eval's 57 ``mmlu`` subjects, read from lm-eval's own task files."""
    import lm_eval
    import yaml

    folder = Path(lm_eval.__file__).parent / "tasks" / "mmlu" / "default"
    tags = {f"mmlu_{g}_tasks": c for c, g in LM_EVAL_GROUPS.items()}
    out = {}
    for path in sorted(folder.glob("mmlu_*.yaml")):
        spec = yaml.safe_load(path.read_text())
        out[spec["dataset_name"]] = tags[spec["tag"]]
    return out


def benchmark_from_records(rows: Sequence[dict], dev_rows: Sequence[dict], categories: dict[str, str]) -> Benchmark:
    """A ``Benchmark`` from ``cais/mmlu``-layout rows (question, subject, choices, answer), e.g. ``load_dataset("cais/mmlu", "all")``."""
    def questions(records):
        out: dict[str, list[Question]] = defaultdict(list)
        for r in records:
            subject = r["subject"]
            if subject not in categories:
                raise ValueError(f"subject {subject!r} has no category")
            choices = tuple(r["choices"])
            if len(choices) != 4 or not isinstance(r["answer"], int) or not 0 <= r["answer"] < 4:
                raise ValueError(f"row of {subject!r} needs 4 choices and an answer in 0..3, got {r!r}")
            out[subject].append(Question(subject, categories[subject], r["question"], choices, r["answer"]))  # type: ignore[arg-type]
        return dict(out)

    test, dev = questions(rows), questions(dev_rows)
    missing = sorted(s for s in test if len(dev.get(s, [])) < 5)
    if missing:
        raise ValueError(f"subjects without five dev examples: {missing}")
    return Benchmark(dev=dev, test=test, categories={s: categories[s] for s in test})


def chance_level(benchmark: Benchmark) -> float:
    """Accuracy of always answering the most common letter of the test set (25 % for balanced letters)."""
    counts = defaultdict(int)
    for qs in benchmark.test.values():
        for q in qs:
            counts[q.answer] += 1
    return 100.0 * max(counts.values()) / len(benchmark) if counts else math.nan
