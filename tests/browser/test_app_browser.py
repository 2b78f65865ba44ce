"""Real-browser smoke test: every page renders, a slider moves a chart, and how fast."""

from __future__ import annotations

import re
import time
from urllib.parse import urlencode

import pytest

from merging_core.methods import get_method

pytestmark = [pytest.mark.browser, pytest.mark.slow]

PAGES = ("Adapters", "Geometry", "Sensitivity", "Merge", "Trade-off", "Export", "History")
LATENCY_TARGET_S = 0.5


def open_page(tab, title: str) -> None:
    tab.get_by_role("link", name=title).first.click()
    tab.get_by_role("heading", name=title, level=1).first.wait_for()


def idle(tab) -> None:
    """Wait until Streamlit has finished the current run: no running-man, no stale elements,
    no progress bar and no "Scoring on …" note left on the page."""
    tab.wait_for_function(
        """() => !document.querySelector('[data-testid="stStatusWidget"]')
                 && !document.querySelector('[data-stale="true"]')
                 && !document.querySelector('[data-testid="stProgress"]')
                 && !document.body.innerText.includes('Scoring on ')""",
        timeout=120_000,
        polling=20,
    )


def settle(tab) -> None:
    """:func:`idle`, then half a second for late redraws."""
    idle(tab)
    tab.wait_for_timeout(500)


def load_test_adapters(tab, folder) -> str:
    """Use the sample bundle when it is built; else load the test adapters through the UI."""
    either = tab.get_by_text(re.compile(r"sample bundle \(\d+ tasks\)|is not available"))
    either.first.wait_for()
    settle(tab)
    if tab.get_by_text(re.compile(r"sample bundle \(\d+ tasks\)")).count():
        return "bundle"
    box = tab.get_by_label("Adapter folder, or a folder of adapter folders")
    box.fill(str(folder))
    tab.get_by_role("button", name="Load from folder").click()
    tab.get_by_role("heading", name="Working set").first.wait_for()
    settle(tab)
    return "test adapters"


def screenshot(tab, path) -> None:
    """Whole page: Streamlit scrolls inside its main block, so grow the viewport to fit it."""
    height = tab.evaluate(
        "() => document.querySelector('[data-testid=\"stMain\"]')?.scrollHeight || 1000"
    )
    size = tab.viewport_size
    tab.set_viewport_size({"width": size["width"], "height": min(int(height) + 80, 8000)})
    tab.wait_for_timeout(600)
    tab.screenshot(path=str(path), full_page=True)
    tab.set_viewport_size(size)


def chart_values(tab, title: str) -> list[float]:
    """y values of the first trace of the live Plotly chart whose title contains ``title``."""
    return tab.evaluate(
        """(title) => {
        const plots = [...document.querySelectorAll('.js-plotly-plot')];
        const p = plots.find(el => (el.layout?.title?.text || '').includes(title));
        return p && p.data[0] ? Array.from(p.data[0].y) : [];
    }""",
        title,
    )


def wait_for_change(tab, title: str, before: list[float]) -> None:
    """Until the first trace of the chart titled ``title`` shows other values than ``before``."""
    tab.wait_for_function(
        """([title, before]) => {
        const p = [...document.querySelectorAll('.js-plotly-plot')]
          .find(el => (el.layout?.title?.text || '').includes(title));
        return p && p.data[0]
          && JSON.stringify(Array.from(p.data[0].y)) !== JSON.stringify(before);
    }""",
        arg=[title, before],
        timeout=30_000,
        polling=10,
    )


def wait_for_redraw(tab, title: str, before: list[float]) -> None:
    """Until the chart titled ``title`` belongs to the current run: its values changed, or the
    page has sent it again unchanged (its element is no longer stale and nothing is scoring)."""
    tab.wait_for_function(
        """([title, before]) => {
        const p = [...document.querySelectorAll('.js-plotly-plot')]
          .find(el => (el.layout?.title?.text || '').includes(title));
        if (!p || !p.data[0]) return false;
        if (JSON.stringify(Array.from(p.data[0].y)) !== JSON.stringify(before)) return true;
        const box = p.closest('[data-stale]');
        return box && box.getAttribute('data-stale') === 'false'
          && !document.body.innerText.includes('Scoring on ');
    }""",
        arg=[title, before],
        timeout=30_000,
        polling=10,
    )


AGREEMENT = "How much"  # the Merge page's weight-space chart (no data needed)
ACCURACY = "Per-task normalised accuracy"  # its accuracy chart (the test splits); trace 0 = merge


def agreement_values(tab) -> list[float]:
    """y values of the Merge page's agreement chart, read from the live Plotly graph."""
    return chart_values(tab, AGREEMENT)


def test_every_page_renders(page, adapter_dir, shots):
    source = load_test_adapters(page, adapter_dir)
    charts = {"Geometry", "Merge"} | ({"Sensitivity", "Trade-off"} if source == "bundle" else set())
    for title in PAGES:
        open_page(page, title)
        if title in charts:
            page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
        settle(page)
        assert page.locator("[data-testid='stException']").count() == 0, title
        screenshot(page, shots / f"{title.lower()}.png")
    print(f"\nadapters: {source}; screenshots in {shots}")


def test_slider_updates_chart_quickly(page, adapter_dir, shots):
    source = load_test_adapters(page, adapter_dir)
    open_page(page, "Merge")
    page.locator(".js-plotly-plot").first.wait_for()
    settle(page)
    slider = page.get_by_role("slider").nth(1)  # scaling is first, then one weight per task
    latencies, accuracy, whole = [], [], []
    for _ in range(5):
        before = agreement_values(page)
        scored = chart_values(page, ACCURACY)
        slider.focus()
        start = time.perf_counter()
        page.keyboard.press("ArrowLeft")
        wait_for_change(page, AGREEMENT, before)
        latencies.append(time.perf_counter() - start)
        if scored:  # only where the adapters are a bundle's tasks (labelled test data)
            wait_for_redraw(page, ACCURACY, scored)
            accuracy.append(time.perf_counter() - start)
        idle(page)  # then the rest of the page (coefficients, summary table)
        whole.append(time.perf_counter() - start)
        settle(page)
    screenshot(page, shots / "merge_after_slider.png")
    median = sorted(latencies)[len(latencies) // 2]
    print(
        f"\nadapters: {source}; slider -> updated chart latency (s): "
        f"{[round(x, 3) for x in latencies]}; -> accuracy chart (test splits): "
        f"{[round(x, 3) for x in accuracy]}; -> whole page: {[round(x, 3) for x in whole]}"
    )
    print(f"median {median:.3f} s (target <= {LATENCY_TARGET_S} s)")
    assert median <= 2.0, f"chart took {median:.2f} s to follow the slider"


def click_first_sweep_point(tab) -> None:
    """Click (with the mouse) the first point of the first curve of the trade-off chart."""
    tab.evaluate(
        """() => [...document.querySelectorAll('.js-plotly-plot')]
          .find(el => (el.layout?.title?.text || '').includes('Trade-off'))
          .scrollIntoView({block: 'center'})"""
    )
    tab.wait_for_timeout(300)
    x, y = tab.evaluate(
        """() => {
        const gd = [...document.querySelectorAll('.js-plotly-plot')]
          .find(el => (el.layout?.title?.text || '').includes('Trade-off'));
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis;
        const box = gd.getBoundingClientRect();
        return [box.left + xa._offset + xa.l2p(gd.data[0].x[0]),
                box.top + ya._offset + ya.l2p(gd.data[0].y[0])];
    }"""
    )
    tab.mouse.move(x, y)
    tab.wait_for_timeout(300)
    tab.mouse.click(x, y)


def test_tradeoff_sweep_streams_and_opens_a_point(page, adapter_dir, shots):
    if load_test_adapters(page, adapter_dir) != "bundle":
        pytest.skip("needs the vision8 sample bundle (trade-offs need task data)")
    open_page(page, "Trade-off")
    settle(page)
    page.get_by_text("Sweep settings").click()
    for slider in (1, 2):  # first / warm-started steps -> 0: the method's own (short) schedule
        page.get_by_role("slider").nth(slider).focus()
        page.keyboard.press("Home")
        settle(page)
    page.get_by_role("button", name="Run sweep").click()
    page.get_by_role("button", name="Stop").first.wait_for(timeout=60_000)  # queued, with Stop
    # the point picker appears only once the sweep has finished (the caption names the front too)
    page.get_by_text("Or pick a point").first.wait_for(timeout=300_000)
    settle(page)
    screenshot(page, shots / "trade-off-sweep.png")
    click_first_sweep_point(page)
    page.get_by_role("heading", name="Merge", level=1).first.wait_for()
    settle(page)
    page.get_by_role("button", name="Run merge").click()
    page.get_by_text("Learned coefficients φ per module").first.wait_for(timeout=300_000)
    settle(page)
    assert page.locator("[data-testid='stException']").count() == 0
    screenshot(page, shots / "merge-tara.png")


def test_what_if_link_opens_merge_settings(page, server, adapter_dir, shots):
    if load_test_adapters(page, adapter_dir) != "bundle":
        pytest.skip("a fresh link opens a new session, which only has the sample bundle")
    # links carry the method's id (not its display name)
    query = urlencode({"merge.method": "ties", "merge.ties.density": 0.5})
    page.goto(f"{server}/merge?{query}", wait_until="networkidle")
    page.get_by_role("heading", name="Merge", level=1).first.wait_for()
    page.locator(".js-plotly-plot").first.wait_for(timeout=120_000)
    settle(page)
    assert "merge.method=ties" in page.url and "density=0.5" in page.url  # the link survived
    assert page.get_by_text(get_method("ties").pretty_name).count() > 0
    assert page.get_by_text("Density").count() + page.get_by_text("density").count() > 0
    assert page.get_by_text("0.50").count() > 0
    screenshot(page, shots / "merge-what-if-link.png")
