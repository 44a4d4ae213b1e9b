#!/usr/bin/python3
"""A PNG of a dashboard page as headless Chromium draws it (cdp.py).

    screenshot.py PAGE.html OUT.png [--size 1280x1400] [--click SELECTOR]...
                  [--top]

Each --click is a real mouse click on the first element matching SELECTOR,
in order (e.g. the density header, then the first feature's link, to show
the densest feature's card); --top scrolls back to the top of the page
before the picture. Exit status 77 without Chromium.
"""
import argparse
import os
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cdp  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("page")
    ap.add_argument("out")
    ap.add_argument("--size", default="1280x1400")
    ap.add_argument("--click", action="append", default=[])
    ap.add_argument("--top", action="store_true")
    args = ap.parse_args()
    if not cdp.find_chromium():
        print("screenshot.py: no chromium (Debian: apt-get install chromium): no screenshot",
              file=sys.stderr)
        sys.exit(77)
    width, height = (int(v) for v in args.size.split("x"))
    with cdp.Browser() as b:
        page = b.open("file://" + os.path.abspath(args.page), width, height)
        for selector in args.click:
            page.click(selector)
            time.sleep(0.3)  # the click's handlers and the redraw
        if args.top:
            page.evaluate("window.scrollTo(0, 0)")
        errors = page.console_errors()
        if errors:
            sys.exit("screenshot.py: the page reported errors: %s" % errors)
        with open(args.out, "wb") as f:
            f.write(page.screenshot())
    print("%s: %s" % (args.out, args.size))


if __name__ == "__main__":
    main()
