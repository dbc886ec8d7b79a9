"""pipelines/dagster_private.py is the one door to Dagster's private modules: every name it lists
imports from the installed Dagster, takes the parameters conescope passes and is used by the project, and
no other module of the project imports a private Dagster module."""

from __future__ import annotations

import ast
import inspect
import re
from datetime import UTC, datetime

import pytest

from pipelines import dagster_private
from pipelines.dagster_private import PRIVATE, resolve
from tests.doc_pages import REPO

PRIVATE_ROOTS = ("dagster._", "dagster_shared")


@pytest.mark.parametrize("name", sorted(PRIVATE))
def test_each_private_name_imports_and_takes_the_parameters_conescope_passes(name):
    entry = PRIVATE[name]
    obj = resolve(name)
    assert obj is not None, name
    if not entry.parameters:
        return
    signature = inspect.signature(obj)
    kinds = {p.kind for p in signature.parameters.values()}
    if inspect.Parameter.VAR_KEYWORD in kinds and len(signature.parameters) <= 2:
        return  # a record built from **kwargs: constructed below where conescope builds one
    missing = [p for p in entry.parameters if p not in signature.parameters]
    assert missing == [], f"{entry.module}.{entry.attribute}{signature} no longer takes {missing}"


def test_records_built_from_keywords_take_conescope_s_keywords():
    context = dagster_private.TemporalContext(effective_dt=datetime.now(UTC), last_event_id=None)
    assert context.last_event_id is None


def test_every_listed_name_is_used_by_the_project():
    """A name nothing uses any more leaves the list (the list is the count of what an upgrade can break)."""
    adapter = REPO / "pipelines" / "dagster_private.py"
    sources = "\n".join(p.read_text(encoding="utf-8") for folder in ("assets", "bench", "pipelines", "storage", "tests")
                        for p in (REPO / folder).rglob("*.py") if p != adapter)
    unused = [name for name in PRIVATE if not re.search(rf"\b{name}\b", sources)]
    assert unused == []


def test_an_unknown_name_is_an_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'NotAName'"):
        dagster_private.NotAName  # noqa: B018


def _private_imports(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) else []
        found += [f"{node.lineno}: {n}" for n in names if n.startswith(PRIVATE_ROOTS)]
    return found


def test_no_other_module_imports_a_private_dagster_module():
    assert _private_imports("import dagster\nfrom dagster._core import x\nimport dagster_shared.ipc\n"
                            "from dagster import DagsterRun\n") == ["2: dagster._core", "3: dagster_shared.ipc"]
    adapter = REPO / "pipelines" / "dagster_private.py"
    files = [p for folder in ("assets", "bench", "conescope", "pipelines", "storage", "tests")
             for p in (REPO / folder).rglob("*.py") if p != adapter]
    assert len(files) > 50
    offending = [f"{p.relative_to(REPO)}:{line}" for p in sorted(files)
                 for line in _private_imports(p.read_text(encoding="utf-8"))]
    assert offending == []
