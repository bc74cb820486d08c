"""Print the node IDs of the tests a pytest JUnit XML report marks as skipped, one per line.

CI's second step runs these again once the optional extras are installed.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET


def skipped(report: str) -> list[str]:
    ids = []
    for case in ET.parse(report).iter("testcase"):
        if case.find("skipped") is None:
            continue
        if not case.get("classname"):  # a whole module skipped at import (pytest.importorskip)
            ids.append(case.get("name", "").replace(".", "/") + ".py")
            continue
        module, _, cls = case.get("classname", "").partition("." + "Test")
        path = module.replace(".", "/") + ".py"
        name = f"Test{cls}::{case.get('name')}" if cls else case.get("name")
        ids.append(f"{path}::{name}")
    return ids


if __name__ == "__main__":
    print("\n".join(skipped(sys.argv[1])))
