"""The layering of docs/ARCHITECTURE.md holds: the science layer imports no Dagster, DuckDB or
persistence code, no module imports one that imports it back, asset factories stay small, and every
file the architecture page names exists."""

from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("conescope", "storage", "assets", "pipelines")
# ``conescope.open`` (the notebook entry point in conescope/__init__.py) imports storage.notebook inside
# the function, on call: the package itself is imported by the storage layer it opens, so that one edge
# is left out of the graph (tests/test_notebook_api.py checks that ``import conescope`` loads no storage).
LAZY_FACADE = ("conescope", "storage.notebook")
MAX_FACTORY_LINES = 60


def _modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """Every project module ``path`` imports, anywhere in the file (function bodies and
    TYPE_CHECKING blocks included: they are dependencies too)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the package, up level - 1
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return {m for m in found if m in modules and m != name}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    graph = {name: _imports(path, name, modules) for name, path in modules.items()}
    graph[LAZY_FACADE[0]].discard(LAZY_FACADE[1])
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(component)

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_science_layer_imports_no_dagster_duckdb_or_persistence():
    offending = []
    for path in sorted((REPO / "conescope").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            offending += [f"{path.relative_to(REPO)}: {n}" for n in names
                          if n.split(".")[0] in ("dagster", "duckdb", "storage", "assets", "pipelines")]
    # The one exception: the notebook entry point ``conescope.open`` imports the storage layer lazily,
    # inside the function (``import conescope`` itself loads no storage code: tests/test_notebook_api.py).
    assert offending == ["conescope/__init__.py: storage.notebook", "conescope/__init__.py: storage.notebook"]


def test_no_import_cycle():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_asset_factories_stay_small():
    long = []
    for path in sorted((REPO / "assets").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef) and node.end_lineno - node.lineno + 1 > MAX_FACTORY_LINES:
                long.append(f"{path.name}:{node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert long == []


@pytest.mark.parametrize("doc", ["docs/ARCHITECTURE.md"])
def test_every_file_the_architecture_page_names_exists(doc):
    text = (REPO / doc).read_text(encoding="utf-8")
    named = set(re.findall(r"`((?:conescope|storage|assets|pipelines|tests|bench|docs|configs)/[\w/.*]*)`", text))
    assert len(named) > 30
    missing = [p for p in sorted(named) if "*" not in p and not (REPO / p).exists()]
    assert missing == []


# File names the user's pages cite that are not files of this repository, each with what it is.
NOT_IN_REPOSITORY = {
    "dagster_home/dagster.yaml": "the instance config conescope writes into the data root",
    "dagster.yaml": "the same, named bare",
    "_parts.json": "the part list the embedding writer stores beside a partition's parts, in the data root",
    "provenance.json": "the provenance a trained model's checkpoint keeps beside its weights, in the data root",
    "open_clip_config.json": "a file of a user's model folder (arch: local-dir:)",
    "annotations/captions_val2014.json": "a COCO source file, under raw/coco/",
    "coco/annotations/captions_val2014.json": "the same, from raw/",
    "dataset_coco.json": "Karpathy's split file, downloaded into raw/",
    "mapping/multi/multi_to_single.py": "a module of Dagster's source",
    "sentence_evaluations.py": "a script of Wolfe & Caliskan's repository (docs/fidelity.md)",
    "remote_representation/external_data.py": "a module of Dagster's source",
}
_SKIP_DIRS = {".git", ".venv", "data", "test-output", "node_modules", "__pycache__", ".pytest_cache", ".ruff_cache"}


def _user_pages() -> list[Path]:
    return [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _without_fenced_blocks(text: str) -> str:
    return re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)


def cited_file_names(text: str) -> set[str]:
    """The ``*.py``, ``*.md``, ``*.yaml``, ``*.json`` and ``*.toml`` names in the inline code spans and
    the link targets of a markdown page (fenced blocks aside; URLs and patterns with ``*`` or ``<``
    are not file names)."""
    prose = _without_fenced_blocks(text)
    spans = re.findall(r"`([^`\n]+)`", prose) + re.findall(r"\]\(([^)\s#]+)", prose)
    names = set()
    for span in spans:
        if "://" in span:
            continue
        found = re.findall(r"(?<![\w.*<>/-])[\w.][\w./-]*\.(?:py|md|yaml|json|toml)(?![\w*])", span)
        names |= {n.removeprefix("./") for n in found}
    return {n for n in names if not n.startswith("../")} | {
        n.removeprefix("../") for n in names if n.startswith("../")}


def _repository_files() -> tuple[set[str], set[str]]:
    paths = set()
    for folder, dirs, files in os.walk(REPO):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.startswith(".") or d == ".ci"]
        paths |= {str((Path(folder) / f).relative_to(REPO)) for f in files}
    return paths, {Path(p).name for p in paths}


def test_the_file_name_finder_sees_bare_names():
    names = cited_file_names("see `NOTES.md`, `tiny.yaml` and [x](docs/storage.md#warehouse);\n"
                             "`conescope/metrics/*.py`, `<m>.json`, `https://a.b/c.json`, `.yaml`\n"
                             "```bash\npython bench/embed.py\n```\n")
    assert names == {"NOTES.md", "tiny.yaml", "docs/storage.md"}


@pytest.mark.parametrize("doc", [str(p.relative_to(REPO)) for p in _user_pages()])
def test_every_file_the_user_pages_cite_exists(doc):
    paths, names = _repository_files()
    text = (REPO / doc).read_text(encoding="utf-8")
    base = (REPO / doc).parent.relative_to(REPO)
    missing = []
    for name in sorted(cited_file_names(text)):
        if name in NOT_IN_REPOSITORY:
            continue
        found = name in names if "/" not in name else (
            name in paths or str(Path(base, name)) in paths or (REPO / base / name).resolve().is_file())
        if not found:
            missing.append(name)
    assert missing == [], f"{doc} cites files the repository does not have"


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower().replace("`", ""))
    return text.replace(" ", "-")


def test_every_exception_is_cited():
    cited = set().union(*(cited_file_names(p.read_text(encoding="utf-8")) for p in _user_pages()))
    assert sorted(set(NOT_IN_REPOSITORY) - cited) == []


def test_slugs_are_githubs():
    assert _slug("`conescope dev`") == "conescope-dev"
    assert _slug("Metrics, transforms and ingestion") == "metrics-transforms-and-ingestion"
    assert _slug("From Python (notebooks)") == "from-python-notebooks"


@pytest.mark.parametrize("doc", [str(p.relative_to(REPO)) for p in _user_pages()])
def test_every_link_between_the_pages_resolves(doc):
    path = REPO / doc
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", _without_fenced_blocks(path.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue
        file, _, anchor = target.partition("#")
        linked = (path.parent / file).resolve() if file else path
        if not linked.exists():
            broken.append(target)
        elif anchor:
            headings = re.findall(r"^#+ (.+)$", _without_fenced_blocks(linked.read_text(encoding="utf-8")), flags=re.M)
            if anchor not in {_slug(h) for h in headings}:
                broken.append(target)
    assert broken == [], f"{doc}: links that do not resolve"


def test_the_code_cites_only_pages_of_the_repository():
    """Every ``*.md`` page a module, test, profile or config names exists here: no comment or docstring
    sends the reader to a document this repository does not hold."""
    paths, names = _repository_files()
    offending = []
    sources = [p for p in paths if p.endswith((".py", ".toml", ".yaml")) or p.startswith(".ci/")]
    for rel in sorted(set(sources) - {"tests/test_architecture.py"}):  # this file names missing pages on purpose
        text = (REPO / rel).read_text(encoding="utf-8", errors="replace")
        for name in set(re.findall(r"(?<![\w.*<>/-])(?:[\w-]+/)*[\w-]+\.md\b", text)):
            if name not in (paths if "/" in name else names):
                offending.append(f"{rel}: {name}")
    assert offending == []


SQL_START = re.compile(r"^\s*(SELECT|WITH|INSERT|DELETE|CREATE|UPDATE|DROP|ALTER|ATTACH|COPY)\s")
SQL_CALLS = ("execute", "executemany", "sql", "query")


def _sql_in(source: str) -> list[str]:
    """SQL in a module: a call of a connection's ``execute``/``sql``/``query``, or a string (an f-string by
    its first literal part) that starts with a statement's keyword; docstrings left out."""
    tree = ast.parse(source)
    skip = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) and node.body \
                and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant):
            skip.add(id(node.body[0].value))  # a docstring
        if isinstance(node, ast.JoinedStr):
            skip |= {id(v) for v in node.values}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in SQL_CALLS:
            found.append(f"line {node.lineno}: .{node.func.attr}(")
        text = node.values[0] if isinstance(node, ast.JoinedStr) and node.values else node
        if id(node) not in skip and isinstance(text, ast.Constant) and isinstance(text.value, str) \
                and SQL_START.match(text.value):
            found.append(f"line {node.lineno}: {text.value.strip()[:30]!r}")
    return found


def test_the_sql_finder_finds_sql():
    source = 'con.execute(q, [1])\nx = f"SELECT {c} FROM t"\ny = "WITH a AS (SELECT 1) SELECT * FROM a"\n'
    assert _sql_in(source) == ["line 1: .execute(", "line 2: 'SELECT'", "line 3: 'WITH a AS (SELECT 1) SELECT * '"]
    assert _sql_in('"""Create the tables."""\nx = "selected rows"\nlog.info("with care")\n') == []


def test_assets_hold_no_sql():
    """SQL lives in storage/ behind named functions (storage/metric_rows.py, storage/warehouse.py)."""
    found = [f"{path.relative_to(REPO)} {hit}" for path in sorted((REPO / "assets").rglob("*.py"))
             for hit in _sql_in(path.read_text(encoding="utf-8"))]
    assert found == []


def _imported(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add((node.module or "").split(".")[0])
    return names


def test_assets_parse_no_file_format():
    """Reading a model's config or a stored file's format is storage/'s or conescope/'s: assets/ parses no
    JSON (metadata values are Dagster's ``MetadataValue.json``, not the json module)."""
    assert [str(p.relative_to(REPO)) for p in sorted((REPO / "assets").rglob("*.py")) if "json" in _imported(p)] == []
