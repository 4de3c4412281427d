"""Print a summary of a JUnit XML file (``python -m flow.junit_summary build/regress.xml``)."""

import sys
import xml.etree.ElementTree as ET


def main(path):
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


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "build/regress.xml"))
