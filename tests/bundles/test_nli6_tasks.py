"""The nli6 task generators: deterministic under a seed, balanced, well-formed, and not solvable
by a single keyword."""

import re
from collections import Counter, defaultdict

import pytest

from merging_core.bundles.nli6 import tasks

NAMES = list(tasks.TASK_NAMES)


def test_six_tasks_mirror_the_paper_with_their_label_sets():
    assert NAMES == ["mnli", "qnli", "snli", "rte", "sick", "scitail"]
    sizes = {t.name: len(t.classes) for t in tasks.TASKS}
    assert sizes == {"mnli": 3, "qnli": 2, "snli": 3, "rte": 2, "sick": 3, "scitail": 2}
    assert tasks.get_task("scitail").classes == ("entails", "neutral")


@pytest.mark.parametrize("name", NAMES)
def test_generator_is_deterministic_and_well_formed(name):
    rows = tasks.generate(name, "train", 300, seed=3)
    assert rows == tasks.generate(name, "train", 300, seed=3)
    assert rows != tasks.generate(name, "train", 300, seed=4)
    assert rows != tasks.generate(name, "test", 300, seed=3)
    n_classes = len(tasks.get_task(name).classes)
    counts = Counter(r["label"] for r in rows)
    assert set(counts) == set(range(n_classes))
    assert max(counts.values()) - min(counts.values()) <= 1  # balanced by construction
    for r in rows:
        assert set(r) == {"text", "text_pair", "label"}
        assert r["text"].strip() and r["text_pair"].strip() and "{" not in r["text_pair"]
    assert len({(r["text"], r["text_pair"]) for r in rows}) > 0.9 * len(rows)


def test_counts_are_exact():
    rows = tasks.generate("rte", "validation", 10, seed=0)
    assert len(rows) == 10 and tasks.generate("rte", "validation", 0) == []


def _words(text):
    return set(re.findall(r"[a-z']+|\d+", text.lower()))


@pytest.mark.parametrize("name", NAMES)
def test_no_single_word_decides_the_label(name):
    """The best rule 'word w present in the premise (or hypothesis) -> label a, else label b'
    stays far from solving the task (the labels depend on relations between the two sides)."""
    rows = tasks.generate(name, "test", 600, seed=0)
    best = 0.0
    for field in ("text", "text_pair"):
        bags = [(_words(r[field]), r["label"]) for r in rows]
        with_word = defaultdict(Counter)  # word -> label counts of the rows that contain it
        for bag, label in bags:
            for w in bag:
                with_word[w][label] += 1
        totals = Counter(label for _, label in bags)
        for counts in with_word.values():
            rest = [totals[c] - counts[c] for c in totals]  # label counts of rows without it
            hits = max(counts.values()) + max(rest)
            best = max(best, hits / len(rows))
    assert best < 0.7, f"{name}: one word predicts the label {best:.0%} of the time"


def test_errors_name_the_value():
    with pytest.raises(KeyError, match="'nope'"):
        tasks.get_task("nope")
    with pytest.raises(ValueError, match="'dev'"):
        tasks.generate("rte", "dev", 4)
    with pytest.raises(ValueError, match="-1"):
        tasks.generate("rte", "test", -1)
