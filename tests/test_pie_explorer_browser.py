"""The PIE explorer in a real browser: headless Chromium over the DevTools protocol.

Runs only where Chromium is installed (Debian: `apt-get install chromium`), with the
client and fixture of test_report_browser.py. Opens `pies.html` built from the
hand-made workdir of test_pie_explorer.py and reads the DOM: every PIE of a variant
is listed under its class with its true, dense and variant labels; the count
table's links open the right variant and class; the hostile class name is text.
"""
import os

import numpy as np
import pytest

from pie.report import build, explorer
from test_pie_explorer import CLASS_NAMES, HOSTILE_NAME, make_workdir, pie_table
from test_report_browser import CHROMIUM, browser  # noqa: F401  (the fixture)

pytestmark = pytest.mark.skipif(CHROMIUM is None,
                                reason="chromium is not installed (apt-get install chromium)")

# Per class section of the variant shown: [class id, heading, rows], each row
# [image id, image text, true, dense label id, variant label id, mistaken-for text].
LISTED = """Array.from(document.querySelectorAll('#pies section.pie-class')).map(s => [
  Number(s.dataset.class), s.querySelector('h3').textContent,
  Array.from(s.querySelectorAll('tr.pie')).map(r => [
    Number(r.dataset.imageId), r.querySelector('td.image').textContent,
    r.querySelector('td.true').textContent, Number(r.querySelector('td.dense').dataset.label),
    Number(r.querySelector('td.variant').dataset.label),
    r.querySelector('td.mistaken').textContent])])"""


def expected_listing(key):
    """What the page must list for variant `key`, computed from pie.csv."""
    table = pie_table()
    keys = [f"{m}_{s:g}" for m, s in zip(table["method"], table["sparsity"])]
    pies = table[table["is_pie"].to_numpy() & (np.asarray(keys) == key)]
    listing = []
    for class_id, rows in pies.sort_values(["label", "image_id"]).groupby("label", sort=True):
        noun = "PIE" if len(rows) == 1 else "PIEs"
        listing.append([int(class_id), f"{CLASS_NAMES[class_id]}: {len(rows)} {noun}", [
            [int(r.image_id), f"image {r.image_id}", CLASS_NAMES[r.label],
             int(r.baseline_modal_label), int(r.variant_modal_label),
             "— (right)" if r.variant_modal_label == r.label
             else CLASS_NAMES[r.variant_modal_label]]
            for r in rows.itertuples()]])
    return listing


def test_every_pie_of_a_variant_is_listed_under_its_class(browser, tmp_path):  # noqa: F811
    workdir = make_workdir(str(tmp_path / "w"))
    build.build_report(workdir, log=lambda line: None)
    page = os.path.join(workdir, "report", explorer.PAGE_NAME)
    browser.call("Runtime.enable")
    browser.call("Log.enable")
    browser.call("Page.enable")
    browser.call("Page.navigate", url="file://" + os.path.abspath(page))
    browser.wait_for("Page.loadEventFired")
    assert browser.evaluate("document.body.dataset.ready") == "1"

    variants = browser.evaluate(
        "Array.from(document.querySelectorAll('#variant option')).map(o => o.textContent)")
    assert [v.split(" (")[0] for v in variants] == ["m_by_n 0.5", "magnitude 0.5",
                                                    "magnitude 0.9"]
    # The first variant is shown on opening; the others through the selector.
    for index, key in enumerate(["m_by_n_0.5", "magnitude_0.5", "magnitude_0.9"]):
        browser.evaluate(f"(() => {{ const s = document.getElementById('variant'); "
                         f"s.value = '{index}'; s.dispatchEvent(new Event('change')); "
                         f"return 1; }})()")
        assert browser.evaluate("document.getElementById('pies').dataset.variant") == key
        assert browser.evaluate(LISTED) == expected_listing(key)

    # A link of the count table opens its variant at its class.
    href = browser.evaluate("document.querySelector('#counts a[href^=\"#v2-\"]')"
                            ".getAttribute('href')")
    # Resolves after the page's own hashchange listener (registered first) has run.
    browser.call("Runtime.evaluate", awaitPromise=True, expression=(
        "new Promise(r => { addEventListener('hashchange', () => r(1), {once: true}); "
        f"location.hash = '{href}'; }})"))
    assert browser.evaluate("document.getElementById('pies').dataset.variant") == \
        "magnitude_0.9"
    assert browser.evaluate(f"document.getElementById('{href[1:]}') !== null")
    # The hostile class name is a row's text, and nothing it names became an element.
    names = browser.evaluate(
        "Array.from(document.querySelectorAll('#counts tbody tr td:first-child'))"
        ".map(c => c.textContent)")
    assert HOSTILE_NAME in names
    assert browser.evaluate("document.images.length") == 0
    assert browser.errors() == []
