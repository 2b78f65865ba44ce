# ruff: noqa: E501  (one template per line reads better than wrapped f-strings)
"""The six nli6 tasks: seeded generators of sentence pairs that mirror six NLI benchmarks.

Each task mirrors one of the TARA / KnOTS paper's six NLI tasks in format and label set:

========  =========  ==========================================================================
task      analogue   what decides the label
========  =========  ==========================================================================
mnli      MNLI       four genres (government figures, fiction, telephone, travel): quantity
                     bounds, who felt what, speaker vs relative habits, seasons and entry fees
qnli      QNLI       question / sentence: does the sentence answer the question (right slot,
                     right person, right place)?
snli      SNLI       scene captions: hypernyms and kept details entail; a sibling object, the
                     other kind of place, another colour or an exclusive posture contradict
rte       RTE        company news: who bought whom, who replaced whom, who founded what where
sick      SICK       short sentences: synonyms entail, negation on exactly one side contradicts,
                     a different object or subject is neutral
scitail   SciTail    science syllogisms: member of a class + property of that class entails;
                     a sibling member, another property or a missing premise is neutral
========  =========  ==========================================================================

Labels are decided by relations *between* premise and hypothesis (which object, which role,
which number), so no single word of either side decides them; every label is drawn equally often.
Rows are ``{"text", "text_pair", "label"}`` (``text`` = premise or question).
``generate(name, split, n, seed=...)`` is deterministic in all four arguments.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from merging_core.bundles.nli6 import lexicon as L

SPLITS = ("train", "validation", "test")
NLI3 = ("entailment", "neutral", "contradiction")
NLI2 = ("entailment", "not_entailment")

Make = Callable[[random.Random, int], tuple[str, str]]


@dataclass(frozen=True)
class Task:
    """One task: its classes (label i = head row i) and its pair generator.

    Attributes:
        name: task id (= adapter name). analogue: the benchmark it mimics.
        description: one sentence for the manifest and the app.
        classes: label names; binary tasks use head rows 0 and 1 only.
        make: ``make(rng, label) -> (text, text_pair)`` for a requested label.
    """

    name: str
    analogue: str
    description: str
    classes: tuple[str, ...]
    make: Make


def _a(phrase: str) -> str:
    """``phrase`` with its indefinite article."""
    return ("an " if phrase[0].lower() in "aeiou" else "a ") + phrase


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _other(rng: random.Random, items, current):
    """A random item of ``items`` different from ``current``."""
    return rng.choice([x for x in items if x != current])


def _pick(rng: random.Random, options: list[str]) -> str:
    return rng.choice(options)


# ------------------------------------------------------------------------------------------ SNLI


CATEGORY_PHRASE = {
    "animal": "an animal",
    "instrument": "an instrument",
    "vehicle": "a vehicle",
    "food": "some food",
    "ball": "a ball",
    "tool": "a tool",
}


def _snli(rng: random.Random, label: int) -> tuple[str, str]:
    noun, hyper = rng.choice(L.PEOPLE)
    adjective = rng.choice(L.AGES + L.MOODS)
    color, cloth = rng.choice(L.COLORS), rng.choice(L.CLOTHES)
    category = rng.choice(sorted(L.CATEGORIES))
    objects, verbs = L.CATEGORIES[category]
    obj, verb = rng.choice(objects), rng.choice(verbs)
    place, indoor = rng.choice(L.PLACES)
    if rng.random() < 0.5:
        premise = f"{_cap(_a(adjective))} {noun} in {_a(color)} {cloth} is {verb} {_a(obj)} in the {place}."
    else:
        premise = f"In the {place}, {_a(adjective)} {noun} wearing {_a(color)} {cloth} is {verb} {_a(obj)}."
    subj = _pick(rng, [f"The {noun}", f"{_cap(_a(hyper))}", "Someone", f"The {adjective} {noun}"])
    if label == 0:
        hyp = _pick(rng, [
            f"{subj} is {verb} {CATEGORY_PHRASE[category]}.",
            f"{subj} in {color} is {verb} {_a(obj)}.",
            f"{subj} is {'indoors' if indoor else 'outdoors'}.",
            f"{subj} is {verb} something in the {place}.",
            f"{subj} wearing {_a(cloth)} is near {_a(obj)}.",
        ])  # fmt: skip
    elif label == 1:
        hyp = _pick(rng, [
            f"{subj} is {verb} {_a(obj)} for {rng.choice(['a friend', 'a contest', 'money', 'a school project'])}.",
            f"{_cap(_a(_other(rng, L.MOODS, adjective)))} {noun} is {verb} {_a(obj)}.",
            f"{subj} is {verb} {_a(obj)} after {rng.choice(['work', 'lunch', 'a long trip'])}.",
            f"The {obj} belongs to the {noun}'s {rng.choice(L.RELATIVES)}.",
            f"{subj} is {verb} {_a(obj)} with {rng.choice(['a friend', 'two cousins', 'a coach'])}.",
        ])  # fmt: skip
    else:
        other_place = rng.choice([p for p, i in L.PLACES if i != indoor])
        hyp = _pick(rng, [
            f"{subj} is {verb} {_a(_other(rng, objects, obj))}.",
            f"{subj} is {verb} {_a(obj)} in the {other_place}.",
            f"{subj} is wearing {_a(_other(rng, L.COLORS, color))} {cloth}.",
            f"{subj} is {rng.choice(L.POSTURES)}.",
            f"Nobody is {verb} {_a(obj)}.",
        ])  # fmt: skip
    return premise, hyp


# ------------------------------------------------------------------------------------------ SICK


def _sick(rng: random.Random, label: int) -> tuple[str, str]:
    subj, subj_h = rng.choice(L.SICK_SUBJECTS)
    verb, syn, objects = rng.choice(L.SICK_ACTIONS)
    obj = rng.choice(objects)

    def positive(s: str, v: str, o: str) -> str:
        return _pick(rng, [f"{_cap(_a(s))} is {v} {_a(o)}", f"The {s} is {v} {_a(o)}"]) + "."

    def negative(s: str, v: str, o: str) -> str:
        return _pick(rng, [
            f"There is no {s} {v} {_a(o)}", f"{_cap(_a(s))} is not {v} {_a(o)}",
            f"The {s} is not {v} {_a(o)}", f"No {s} is {v} {_a(o)}",
        ]) + "."  # fmt: skip

    negated = rng.random() < 0.4
    premise = (negative if negated else positive)(subj, verb, obj)
    same_side = negative if negated else positive
    if label == 0:
        s2 = rng.choice([subj, subj_h]) if not negated else subj
        hyp = same_side(s2, rng.choice([verb, syn]), obj)
    elif label == 2:
        hyp = (positive if negated else negative)(subj, rng.choice([verb, syn]), obj)
    else:
        choice = rng.randrange(3)
        if choice == 0:
            hyp = positive(subj, rng.choice([verb, syn]), _other(rng, objects, obj))
        elif choice == 1:
            other = _other(rng, [s for s, _ in L.SICK_SUBJECTS], subj)
            hyp = positive(other, verb, obj)
        else:
            state = rng.choice(L.SICK_OPPOSITES)[rng.randrange(2)]
            hyp = f"The {subj} is {state} and {verb} {_a(obj)}."
    return premise, hyp


# ------------------------------------------------------------------------------------------- RTE


def _org(rng: random.Random, avoid: tuple[str, ...] = ()) -> str:
    """A company name whose first word differs from those of ``avoid``."""
    taken = {a.split()[0] for a in avoid}
    head = rng.choice([h for h in L.ORG_HEADS if h not in taken])
    return f"{head} {rng.choice(L.ORG_TAILS)}"


def _rte_acquisition(rng: random.Random, entail: bool) -> tuple[str, str]:
    o1 = _org(rng)
    o2 = _org(rng, (o1,))
    o3 = _org(rng, (o1, o2))
    city, kind, n = rng.choice(L.CITIES), rng.choice(L.ORG_KINDS), rng.randrange(20, 900, 5)
    premise = _pick(rng, [
        f"{o1}, {_a(kind)} based in {city}, bought {o2} for {n} million dollars.",
        f"{o2} was sold to {o1}, {_a(kind)} based in {city}, for {n} million dollars.",
    ])  # fmt: skip
    if entail:
        hyp = _pick(rng, [f"{o1} acquired {o2}.", f"{o2} was bought by {o1}.",
                          f"{o1} is based in {city}.", f"{o1} paid {n} million dollars for {o2}."])  # fmt: skip
    elif rng.random() < 0.5:  # new information: plausible, not stated
        hyp = _pick(rng, [f"{o1} bought {o2} to enter a new market.", f"{o1} acquired {o2} last year.",
                          f"{o2} had been losing money before the sale.", f"{o1} is the largest firm in {city}."])  # fmt: skip
    else:
        hyp = _pick(rng, [f"{o2} acquired {o1}.", f"{o1} was bought by {o2}.",
                          f"{o1} is based in {_other(rng, L.CITIES, city)}.", f"{o3} acquired {o2}.",
                          f"{o1} paid {n + rng.randrange(10, 200, 5)} million dollars for {o2}."])  # fmt: skip
    return premise, hyp


def _rte_appointment(rng: random.Random, entail: bool) -> tuple[str, str]:
    org = _org(rng)
    p1, p2 = rng.sample(L.NAMES, 2)
    role, years = rng.choice(L.ROLES), rng.randrange(3, 30)
    premise = _pick(rng, [
        f"{p1} became {role} of {org}, replacing {p2}, who retired after {years} years.",
        f"After {years} years at {org}, {p2} retired; {p1} took over as {role}.",
    ])  # fmt: skip
    if entail:
        hyp = _pick(rng, [f"{p1} is the new {role} of {org}.", f"{p2} retired from {org}.",
                          f"{p2} worked for {org} for {years} years.", f"{p1} replaced {p2}."])  # fmt: skip
    elif rng.random() < 0.5:
        hyp = _pick(rng, [f"{p1} was the board's first choice.", f"{p2} was forced to leave {org}.",
                          f"{p1} previously worked for a rival.", f"{org} grew under {p2}."])  # fmt: skip
    else:
        hyp = _pick(rng, [f"{p2} is the new {role} of {org}.", f"{p1} retired from {org}.",
                          f"{p1} worked for {org} for {years} years.", f"{p2} replaced {p1}.",
                          f"{p1} is the new {_other(rng, L.ROLES, role)} of {org}."])  # fmt: skip
    return premise, hyp


def _rte_founding(rng: random.Random, entail: bool) -> tuple[str, str]:
    org = _org(rng)
    p1, p2 = rng.sample(L.NAMES, 2)
    city, year, n = rng.choice(L.CITIES), rng.choice(L.YEARS), rng.randrange(40, 9000, 20)
    premise = _pick(rng, [
        f"{org}, founded in {city} in {year} by {p1}, now employs {n} people.",
        f"{p1} started {org} in {city} in {year}; today the firm has {n} employees.",
    ])  # fmt: skip
    if entail:
        hyp = _pick(rng, [f"{p1} founded {org}.", f"{org} was founded in {year}.",
                          f"{org} was started in {city}.", f"{org} has {n} employees."])  # fmt: skip
    elif rng.random() < 0.5:
        hyp = _pick(rng, [f"{p1} founded {org} with a bank loan.", f"{org} is the biggest employer in {city}.",
                          f"{p1} still runs {org}.", f"{org} makes most of its money abroad."])  # fmt: skip
    else:
        hyp = _pick(rng, [f"{p2} founded {org}.", f"{org} was founded in {_other(rng, L.YEARS, year)}.",
                          f"{org} was started in {_other(rng, L.CITIES, city)}.",
                          f"{p1} founded {org} in {_other(rng, L.CITIES, city)}."])  # fmt: skip
    return premise, hyp


def _rte(rng: random.Random, label: int) -> tuple[str, str]:
    make = rng.choice([_rte_acquisition, _rte_appointment, _rte_founding])
    return make(rng, label == 0)


# ------------------------------------------------------------------------------------------ QNLI


def _qnli(rng: random.Random, label: int) -> tuple[str, str]:
    name, other = rng.sample(L.NAMES, 2)
    past, base, participle, objects = rng.choice(L.QNLI_EVENTS)
    obj, city, year = rng.choice(objects), rng.choice(L.CITIES), rng.choice(L.YEARS)
    asked = rng.choice(["what", "where", "when", "who"])
    question = {
        "what": f"What did {name} {base} in {city}?",
        "where": f"Where did {name} {base} the {obj}?",
        "when": f"When did {name} {base} the {obj}?",
        "who": f"Who {past} the {obj} in {city}?",
    }[asked]
    if label == 0:
        sentence = _pick(rng, [
            f"In {year}, {name} {past} {_a(obj)} in {city}.",
            f"{name} {past} {_a(obj)} in {city} in {year}, after a long search.",
            f"The {obj} in {city} was {participle} by {name} in {year}.",
        ])  # fmt: skip
        return question, sentence
    # not_entailment: the sentence misses the asked slot or contradicts a given one
    city2, obj2 = _other(rng, L.CITIES, city), _other(rng, objects, obj)
    sentence = {
        "what": _pick(rng, [f"{name} {past} {_a(obj)} in {city2} in {year}, after a long search.",
                            f"In {year}, {other} {past} {_a(obj)} in {city}.",
                            f"{name} lived in {city} for many years before moving away."]),
        "where": _pick(rng, [f"In {year}, {name} {past} the {obj} after a long search.",
                             f"The {obj} was {participle} by {other} in {city} in {year}.",
                             f"{name} {past} {_a(obj2)} in {city} in {year}."]),
        "when": _pick(rng, [f"{name} {past} the {obj} in {city}, with help from {other}.",
                            f"The {obj} in {city} was {participle} by {other} in {year}.",
                            f"In {year}, {name} {past} {_a(obj2)} in {city}."]),
        "who": _pick(rng, [f"The {obj} in {city} was {participle} in {year}.",
                           f"In {year}, {name} {past} the {obj} in {city2}.",
                           f"In {year}, {name} {past} {_a(obj2)} in {city}."]),
    }[asked]  # fmt: skip
    return question, sentence


# ------------------------------------------------------------------------------------------ MNLI


def _mnli_government(rng: random.Random, label: int) -> tuple[str, str]:
    agency, (things, verbed) = rng.choice(L.AGENCIES), rng.choice(L.COUNTABLES)
    city, period = rng.choice(L.CITIES), rng.choice(L.PERIODS)
    n, d = rng.randrange(30, 96), rng.randrange(8, 25)
    premise = f"The {agency} reported that {n} {things} were {verbed} in {city} last {period}."
    tail = f"{things} were {verbed} in {city} last {period}."
    options = {
        0: [f"More than {n - d} {tail}", f"Fewer than {n + d} {tail}", f"Some {tail}"],
        1: [f"More {things} were {verbed} in {city} than in any other city.",
            f"Most of the {things} were {verbed} by private companies.",
            f"The {agency} expects more {things} to be {verbed} next {period}."],
        2: [f"Fewer than {n - d} {tail}", f"More than {n + d} {tail}", f"No {tail}"],
    }  # fmt: skip
    return premise, _pick(rng, options[label])


def _mnli_fiction(rng: random.Random, label: int) -> tuple[str, str]:
    a, b = rng.sample(L.NAMES, 2)
    strong, mild, opposite = rng.choice(L.EMOTIONS)
    event = rng.choice(L.EVENTS)
    premise = _pick(rng, [f"{a} was {strong} when {b} {event}.",
                          f"When {b} {event}, {a} was {strong}, though {a} said nothing."])  # fmt: skip
    options = {
        0: [f"{a} felt {mild}.", f"{b} {event}.", f"{a} had feelings about what {b} did."],
        1: [f"{b} felt {mild}.", f"{b} {event} on purpose.", f"{a} and {b} are married."],
        2: [f"{a} felt {opposite}.", f"{a} did not care what {b} did.", f"{a} felt {opposite} when {b} {event}."],
    }  # fmt: skip
    return premise, _pick(rng, options[label])


def _mnli_telephone(rng: random.Random, label: int) -> tuple[str, str]:
    rel, (third, base), freq = (
        rng.choice(L.RELATIVES),
        rng.choice(L.HOBBIES),
        rng.choice(L.FREQUENCIES),
    )
    joins = rng.random() < 0.5
    own = f"and i {base} with them sometimes" if joins else f"but i never {base} myself"
    premise = f"yeah well my {rel} {third} {freq} {own} you know"
    options = {
        0: [f"The speaker's {rel} {third} regularly.",
            f"The speaker sometimes joins the {rel}." if joins else f"The speaker does not {base}."],
        1: [f"The speaker's {rel} {third} with friends.", f"The speaker's {rel} is retired.",
            f"The speaker would like to {base} more often."],
        2: [f"The speaker's {rel} never {third}.",
            f"The speaker does not {base} at all." if joins else f"The speaker often joins the {rel} to {base}."],
    }  # fmt: skip
    return premise, _pick(rng, options[label])


def _mnli_travel(rng: random.Random, label: int) -> tuple[str, str]:
    sight, city, season = rng.choice(L.SIGHTS), rng.choice(L.CITIES), rng.choice(L.SEASONS)
    free = rng.random() < 0.5
    fee = "entry is free" if free else f"tickets cost {rng.randrange(4, 30)} euros"
    premise = f"The {sight} in {city} opens to visitors only in {season}, and {fee}."
    options = {
        0: [f"Visitors can see the {sight} in {season}.",
            f"The {sight} {'costs nothing to enter' if free else 'charges for entry'}."],
        1: [f"The {sight} is the most visited place in {city}.",
            f"The {sight} was built three centuries ago.", f"The {sight} is crowded in {season}."],
        2: [f"Visitors can see the {sight} in {_other(rng, L.SEASONS, season)}.",
            f"The {sight} is open all year.",
            f"The {sight} {'charges for entry' if free else 'costs nothing to enter'}."],
    }  # fmt: skip
    return premise, _pick(rng, options[label])


def _mnli(rng: random.Random, label: int) -> tuple[str, str]:
    make = rng.choice([_mnli_government, _mnli_fiction, _mnli_telephone, _mnli_travel])
    return make(rng, label)


# --------------------------------------------------------------------------------------- SciTail


def _scitail(rng: random.Random, label: int) -> tuple[str, str]:
    names = sorted(L.SCI_CLASSES)
    cls = rng.choice(names)
    members, props = L.SCI_CLASSES[cls]
    member, prop = rng.choice(members), rng.choice(props)
    ctx = rng.choice(L.SCI_CONTEXTS)
    hyp = f"{_cap(member)} {prop}."
    if label == 0:
        body = _pick(rng, [
            f"{member} are {cls}, and all {cls} {prop}.",
            f"all {cls} {prop}; {member}, for example, are {cls}.",
            f"{member} {prop}, like other {cls}.",
            f"like every other kind of {cls[:-1] if cls.endswith('s') else cls}, {member} {prop}.",
        ])  # fmt: skip
    else:
        other_cls = _other(rng, names, cls)
        other_prop = rng.choice(L.SCI_CLASSES[other_cls][1])
        body = _pick(rng, [
            f"{member} are {cls}, and all {cls} {_other(rng, props, prop)}.",
            f"{_other(rng, members, member)} are {cls}, and all {cls} {prop}.",
            f"all {other_cls} {other_prop}; {member}, however, are {cls}.",
            f"{member} are {cls}, which scientists study in the field.",
            f"{member} are not {other_cls}, and all {cls} have been studied for centuries.",
            f"{_other(rng, members, member)} {prop}, like other {cls}.",
            f"like every other kind of {cls[:-1] if cls.endswith('s') else cls}, {_other(rng, members, member)} {prop}.",
        ])  # fmt: skip
    premise = f"{ctx} {body}".strip()
    return _cap(premise), hyp


# ----------------------------------------------------------------------------------- the registry

TASKS: tuple[Task, ...] = (
    Task("mnli", "MNLI", "multi-genre pairs: official figures, fiction, phone talk, travel notes",
         NLI3, _mnli),
    Task("qnli", "QNLI", "question / sentence pairs: does the sentence contain the answer?",
         NLI2, _qnli),
    Task("snli", "SNLI", "scene captions with generalised, embellished or conflicting hypotheses",
         NLI3, _snli),
    Task("rte", "RTE", "company news: acquisitions, appointments and foundings, roles swapped or kept",
         NLI2, _rte),
    Task("sick", "SICK", "short compositional sentences: synonyms, negation, swapped objects",
         NLI3, _sick),
    Task("scitail", "SciTail", "science syllogisms over classes of animals, materials and plants",
         ("entails", "neutral"), _scitail),
)  # fmt: skip
TASK_NAMES = tuple(t.name for t in TASKS)


def get_task(name: str) -> Task:
    """The task called ``name``; ``KeyError`` naming the known tasks."""
    for task in TASKS:
        if task.name == name:
            return task
    raise KeyError(f"no nli6 task named {name!r}; tasks are {list(TASK_NAMES)}")


def generate(name: str, split: str, n: int, *, seed: int = 0) -> list[dict[str, object]]:
    """``n`` labelled rows of task ``name`` for ``split``, each label equally often (±1).

    Deterministic in ``(name, split, n, seed)``; different splits and seeds draw different rows.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    task = get_task(name)
    rng = random.Random(f"nli6/{name}/{split}/{seed}")
    labels = [i % len(task.classes) for i in range(n)]
    rng.shuffle(labels)
    rows = []
    for label in labels:
        text, pair = task.make(rng, label)
        rows.append({"text": text, "text_pair": pair, "label": label})
    return rows
