#!/usr/bin/python3
"""The feature dashboard in a real browser (headless Chromium, no network).

    test_dashboard.py MAKE_CASE SAE_FEATURES WORKDIR

make_case writes a small model, data, labels and what the page must show,
computed from sae_encode's dense features; sae-features writes the page;
then, in Chromium:
  - the table has one row per feature (d_sae);
  - a click on the density header puts the densest feature first;
  - a click on a feature's link opens its card, whose top-activating rows are
    the expected row ids, in order, each with its label;
  - an image-shaped model (d_in 16 = 4 x 4) draws its decoder row and inputs;
  - the page throws nothing; a screenshot of each page goes to WORKDIR.
Without Chromium (Debian: chromium) the test is skipped with exit status 77
and says so: it never passes silently.
"""

import json
import os
import shutil
import subprocess
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools",
                                "features"))
import cdp  # noqa: E402  (tools/features/cdp.py: Chromium over the DevTools pipe)

TOP = 6


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def check(cond, msg):
    if not cond:
        fail(msg)
    print("ok: " + msg)


def make(make_case, sae_features, work, name, d_in, d_sae, rows, extra):
    case = os.path.join(work, name)
    shutil.rmtree(case, ignore_errors=True)
    subprocess.run([make_case, case, str(d_in), str(d_sae), str(rows), str(TOP)], check=True)
    dash = os.path.join(case, "dash")
    subprocess.run([sae_features, os.path.join(case, "ckpt"), os.path.join(case, "data.npy"),
                    "--out", dash, "--top", str(TOP), "--quiet"] + extra, check=True)
    with open(os.path.join(case, "expected.json")) as f:
        expected = json.load(f)
    return os.path.join(dash, "dashboard.html"), expected


def main():
    make_case, sae_features, work = sys.argv[1:4]
    browser_bin = cdp.find_chromium()
    if not browser_bin:
        print("SKIPPED: no chromium on this machine (Debian: apt-get install chromium); "
              "the dashboard was not tested in a browser", file=sys.stderr)
        sys.exit(77)
    os.makedirs(work, exist_ok=True)
    start = time.monotonic()
    page_path, want = make(make_case, sae_features, work, "labels", 12, 48, 400,
                           ["--labels", os.path.join(work, "labels", "labels.txt")])
    image_path, image_want = make(make_case, sae_features, work, "image", 16, 24, 300, [])

    with cdp.Browser(browser_bin) as b:
        page = b.open("file://" + os.path.abspath(page_path))
        check(page.evaluate("document.body.dataset.ready") == "1", "the page's script ran")
        n_rows = page.evaluate("document.querySelectorAll('#rows tr.feature-row').length")
        check(n_rows == want["d_sae"], f"the table has {n_rows} feature rows, d_sae = {want['d_sae']}")

        page.click("th[data-key=density]")
        page.wait_for("document.querySelector('th[data-key=density]').classList.contains('sorted-desc')")
        first = int(page.evaluate("document.querySelector('#rows tr.feature-row').dataset.feature"))
        densest = max(want["counts"])
        lowest_densest = want["counts"].index(densest)
        check(want["counts"][first] == densest and first == lowest_densest,
              f"sorted by density, feature {first} ({want['counts'][first]} rows) is first; "
              f"the densest fires on {densest} rows (lowest id {lowest_densest})")
        shown = page.evaluate("[...document.querySelectorAll('#rows tr.feature-row')]"
                              ".map(tr => Number(tr.dataset.feature))")
        counts = [want["counts"][i] for i in shown]
        check(counts == sorted(counts, reverse=True), "the whole table is in density order")

        card = want["card"]
        page.click(f"#rows tr.feature-row[data-feature='{card}'] a")
        got_card = page.wait_for("document.getElementById('card').dataset.feature")
        check(got_card == str(card), f"the click opened the card of feature {card}")
        rows = page.evaluate("[...document.querySelectorAll('#card .top-row')]"
                             ".map(e => Number(e.dataset.row))")
        check(rows == want["top_rows"],
              f"card {card} shows top rows {rows}, sae_encode says {want['top_rows']}")
        token = page.evaluate("document.querySelector('#card .top-row .text .hl').textContent")
        check(token == f"w{want['top_rows'][0]}", f"the top row's token '{token}' is highlighted")
        text = page.evaluate("document.querySelector('#card .top-row .text').textContent")
        check(text == f"row {want['top_rows'][0]} <context>w{want['top_rows'][0]}& after",
              f"its label is shown as text: '{text}'")
        errors = page.console_errors()
        check(not errors, f"no script errors ({errors})")
        shot = os.path.join(work, "dashboard.png")
        with open(shot, "wb") as f:
            f.write(page.screenshot())
        print("screenshot: " + shot)

        page = b.open("file://" + os.path.abspath(image_path))
        thumbs = page.evaluate("document.querySelectorAll('#rows .thumb canvas').length")
        fired = sum(1 for c in image_want["counts"] if c > 0)
        check(thumbs == fired, f"the table draws the top row of each of the {fired} features that fire")
        card = image_want["card"]
        page.click(f"#rows tr.feature-row[data-feature='{card}'] a")
        page.wait_for("document.getElementById('card').dataset.feature")
        canvases = page.evaluate("[...document.querySelectorAll('#card .top-row canvas')]"
                                 ".map(c => c.width + 'x' + c.height)")
        rows = page.evaluate("[...document.querySelectorAll('#card .top-row')]"
                             ".map(e => Number(e.dataset.row))")
        check(rows == image_want["top_rows"] and canvases == ["4x4"] * TOP,
              f"an image model's card draws its top rows {rows} as 4x4 images")
        dec = page.evaluate("document.querySelectorAll('#dec canvas').length")
        check(dec == 1, "and its decoder direction")
        check(not page.console_errors(), "no script errors on the image page")
        shot = os.path.join(work, "dashboard-image.png")
        with open(shot, "wb") as f:
            f.write(page.screenshot())
        print("screenshot: " + shot)
    print(f"browser test passed in {time.monotonic() - start:.1f} s")


if __name__ == "__main__":
    main()
