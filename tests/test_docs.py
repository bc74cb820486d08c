"""The docs hold: result pages are what their JSON renders to, every result says where it comes from,
the README stays a doorway, links resolve, and the docs' zoo example meets the zoo's contract."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
RESULTS = DOCS / "results"
README = REPO / "README.md"
README_MAX_LINES = 250


def _load_results_io():
    spec = importlib.util.spec_from_file_location("results_io", REPO / "scripts" / "results_io.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


results_io = _load_results_io()


def _load_script(name: str):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


RESULT_NAMES = results_io.names()


def test_there_are_results():
    assert "default-run" in RESULT_NAMES, RESULT_NAMES


@pytest.mark.parametrize("name", RESULT_NAMES)
def test_result_page_is_rendered_from_its_json(name):
    """Nobody edits a figure on a page: change the JSON, then `python scripts/render_results.py`."""
    page = (RESULTS / f"{name}.md").read_text(encoding="utf-8")
    expected = results_io.markdown(name, results_io.load(name))
    assert page == expected, (
        f"docs/results/{name}.md is stale: run python scripts/render_results.py"
    )


def test_results_index_and_readme_table_are_rendered():
    index = (RESULTS / "README.md").read_text(encoding="utf-8")
    assert index == results_io.index_markdown(), "docs/results/README.md is stale: re-render"
    assert results_io.readme_block() in README.read_text(encoding="utf-8"), (
        "README.md's results table differs from docs/results/default-run.json: re-render"
    )


@pytest.mark.parametrize("name", RESULT_NAMES)
def test_result_says_where_it_comes_from(name):
    record = json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))
    for key in ("title", "commit", "command", "machine", "data_source", "date"):
        assert isinstance(record.get(key), str) and record[key].strip(), f"{name}: no {key}"
    dt.date.fromisoformat(record["date"])
    table = record["table"]
    assert table and all(isinstance(row, dict) and row for row in table), f"{name}: empty table"
    assert all(isinstance(note, str) for note in record.get("notes", [])), name


def test_every_md_in_results_has_its_json():
    pages = {p.stem for p in RESULTS.glob("*.md")} - {"README"}
    assert pages == set(RESULT_NAMES)


def test_readme_is_a_doorway():
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"


def test_readme_test_command_is_the_one_ci_runs():
    """.ci/run runs the README's test command verbatim: the two must not drift apart."""
    command = 'pip install -e ".[test]" && python -m pytest'
    assert f"    {command}\n" in README.read_text(encoding="utf-8")
    assert f"({command})" in (REPO / ".ci" / "run").read_text(encoding="utf-8")


# ---- links --------------------------------------------------------------------------------------

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", flags=re.S | re.M)


def _prose(text: str) -> str:
    """Markdown without fenced code blocks (a TOML comment there is not a heading)."""
    return FENCE.sub("", text)


def _anchors(path: Path) -> set[str]:
    """GitHub's heading anchors: lowercase, punctuation dropped, spaces to hyphens, -1 on repeats."""
    seen: dict[str, int] = {}
    anchors = set()
    for line in _prose(path.read_text(encoding="utf-8")).splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


MARKDOWN = [README, *sorted(DOCS.rglob("*.md"))]


@pytest.mark.parametrize("page", MARKDOWN, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_resolve(page):
    broken = []
    for target in LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (page.parent / file_part).resolve() if file_part else page
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.relative_to(REPO)}: {broken}"


def test_readme_links_the_guide():
    text = README.read_text(encoding="utf-8")
    for page in ("data", "zoo", "profiles", "transfer", "ensembles", "robustness"):
        assert f"docs/{page}.md" in text, page
    for page in ("backends-and-gpus", "run-folder", "export", "CONTRACTS", "layers"):
        assert f"docs/{page}.md" in text, page


# ---- code cites data files, not prose -----------------------------------------------------------


def test_results_cited_in_code_exist():
    """A constant that cites a measurement names a docs/results file; the file must be there."""
    cited = set()
    for folder in ("benchmark", "zoo", "ensembles", "reports", "scripts"):
        for path in (REPO / folder).rglob("*.py"):
            cited |= set(re.findall(r"docs/results/[\w.-]+\.(?:json|md)\b", path.read_text()))
    assert cited, "no code cites docs/results"
    missing = sorted(name for name in cited if not (REPO / name).is_file())
    assert not missing, missing


def test_profiles_page_option_reference_is_generated_from_the_schema_rules():
    """docs/profiles.md's reference tables are what scripts/render_options.py makes of the schema's
    rules and defaults (every key, its default, what it accepts), and every rule's table has a
    section there: a key added to the schema without re-rendering fails here."""
    schema = pytest.importorskip("benchmark.config.schema")
    render = _load_script("render_options")
    text = (DOCS / "profiles.md").read_text(encoding="utf-8")
    assert render.options_block() in text, (
        "docs/profiles.md is stale: run scripts/render_options.py"
    )
    rule_tables = [
        v for k, v in vars(schema).items() if k.endswith("_RULES") and isinstance(v, dict)
    ]
    covered = [rules for _, rules, _ in render.SECTIONS]
    for rules in rule_tables:  # ENSEMBLE_RULES is inside ENSEMBLES_TABLE_RULES
        assert any(set(rules) <= set(c) for c in covered), sorted(rules)
    for _, rules, defaults in render.SECTIONS:
        for key, default in defaults.items():  # every default is accepted by its own rule
            assert key in rules and rules[key].accepts(default), (key, default)


# ---- the "Add an architecture" example ----------------------------------------------------------


def test_add_an_architecture_example_meets_the_zoo_contract(tmp_path, monkeypatch):
    """docs/zoo.md's example, executed as written, passes the checks every zoo entry passes."""
    monkeypatch.setenv("ZOOBENCH_CACHE", str(tmp_path / "cache"))
    import zoo_contract

    import zoo.registry

    zoo.registry.list_models()  # the built-in zoo first, so the example is one entry among them
    name = zoo_contract.EXAMPLE_NAME
    assert name not in zoo.registry.list_models()
    code = compile(zoo_contract.docs_example(), str(DOCS / "zoo.md"), "exec")
    try:
        exec(code, {"__name__": "zoobench_docs_example"})
        assert name in zoo.registry.list_models(kind="scratch")
        zoo_contract.check_entry(name)
    finally:
        zoo.registry.unregister(name)
    assert name not in zoo.registry.list_models()


# ---- scripts/results_io -------------------------------------------------------------------------


def test_write_result_writes_json_page_and_index(tmp_path):
    path = results_io.write_result(
        "demo",
        title="A demo",
        command="python scripts/demo.py",
        data_source="nothing",
        table=[{"z": 1, "a": 0.5}, {"a": 0.25, "b": "x|y"}],
        notes=["first", "second"],
        root=tmp_path,
    )
    assert path == tmp_path / "docs" / "results" / "demo.json"
    record = json.loads(path.read_text())
    assert list(record["table"][0]) == ["z", "a"]  # column order kept
    for key in ("commit", "machine", "date"):
        assert record[key].strip(), key
    dt.date.fromisoformat(record["date"])
    page = (path.parent / "demo.md").read_text()
    assert page == results_io.markdown("demo", record)
    header = next(line for line in page.splitlines() if line.startswith("| z"))
    assert [cell.strip() for cell in header.strip("|").split("|")] == ["z", "a", "b"]
    assert "0.50" in page and "x\\|y" in page
    assert "[demo](demo.md)" in (path.parent / "README.md").read_text()
    assert sorted(p.name for p in path.parent.iterdir()) == ["README.md", "demo.json", "demo.md"]


def test_write_result_refuses_bad_input(tmp_path):
    common = dict(title="t", command="c", data_source="d", root=tmp_path)
    with pytest.raises(TypeError):
        results_io.write_result("demo", table={"a": 1}, **common)
    with pytest.raises(TypeError):
        results_io.write_result("demo", table=[{"a": 1}], notes="one string", **common)
    with pytest.raises(ValueError):
        results_io.write_result("../escape", table=[{"a": 1}], **common)
    assert not (tmp_path / "docs" / "results").exists() or not any(
        (tmp_path / "docs" / "results").iterdir()
    )


def test_describe_machine_is_one_line():
    line = results_io.describe_machine()
    assert line and "\n" not in line and "cores" in line
