"""What a first-time user meets, in a real browser: the Merge headline, Stop, a 1024×768 screen,
and three people using one server at once (no cross-talk; sliders answer during a TARA run).

Needs the vision8 sample bundle (skipped without it): headline and TARA need its task data.
"""

from __future__ import annotations

import re
import time

import pytest
from test_app_browser import screenshot, settle

pytestmark = [pytest.mark.browser, pytest.mark.slow]

TARA_URL = "merge?merge.method=tara_b&merge.tara_b.steps=2000"
# The target is 1 s. On the shared 2-core development machine a second session's slider answered
# in 0.6–6.3 s (medians of three: 1.3 s and 4.3 s, depending on what else ran) while the first
# session ran TARA; before the run queue, sessions were served one after another (30–36 s for five
# Merge pages). The bound guards against that serialisation coming back, not the 1 s target.
SLIDER_ANSWER_S = 10.0
CHANGED = """(before) => {
    const p = [...document.querySelectorAll('.js-plotly-plot')]
      .find(el => (el.layout?.title?.text || '').includes('How much'));
    return p && JSON.stringify(Array.from(p.data[0].y)) !== JSON.stringify(before); }"""


def merge_tab(tabs, path: str = "merge", **size):
    tab = tabs(path, **size)
    tab.get_by_role("heading", name="Merge", level=1).first.wait_for()
    if tab.get_by_text(re.compile("is not available|not built")).count():
        pytest.skip("needs the vision8 sample bundle")
    return tab


def figure(tab, prefix: str) -> dict:
    """Trace names, texttemplates and DOM boxes of the Plotly chart whose title has ``prefix``."""
    return tab.evaluate(
        """(prefix) => {
        const gd = [...document.querySelectorAll('.js-plotly-plot')]
          .find(el => (el.layout?.title?.text || '').includes(prefix));
        if (!gd) return null;
        const box = el => { const r = el?.getBoundingClientRect();
                            return r ? [r.left, r.top, r.right, r.bottom] : null; };
        return {names: gd.data.map(t => t.name), text: gd.data.map(t => t.texttemplate || null),
                title: box(gd.querySelector('.gtitle')), legend: box(gd.querySelector('.legend')),
                plot: box(gd.querySelector('.nsewdrag'))};
    }""",
        prefix,
    )


def overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def test_merge_headline_says_whether_the_merge_helped(tabs, shots):
    tab = merge_tab(tabs)
    tab.get_by_text("This merge · average").first.wait_for(timeout=300_000)
    settle(tab)
    body = tab.inner_text("body")
    assert re.search(r"TA, best λ = [\d.]+", body)  # TA at its validation-best λ
    assert "Zero-shot base model" in body and "pts vs TA" in body
    assert re.search(r"On the test split \(\d+ tasks\) this merge keeps on average", body)
    bars = figure(tab, "Per-task normalised accuracy, test split")
    assert bars["names"][0] == "this merge (Task Arithmetic)"
    assert bars["text"][0] == "%{y:.1f}"  # each bar carries its number
    screenshot(tab, shots / "first-use-merge-headline.png")


def test_layout_at_1024_by_768(tabs, shots):
    tab = merge_tab(tabs, width=1024, height=768)
    tab.get_by_text("This merge · average").first.wait_for(timeout=300_000)
    settle(tab)
    for prefix in ("How much of each task", "Per-task normalised accuracy"):
        fig = figure(tab, prefix)
        assert fig["legend"] and not overlap(fig["legend"], fig["title"]), prefix
        assert not overlap(fig["legend"], fig["plot"]), prefix
    screenshot(tab, shots / "first-use-merge-1024.png")
    tab.get_by_role("link", name="Geometry").first.click()
    tab.get_by_text("Effective rank of each adapter").first.wait_for(timeout=300_000)
    settle(tab)
    erank = figure(tab, "Effective rank of each adapter")
    assert erank["plot"][2] - erank["plot"][0] > 300  # the heatmap keeps its width
    overlaps = figure(tab, "How much the adapters' subspaces overlap")
    assert overlaps["plot"][2] - overlaps["plot"][0] > 150  # each panel, not ~100 px
    screenshot(tab, shots / "first-use-geometry-1024.png")


def start_tara(tab) -> None:
    tab.get_by_role("button", name="Run merge").click()
    tab.get_by_role("button", name="Stop").wait_for()
    tab.get_by_text(re.compile(r"step \d+ of 2000 · ")).first.wait_for(
        timeout=300_000
    )


def test_stop_ends_a_tara_run_and_keeps_what_it_learned(tabs, shots):
    tab = merge_tab(tabs, TARA_URL)
    settle(tab)
    start_tara(tab)
    screenshot(tab, shots / "first-use-tara-running.png")
    tab.get_by_role("button", name="Stop").click()
    tab.get_by_text(re.compile(r"Stopped after \d+ of 2000 steps")).first.wait_for(timeout=60_000)
    settle(tab)
    assert tab.get_by_role("button", name="Stop").count() == 0
    assert figure(tab, "Learned coefficients φ per module") is not None
    screenshot(tab, shots / "first-use-tara-stopped.png")


def agreement(tab) -> list[float]:
    return tab.evaluate(
        """() => { const p = [...document.querySelectorAll('.js-plotly-plot')]
              .find(el => (el.layout?.title?.text || '').includes('How much'));
              return p ? Array.from(p.data[0].y) : []; }"""
    )


def test_three_sessions_no_cross_talk_and_sliders_answer_during_tara(tabs, shots):
    first = merge_tab(tabs, TARA_URL)
    second = merge_tab(tabs)
    third = merge_tab(tabs, "merge?merge.method=ties")
    for tab in (first, second, third):
        settle(tab)
    start_tara(first)
    # the second session's data-free slider answers while the first session's TARA run goes
    slider = second.get_by_role("slider").nth(1)  # a weight slider (scaling is first)
    latencies = []
    for _ in range(3):
        settle(second)  # a user moves a slider, looks at the result, moves it again
        before = agreement(second)
        slider.focus()
        start = time.perf_counter()
        second.keyboard.press("ArrowLeft")
        second.wait_for_function(CHANGED, arg=before, timeout=30_000)
        latencies.append(time.perf_counter() - start)
    print(f"\nslider -> chart during a TARA run (s): {[round(x, 3) for x in latencies]}")
    assert first.get_by_role("button", name="Stop").count() == 1  # still running
    assert sorted(latencies)[1] <= SLIDER_ANSWER_S
    # no cross-talk: each session shows its own method and its own run state
    settle(third)
    assert "this merge (TIES-Merging)" in figure(third, "Per-task normalised accuracy")["names"]
    assert figure(second, "Per-task normalised accuracy")["names"][0] == (
        "this merge (Task Arithmetic)"
    )
    assert second.get_by_role("button", name="Stop").count() == 0
    assert third.get_by_role("button", name="Stop").count() == 0
    screenshot(first, shots / "first-use-three-sessions-tara.png")
    first.get_by_role("button", name="Stop").click()
    first.get_by_text(re.compile(r"Stopped after \d+ of 2000 steps")).first.wait_for(timeout=60_000)
