"""``npu junit-summary build/regress.xml``: the counts of a JUnit XML file and its failures
(``make regress``)."""

import argparse
import xml.etree.ElementTree as ET
from pathlib import Path


def summarize(path: str | Path) -> int:
    """Print every failed case and the counts; 1 if any case failed or none ran."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    total = failed = skipped = 0
    for suite in suites:
        for case in suite.iter("testcase"):
            total += 1
            if case.find("failure") is not None or case.find("error") is not None:
                failed += 1
                print(f"FAILED {case.get('classname')}::{case.get('name')}")
            elif case.find("skipped") is not None:
                skipped += 1
    print(f"regress: {total - failed - skipped} passed, {failed} failed, {skipped} skipped "
          f"({path})")
    return 1 if failed or total == skipped else 0


# ---- `npu junit-summary` ----------------------------------------------------------------------

def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", nargs="?", default="build/regress.xml", help="JUnit XML file")


def main(args: argparse.Namespace) -> int:
    return summarize(args.path)
