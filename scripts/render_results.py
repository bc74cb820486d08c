"""Render every docs/results/*.md (and the index and the README's results table) from its JSON.

    python scripts/render_results.py            # rewrite the pages
    python scripts/render_results.py --check    # change nothing; exit 1 if a page is out of date

A page is never edited by hand: change the JSON (or rerun the script that measured it), then run
this.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import results_io


def stale_pages(root: Path | None = None) -> list[Path]:
    """Pages whose text differs from what their JSON renders to."""
    base = results_io.results_dir(root)
    expected = {
        base / f"{n}.md": results_io.markdown(n, results_io.load(n, root))
        for n in results_io.names(root)
    }
    expected[base / results_io.INDEX] = results_io.index_markdown(root)
    stale = [p for p, text in expected.items() if not p.exists() or p.read_text() != text]
    readme = Path(root or results_io.REPO) / "README.md"
    if readme.exists() and results_io.readme_block(root) not in readme.read_text():
        stale.append(readme)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="report stale pages, write nothing")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_pages()
        for path in stale:
            print(f"out of date: {path} (run python scripts/render_results.py)")
        return 1 if stale else 0
    for path in results_io.render_all():
        print(path.relative_to(results_io.REPO))
    return 0


if __name__ == "__main__":
    sys.exit(main())
