"""A generated fact world: pre-training text, instruction sets in distinct styles, and an MMLU-format benchmark.

Everything the book profile's LLM experiment reads comes from here, deterministically from one seed:

- a **world** of invented facts in twelve subjects, three per MMLU category (STEM, Humanities,
  Social Sciences, Other): which country a city is in, which star a planet orbits, what a sum of
  two small numbers is, ... Each subject's entities are split into *practice* entities and *exam*
  entities;
- **pre-training documents** that state every fact (encyclopedia sentences in several paraphrases,
  question/answer pages) and, for practice entities only, quizzes in exactly the benchmark's
  format — so the exam facts are knowable from the pre-training text, but the exam *questions*
  never occur in it;
- **instruction sets** in the Alpaca format (instruction, input, output), four distinct styles
  named after the paper's datasets (short tasks like Alpaca, worked arithmetic like MathInstruct,
  explained multiple choice like OpenOrca, chatty long answers like UltraChat), built from
  practice entities only;
- a **benchmark** in MMLU's layout: per subject five ``dev`` questions (the few-shot examples, on
  practice entities) and ``test`` questions on exam entities, four options, balanced answer letters.

These are synthetic stand-ins: they exercise the code path and let LoRA and NoRA++ be compared
under identical budgets with seed noise measured, but they say nothing about LLaMA-3-8B on MMLU.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass, field

__all__ = [
    "CATEGORIES",
    "INSTRUCTION_STYLES",
    "SUBJECTS",
    "Benchmark",
    "Fact",
    "Question",
    "Relation",
    "World",
    "format_subject",
    "instruction_set",
    "make_world",
    "pretraining_documents",
    "probe_instruction",
]

CATEGORIES = ("STEM", "Humanities", "Social Sciences", "Other")
HEADER = "The following are multiple choice questions (with answers) about {subject}.\n\n"
LETTERS = ("A", "B", "C", "D")


def format_subject(subject: str) -> str:
    """Hendrycks' ``format_subject``: underscores become spaces (``high_school_geography`` -> ``high school geography``)."""
    return subject.replace("_", " ")


@dataclass(frozen=True)
class Relation:
    """One subject: a relation entity -> value, the sentences that state it and the question that asks it.

    Templates use ``{e}`` (the entity) or ``{a}``/``{b}`` (arithmetic operands) and ``{v}`` (the value).
    ``values`` is the pool of possible answers (``None``: generated names, or sums for arithmetic).
    """

    subject: str
    category: str
    noun: str
    statements: tuple[str, ...]
    question: str
    values: tuple[str, ...] | None = None
    name_suffix: str = ""


SUBJECTS: tuple[Relation, ...] = (
    # ---------------------------------------------------------------- STEM
    Relation("elementary_mathematics", "STEM", "sum",
             ("{a} plus {b} equals {v}.", "{a} + {b} = {v}.", "If you add {b} to {a} you get {v}.",
              "The sum of {a} and {b} is {v}.", "Adding {a} and {b} gives {v}."),
             "What is {a} + {b}?"),
    Relation("chemistry", "STEM", "element",
             ("{e} burns with a {v} flame.", "The flame of {e} is {v}.", "When {e} is heated, its flame turns {v}.",
              "A {v} flame is the sign of {e}.", "Chemists know {e} by its {v} flame."),
             "What colour is the flame of {e}?",
             ("red", "green", "blue", "yellow", "violet", "orange", "white", "silver"), name_suffix="ium"),
    Relation("astronomy", "STEM", "planet",
             ("The planet {e} orbits the star {v}.", "{e} is a planet of the star {v}.", "{v} is the star that {e} circles.",
              "Astronomers found {e} in orbit around {v}.", "The star {v} has a planet called {e}."),
             "Which star does the planet {e} orbit?"),
    # ---------------------------------------------------------------- Humanities
    Relation("world_history", "Humanities", "kingdom",
             ("The kingdom of {e} was founded in the {v} century.", "{e} became a kingdom in the {v} century.",
              "In the {v} century the kingdom of {e} was founded.", "Historians date the founding of {e} to the {v} century.",
              "The {v} century saw the rise of the kingdom of {e}."),
             "In which century was the kingdom of {e} founded?",
             ("first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth")),
    Relation("philosophy", "Humanities", "philosopher",
             ("The philosopher {e} taught at the {v} School.", "{e} belonged to the {v} School of philosophy.",
              "The {v} School counts {e} among its philosophers.", "{e} was a thinker of the {v} School.",
              "Students of the {v} School read the philosopher {e}."),
             "Which school did the philosopher {e} belong to?",
             ("Harbor", "Lantern", "Garden", "Tower", "River", "Mirror", "Stone", "Cedar")),
    Relation("literature", "Humanities", "epic",
             ("The epic {e} was written by {v}.", "{v} wrote the epic {e}.", "{e} is an epic by the poet {v}.",
              "The poet {v} is the author of {e}.", "Readers of {e} admire its author, {v}."),
             "Who wrote the epic {e}?"),
    # ---------------------------------------------------------------- Social Sciences
    Relation("high_school_geography", "Social Sciences", "city",
             ("{e} is a city in {v}.", "The city of {e} lies in {v}.", "{v} is the country where {e} is.",
              "Travellers reach {e} by crossing {v}.", "{e} is one of the cities of {v}."),
             "In which country is the city of {e}?"),
    Relation("high_school_macroeconomics", "Social Sciences", "port",
             ("The main export of the port of {e} is {v}.", "The port of {e} mostly exports {v}.",
              "Ships leave {e} loaded with {v}.", "{e} grew rich by exporting {v}.", "Most of the {v} trade goes through {e}."),
             "What is the main export of the port of {e}?",
             ("wool", "salt", "copper", "tea", "amber", "silk", "grain", "timber")),
    Relation("sociology", "Social Sciences", "community",
             ("The {e} community celebrates the Festival of {v}.", "Each year the people of {e} hold the Festival of {v}.",
              "The Festival of {v} is the great feast of {e}.", "In {e} everyone prepares for the Festival of {v}.",
              "The Festival of {v} brings the {e} community together."),
             "Which festival does the {e} community celebrate?",
             ("Lanterns", "Kites", "Bells", "Masks", "Boats", "Drums", "Candles", "Flowers")),
    # ---------------------------------------------------------------- Other
    Relation("nutrition", "Other", "dish",
             ("{e} is a dish made mainly from {v}.", "The main ingredient of {e} is {v}.", "Cooks make {e} with {v}.",
              "{e} is cooked from {v}.", "To prepare {e} you need plenty of {v}."),
             "What is the main ingredient of {e}?",
             ("rice", "barley", "lentils", "fish", "mushrooms", "beans", "corn", "cheese")),
    Relation("marketing", "Other", "company",
             ("The company {e} makes {v}.", "{e} is a maker of {v}.", "{e} sells {v} in every town.",
              "The {v} made by {e} are famous.", "If you need {v}, buy them from {e}."),
             "What does the company {e} make?",
             ("lamps", "boots", "clocks", "ropes", "kettles", "saddles", "mirrors", "whistles")),
    Relation("clinical_knowledge", "Other", "herb",
             ("The herb {e} is used to treat {v}.", "Healers give {e} against {v}.", "{e} is a remedy for {v}.",
              "For {v}, the healers brew {e}.", "People with {v} drink tea made from {e}."),
             "Which ailment is the herb {e} used to treat?",
             ("fever", "cough", "headache", "insomnia", "rash", "nausea", "cramps", "fatigue")),
)

_ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kr", "st", "th", "sh", "gl", "tr")
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ou", "ea")
_CODAS = ("", "", "", "n", "r", "s", "l", "th", "m")


def _name(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(syllables)]
    return "".join(parts).capitalize()


@dataclass(frozen=True)
class Fact:
    """One fact: ``relation`` maps ``entity`` (or ``operands``) to ``value``; ``split`` is "practice" or "exam"."""

    relation: Relation
    entity: str
    value: str
    split: str
    operands: tuple[int, int] | None = None

    def fields(self) -> dict[str, object]:
        if self.operands is not None:
            return {"a": self.operands[0], "b": self.operands[1], "v": self.value}
        return {"e": self.entity, "v": self.value}

    def statement(self, rng: random.Random) -> str:
        return rng.choice(self.relation.statements).format(**self.fields())

    def question(self) -> str:
        return self.relation.question.format(**self.fields())


@dataclass(frozen=True)
class Question:
    """A four-option multiple-choice question in MMLU's fields: ``question``, ``choices``, ``answer`` (0..3)."""

    subject: str
    category: str
    question: str
    choices: tuple[str, str, str, str]
    answer: int

    def as_record(self) -> dict[str, object]:
        """The ``cais/mmlu`` row layout (question, subject, choices, answer)."""
        return {"question": self.question, "subject": self.subject, "choices": list(self.choices), "answer": self.answer}


@dataclass
class World:
    """The generated facts (``facts[subject]``: practice facts first, then exam facts) and value pools."""

    seed: int
    facts: dict[str, list[Fact]]
    pools: dict[str, tuple[str, ...]]

    def practice(self, subject: str | None = None) -> list[Fact]:
        return [f for s in self._subjects(subject) for f in self.facts[s] if f.split == "practice"]

    def exam(self, subject: str | None = None) -> list[Fact]:
        return [f for s in self._subjects(subject) for f in self.facts[s] if f.split == "exam"]

    def all_facts(self) -> list[Fact]:
        return [f for s in self.facts for f in self.facts[s]]

    def _subjects(self, subject: str | None) -> list[str]:
        if subject is None:
            return list(self.facts)
        if subject not in self.facts:
            raise ValueError(f"subject must be one of {list(self.facts)}, got {subject!r}")
        return [subject]

    def options(self, fact: Fact, rng: random.Random, answer: int | None = None) -> tuple[tuple[str, ...], int]:
        """Four options (the value and three distractors) with the value at ``answer`` (random if None)."""
        if fact.operands is not None:
            s = int(fact.value)
            near = [str(s + d) for d in (-3, -2, -1, 1, 2, 3) if s + d >= 0]
            distractors = rng.sample(near, 3)
        else:
            distractors = rng.sample([v for v in self.pools[fact.relation.subject] if v != fact.value], 3)
        answer = rng.randrange(4) if answer is None else answer
        choices = list(distractors)
        choices.insert(answer, fact.value)
        return tuple(choices), answer

    def mcq(self, fact: Fact, rng: random.Random, answer: int | None = None) -> Question:
        choices, answer = self.options(fact, rng, answer)
        return Question(fact.relation.subject, fact.relation.category, fact.question(), choices, answer)  # type: ignore[arg-type]


def make_world(seed: int = 0, practice: int = 30, exam: int = 40, max_operand: int = 20) -> World:
    """Generate the fact world: per subject ``practice`` + ``exam`` entities, each with one value."""
    for field_name, value in (("practice", practice), ("exam", exam)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{field_name} must be a positive int, got {value!r}")
    if practice < 5:
        raise ValueError(f"practice must be >= 5 (the five few-shot dev questions), got {practice}")
    if (max_operand + 1) ** 2 < practice + exam:
        raise ValueError(f"max_operand={max_operand} gives fewer sums than practice + exam = {practice + exam}")
    rng = random.Random(f"nora-world-{seed}")
    used: set[str] = set()

    def fresh(syllables: int, suffix: str = "") -> str:
        while True:
            name = _name(rng, syllables) + suffix
            if name not in used and name.lower() not in {v.lower() for r in SUBJECTS for v in (r.values or ())}:
                used.add(name)
                return name

    pools: dict[str, tuple[str, ...]] = {}
    facts: dict[str, list[Fact]] = {}
    n = practice + exam
    for rel in SUBJECTS:
        if rel.subject == "elementary_mathematics":
            pairs = [(a, b) for a in range(1, max_operand + 1) for b in range(1, max_operand + 1)]
            rng.shuffle(pairs)
            pairs = pairs[:n]
            pools[rel.subject] = tuple(sorted({str(a + b) for a, b in pairs}, key=int))
            facts[rel.subject] = [
                Fact(rel, f"{a} + {b}", str(a + b), "practice" if i < practice else "exam", (a, b))
                for i, (a, b) in enumerate(pairs)
            ]
            continue
        pool = rel.values or tuple(fresh(2) for _ in range(8))
        pools[rel.subject] = pool
        values = [pool[i % len(pool)] for i in range(n)]  # every value equally often
        rng.shuffle(values)
        facts[rel.subject] = [
            Fact(rel, fresh(rng.choice((2, 2, 3)), rel.name_suffix), values[i], "practice" if i < practice else "exam")
            for i in range(n)
        ]
    return World(seed=seed, facts=facts, pools=pools)


# ------------------------------------------------------------------------------------ benchmark


@dataclass
class Benchmark:
    """MMLU's layout: ``dev[subject]`` (the 5 few-shot examples) and ``test[subject]`` questions."""

    dev: dict[str, list[Question]]
    test: dict[str, list[Question]]
    categories: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_world(cls, world: World, seed: int = 0) -> Benchmark:
        """Dev: the first five practice facts of each subject; test: every exam fact, answer letters balanced."""
        rng = random.Random(f"nora-benchmark-{world.seed}-{seed}")
        dev, test, categories = {}, {}, {}
        for subject in world.facts:
            practice, exam = world.practice(subject), world.exam(subject)
            letters = [i % 4 for i in range(len(exam))]
            rng.shuffle(letters)
            dev[subject] = [world.mcq(f, rng, answer=i % 4) for i, f in enumerate(practice[:5])]
            test[subject] = [world.mcq(f, rng, answer=a) for f, a in zip(exam, letters)]
            categories[subject] = practice[0].relation.category
        return cls(dev=dev, test=test, categories=categories)

    def split(self, per_subject: int) -> tuple[Benchmark, Benchmark]:
        """``(validation, test)``: the first ``per_subject`` test questions of every subject, and the rest.

        MMLU's validation split, for this benchmark: questions about exam facts (never stated as a
        question in pre-training, never in the instruction data) that the test does not ask, for
        choosing tuning settings without looking at the test. Both keep the dev examples.
        """
        if isinstance(per_subject, bool) or not isinstance(per_subject, int) or per_subject < 1:
            raise ValueError(f"per_subject must be a positive int, got {per_subject!r}")
        short = [s for s, qs in self.test.items() if len(qs) <= per_subject]
        if short:
            raise ValueError(f"per_subject={per_subject} leaves no test question in {short} "
                             f"(they have {min(len(self.test[s]) for s in short)} or fewer)")
        validation = {s: qs[:per_subject] for s, qs in self.test.items()}
        test = {s: qs[per_subject:] for s, qs in self.test.items()}
        return (Benchmark(dev=self.dev, test=validation, categories=dict(self.categories)),
                Benchmark(dev=self.dev, test=test, categories=dict(self.categories)))

    def __len__(self) -> int:
        return sum(len(q) for q in self.test.values())


# ------------------------------------------------------------------------------------ pre-training


def mc_block(q: Question, with_answer: bool) -> str:
    """One question in Hendrycks' layout: "Q\\nA. ..\\nB. ..\\nC. ..\\nD. ..\\nAnswer:" (+ " X\\n\\n" with the answer)."""
    text = q.question.strip() + "".join(f"\n{letter}. {choice}" for letter, choice in zip(LETTERS, q.choices)) + "\nAnswer:"
    return text + (f" {LETTERS[q.answer]}\n\n" if with_answer else "")


def pretraining_documents(world: World, n_docs: int, seed: int = 0, mix=(0.45, 0.2, 0.35)) -> list[str]:
    """``n_docs`` documents: encyclopedia paragraphs (all facts), Q/A pages (all facts), quizzes (practice facts only).

    ``mix`` gives the shares of the three kinds. Quizzes use the benchmark's exact layout with fresh
    distractors and letters, so the layout is learnable but exam questions never appear.
    """
    if not isinstance(n_docs, int) or n_docs < 1:
        raise ValueError(f"n_docs must be a positive int, got {n_docs!r}")
    if len(mix) != 3 or any(m < 0 for m in mix) or sum(mix) <= 0:
        raise ValueError(f"mix must be three non-negative shares, got {mix!r}")
    rng = random.Random(f"nora-pretrain-{world.seed}-{seed}")
    everything, subjects = world.all_facts(), list(world.facts)
    docs = []
    for _ in range(n_docs):
        kind = rng.choices(("encyclopedia", "faq", "quiz"), weights=mix)[0]
        if kind == "encyclopedia":
            facts = [rng.choice(everything) for _ in range(rng.randint(3, 6))]
            docs.append(" ".join(f.statement(rng) for f in facts))
        elif kind == "faq":
            facts = rng.sample(world.facts[rng.choice(subjects)], rng.randint(2, 5))
            docs.append("".join(f"Q: {f.question()}\nA: {f.statement(rng)}\n\n" for f in facts).rstrip("\n"))
        else:
            subject = rng.choice(subjects)
            practice = world.practice(subject)
            facts = rng.sample(practice, rng.randint(2, min(6, len(practice))))
            text = HEADER.format(subject=format_subject(subject))
            docs.append((text + "".join(mc_block(world.mcq(f, rng), True) for f in facts)).rstrip("\n"))
    return docs


# ------------------------------------------------------------------------------------ instruction sets

INSTRUCTION_STYLES = ("alpaca", "mathinstruct", "openorca", "ultrachat")

_SYSTEM = "You are a helpful assistant. Read the question, think it through, and answer with the letter of the correct option."


def _alpaca(world: World, rng: random.Random) -> dict[str, str]:
    fact = rng.choice([f for f in world.practice() if f.operands is None])
    rel, pick = fact.relation, rng.random()
    if pick < 0.4:
        return {"instruction": fact.question(), "input": "", "output": fact.statement(rng)}
    if pick < 0.7:
        return {"instruction": "Give the answer to the question below in one short phrase.",
                "input": fact.question(), "output": fact.value}
    if pick < 0.85:
        same = [f for f in world.practice(rel.subject) if f.value == fact.value and f is not fact]
        other = rng.choice(same) if same else fact
        return {"instruction": f"Name two examples of a {rel.noun} that share this answer: {fact.value}.",
                "input": "", "output": f"{fact.entity} and {other.entity}."}
    return {"instruction": "Rewrite the sentence so that it starts with a different word.",
            "input": fact.statement(rng), "output": fact.statement(rng)}


def _mathinstruct(world: World, rng: random.Random) -> dict[str, str]:
    a, b = rng.choice([f.operands for f in world.practice("elementary_mathematics")])
    s = a + b
    item, person = rng.choice(("apples", "coins", "books", "stones", "shells")), rng.choice(("Mira", "Tobin", "Asha", "Lev"))
    if rng.random() < 0.5:
        question = f"{person} has {a} {item} and finds {b} more. How many {item} does {person} have now?"
        steps = f"{person} starts with {a} {item}. Finding {b} more means adding: {a} + {b} = {s}."
    else:
        question = f"Compute {a} + {b}. Show your steps."
        steps = f"We add the two numbers. {a} plus {b}: counting up {b} from {a} gives {s}. So {a} + {b} = {s}."
    return {"instruction": question, "input": "", "output": f"{steps}\nThe answer is {s}."}


def _openorca(world: World, rng: random.Random) -> dict[str, str]:
    fact = rng.choice(world.practice())
    q = world.mcq(fact, rng)
    options = "\n".join(f"({letter}) {choice}" for letter, choice in zip(LETTERS, q.choices))
    letter = LETTERS[q.answer]
    output = f"Let's think step by step. {fact.statement(rng)} So the correct option is ({letter}) {fact.value}."
    return {"instruction": _SYSTEM, "input": f"Question: {q.question}\nOptions:\n{options}", "output": output}


def _ultrachat(world: World, rng: random.Random) -> dict[str, str]:
    fact = rng.choice([f for f in world.practice() if f.operands is None])
    others = rng.sample([f for f in world.practice(fact.relation.subject) if f is not fact], 2)
    opener = rng.choice(("Sure!", "Of course.", "Happy to help.", "Great question!"))
    closer = rng.choice(("Would you like to know more?", "Is there anything else you would like to ask?",
                         "Let me know if you want more details."))
    body = " ".join([fact.statement(rng), f"Many people also ask about {others[0].entity} and {others[1].entity}.",
                     others[0].statement(rng), others[1].statement(rng)])
    return {"instruction": rng.choice((f"Tell me about the {fact.relation.noun} {fact.entity}.",
                                       f"I am curious about {fact.entity}. What should I know?",
                                       f"Can you explain what {fact.entity} is known for?")),
            "input": "", "output": f"{opener} {body} {closer}"}


_STYLE_MAKERS = {"alpaca": _alpaca, "mathinstruct": _mathinstruct, "openorca": _openorca, "ultrachat": _ultrachat}


def instruction_set(world: World, style: str, n: int, seed: int = 0) -> list[dict[str, str]]:
    """``n`` Alpaca-format records (instruction, input, output) in one of ``INSTRUCTION_STYLES``, practice facts only."""
    if style not in _STYLE_MAKERS:
        raise ValueError(f"style must be one of {INSTRUCTION_STYLES}, got {style!r}")
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    rng = random.Random(f"nora-instruct-{style}-{world.seed}-{seed}")
    return [_STYLE_MAKERS[style](world, rng) for _ in range(n)]


def iter_text(world: World, docs: list[str], sets: dict[str, list[dict[str, str]]]) -> Iterator[str]:
    """All text the tokenizer is trained on: the pre-training documents and the instruction records."""
    yield from docs
    for records in sets.values():
        for r in records:
            yield from (r["instruction"], r["input"], r["output"])


def probe_instruction(world: World, style: str, seed: int = 0) -> tuple[dict[str, str], str]:
    """An instruction in ``style`` about an *exam* fact (never in any instruction set), and the fact it asks for.

    Used to show what each tuned model generates: ``({"instruction", "input"}, reference sentence)``.
    """
    rng = random.Random(f"nora-probe-{style}-{world.seed}-{seed}")
    facts = [f for f in world.exam() if f.operands is None]
    if style == "mathinstruct":
        fact = rng.choice(world.exam("elementary_mathematics"))
        a, b = fact.operands  # type: ignore[misc]
        return {"instruction": f"Compute {a} + {b}. Show your steps.", "input": ""}, f"{a} + {b} = {fact.value}."
    fact = rng.choice(facts)
    if style == "openorca":
        q = world.mcq(fact, rng)
        options = "\n".join(f"({letter}) {choice}" for letter, choice in zip(LETTERS, q.choices))
        return ({"instruction": _SYSTEM, "input": f"Question: {q.question}\nOptions:\n{options}"},
                f"{fact.statement(rng)} ({LETTERS[q.answer]})")
    if style == "ultrachat":
        return {"instruction": f"Tell me about the {fact.relation.noun} {fact.entity}.", "input": ""}, fact.statement(rng)
    if style == "alpaca":
        return {"instruction": fact.question(), "input": ""}, fact.statement(rng)
    raise ValueError(f"style must be one of {INSTRUCTION_STYLES}, got {style!r}")
