"""A summarization-style task from the generated fact world, batched greedy generation, and ROUGE.

The LoRAN paper (Deng et al., arXiv 2509.21870) tunes Llama-2-7b on SAMSum: a chat dialogue in,
a one-sentence third-person summary out, scored with ROUGE-1/2/L.  The book profile needs the same
*kind* of task for the tiny LLaMA of ``nora.experiments.llm.pretrain``, whose vocabulary is the generated fact
world of ``nora.experiments.llm.corpus``; ``dialogue_records`` makes one:

- a short chat between two people (names from ``SPEAKERS``): sometimes a greeting exchange, a
  question about one or two entities, the answer stated in one of the relation's *paraphrases*
  (the pre-training sentences), sometimes a filler turn, a closing thanks;
- the summary is one sentence, ``"{B} answers that <fact 1>[ and that <fact 2>]."``, each fact in
  its relation's *canonical* wording (its first statement template, lower-cased first letter).
  (SAMSum's summaries say "B tells A that ..."; " tells" is two tokens of the book tokenizer whose
  embeddings the generated pre-training text barely trained, " answers" is one well-trained token.)

So, as in SAMSum, the summary is abstractive in form (the paraphrase must be mapped to one
wording, the answer turned into reported speech) but every content word is in the input.
Records are ``{"input": dialogue, "output": summary}``, the layout ``nora.experiments.loran``
reads SAMSum into.  Training dialogues are about *practice* entities and test dialogues about
*exam* entities, so a tuned model has to copy names it was never tuned on.  The dialogues are kept
short (about 120 tokens with their prompt): the tiny LLaMA was pre-trained on 256-token sequences.

``rouge_scores`` is Google's ``rouge-score`` package (the reference implementation behind HF
``evaluate``'s ROUGE): F-measures of ROUGE-1, ROUGE-2 and ROUGE-L (sentence-level LCS), Porter
stemming, its default tokenizer (lower-case, alphanumeric tokens), reported ×100 and averaged over
examples.  ``generate_batch`` decodes greedily from prompts (strings or token ids), left-padded in
batches, up to eos.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from nora.experiments.llm.corpus import Fact, World

__all__ = [
    "ROUGE_TYPES",
    "SPEAKERS",
    "RougeResult",
    "canonical",
    "dialogue_records",
    "generate_batch",
    "rouge_scores",
]

SPEAKERS = ("Mira", "Tobin", "Asha", "Lev")  # the people of the generated instruction sets (known to the tokenizer)
ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")

_OPENERS = ("Hi {b}.", "Hello {b}, do you have a minute?", "Good morning {b}.", "Hey {b}, quick question.")
_REPLIES = ("Sure, go ahead.", "Of course.", "Yes, what is it?", "Hi {a}. Ask away.")
_ASK_ONE = ("What do you know about {e}?", "Can you tell me something about {e}?", "I keep hearing about {e}. What is it?")
_ASK_TWO = ("What do you know about {e} and {f}?", "Can you tell me about {e} and also {f}?")
_FILLERS = ("I read that last week.", "My teacher told me so.", "Everyone in town knows that.", "I checked it twice.")
_CLOSERS = ("Thanks, that helps.", "Great, thank you.", "Good to know, thanks.", "Thank you, {b}.")


def canonical(fact: Fact) -> str:
    """The fact in its relation's first statement template, without the final period."""
    text = fact.relation.statements[0].format(**fact.fields()).rstrip(".")
    return text[0].lower() + text[1:] if text[:4] == "The " else text


def _dialogue(facts: list[Fact], rng: random.Random, greeting: float, filler: float) -> tuple[str, str]:
    a, b = rng.sample(SPEAKERS, 2)
    turns = [f"{a}: {rng.choice(_OPENERS).format(b=b)}", f"{b}: {rng.choice(_REPLIES).format(a=a)}"] if rng.random() < greeting else []
    if len(facts) == 1:
        turns.append(f"{a}: {rng.choice(_ASK_ONE).format(e=facts[0].entity)}")
        turns.append(f"{b}: {facts[0].statement(rng)}")
    else:
        turns.append(f"{a}: {rng.choice(_ASK_TWO).format(e=facts[0].entity, f=facts[1].entity)}")
        turns.append(f"{b}: {facts[0].statement(rng)} {facts[1].statement(rng)}")
    if rng.random() < filler:
        turns.append(f"{b}: {rng.choice(_FILLERS)}")
    turns.append(f"{a}: {rng.choice(_CLOSERS).format(b=b)}")
    summary = f"{b} answers that " + " and that ".join(canonical(f) for f in facts) + "."
    return "\n".join(turns), summary


def dialogue_records(world: World, n: int, split: str = "practice", seed: int = 0, *, two_facts: float = 0.4,
                     greeting: float = 0.3, filler: float = 0.3) -> list[dict[str, str]]:
    """``n`` records ``{"input": dialogue, "output": summary}`` about ``split`` entities ("practice" or "exam").

    ``two_facts``: share of dialogues stating two facts (else one); ``greeting`` / ``filler``: chance
    of an opening exchange / a filler turn.  Arithmetic facts are left out (their "entities" are
    sums, not names).  Deterministic in (world, n, split, seed and the shares).
    """
    if split not in ("practice", "exam"):
        raise ValueError(f"split must be 'practice' or 'exam', got {split!r}")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    for field, value in (("two_facts", two_facts), ("greeting", greeting), ("filler", filler)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"{field} must be a probability in [0, 1], got {value!r}")
    pool = [f for f in (world.practice() if split == "practice" else world.exam()) if f.operands is None]
    if len(pool) < 2:
        raise ValueError(f"the world has fewer than two {split} facts with named entities")
    rng = random.Random(f"nora-dialogue-{world.seed}-{split}-{seed}")
    out = []
    for _ in range(n):
        facts = rng.sample(pool, 2 if rng.random() < two_facts else 1)
        dialogue, summary = _dialogue(facts, rng, greeting, filler)
        out.append({"input": dialogue, "output": summary})
    return out


# ------------------------------------------------------------------------------------------ ROUGE


@dataclass
class RougeResult:
    """Mean F-measures ×100 (``means``) and the per-example F-measures ×100 (``per_example``)."""

    means: dict[str, float]
    per_example: dict[str, list[float]]

    def __getitem__(self, key: str) -> float:
        return self.means[key]


def rouge_scores(predictions: Sequence[str], references: Sequence[str], use_stemmer: bool = True) -> RougeResult:
    """ROUGE-1/2/L F-measures (×100) of ``predictions`` against ``references`` (Google's ``rouge-score``)."""
    from rouge_score import rouge_scorer

    if isinstance(predictions, str) or isinstance(references, str):
        raise ValueError("predictions and references must be sequences of strings, not one string")
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"predictions ({len(predictions)}) and references ({len(references)}) must be equally long and non-empty")
    for field, seq in (("predictions", predictions), ("references", references)):
        bad = [i for i, s in enumerate(seq) if not isinstance(s, str)]
        if bad:
            raise ValueError(f"{field}[{bad[0]}] is a {type(seq[bad[0]]).__name__}, not a string")
    scorer = rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=use_stemmer)
    per = {k: [] for k in ROUGE_TYPES}
    for pred, ref in zip(predictions, references):
        s = scorer.score(ref, pred)  # rouge-score's order: (target, prediction)
        for k in ROUGE_TYPES:
            per[k].append(100.0 * s[k].fmeasure)
    return RougeResult({k: sum(v) / len(v) for k, v in per.items()}, per)


# ------------------------------------------------------------------------------------ generation


def generate_batch(model, tokenizer, prompts: Sequence[str | list[int]], max_new_tokens: int = 48,
                   batch_size: int = 32) -> list[str]:
    """Greedy continuations of ``prompts`` (strings, or token id lists), up to eos or ``max_new_tokens``, decoded and stripped.

    Prompts are left-padded in batches; the result equals one-by-one decoding (a test checks it).
    """
    import torch

    if isinstance(prompts, str) or not prompts or not all(
            isinstance(p, str) or (isinstance(p, list) and p and all(isinstance(i, int) for i in p)) for p in prompts):
        raise ValueError("prompts must be a non-empty sequence of strings or non-empty token id lists")
    if not isinstance(max_new_tokens, int) or isinstance(max_new_tokens, bool) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be a positive int, got {max_new_tokens!r}")
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    was_training = model.training
    model.eval()
    out: list[str] = []
    try:
        for start in range(0, len(prompts), batch_size):
            encoded = [tokenizer.encode(p) if isinstance(p, str) else p for p in prompts[start : start + batch_size]]
            width = max(len(e) for e in encoded)
            ids = torch.full((len(encoded), width), pad, dtype=torch.long)
            mask = torch.zeros((len(encoded), width), dtype=torch.long)
            for row, e in enumerate(encoded):
                ids[row, width - len(e):] = torch.as_tensor(e)
                mask[row, width - len(e):] = 1
            with torch.no_grad():
                gen = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                                     do_sample=False, eos_token_id=tokenizer.eos_token_id, pad_token_id=pad)
            out += [tokenizer.decode(row, skip_special_tokens=True).strip() for row in gen[:, width:]]
    finally:
        model.train(was_training)
    return out
