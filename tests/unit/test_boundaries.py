"""Who may import what: the tree's boundaries, checked so that they stay.

- A service (receiver, processor, saver, assessor, notifier, registry) imports no other service and no tool.
- Tools (the stack, the benchmark, the simulator, the dead-letter command, testkit) reach a service
  only through its public surface: its `admin` module, its settings (its configuration, which the
  configuration reference documents), and `processor.rules` (what a rule is, which the model of the
  rules in testkit/ is a model of).
- The processor's data path (processor/stream) does not depend on its control plane (processor/control).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("receiver", "processor", "saver", "assessor", "notifier", "registry")
TOOLS = ("stack", "bench", "simulator", "deadletters", "testkit", "openapi", "aiplint")
# Besides each service's admin module, what tools may import of a service.
PUBLIC = {"processor.rules"}


def imports(folder: str) -> Iterator[tuple[Path, int, str]]:
    """(file, line, module) of every import in the Python files below `folder`."""
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                yield from ((path, node.lineno, alias.name) for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                # `from saver import admin` imports saver.admin.
                yield from ((path, node.lineno, f"{node.module}.{alias.name}") for alias in node.names)


def top(module: str) -> str:
    return module.split(".", maxsplit=1)[0]


def where(path: Path, line: int) -> str:
    return f"{path.relative_to(ROOT)}:{line}"


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_imports_no_other_service_and_no_tool(service: str) -> None:
    wrong = [
        f"{where(path, line)}: {module}"
        for path, line, module in imports(service)
        if top(module) in {*SERVICES, *TOOLS, "tests"} - {service}
    ]
    assert not wrong, "\n".join(wrong)


@pytest.mark.parametrize("tool", TOOLS)
def test_tools_reach_a_service_only_through_its_public_surface(tool: str) -> None:
    wrong = [
        f"{where(path, line)}: {module}"
        for path, line, module in imports(tool)
        if top(module) in SERVICES
        and not any(module.startswith(f"{top(module)}.{public}") for public in ("admin", "settings"))
        and not any(module == p or module.startswith(p + ".") for p in PUBLIC)
    ]
    assert not wrong, "\n".join(wrong)


def test_tools_do_not_import_the_tests() -> None:
    wrong = [
        f"{where(path, line)}: {module}"
        for tool in TOOLS
        for path, line, module in imports(tool)
        if top(module) == "tests"
    ]
    assert not wrong, "\n".join(wrong)


def test_the_processors_data_path_does_not_depend_on_its_control_plane() -> None:
    wrong = [
        f"{where(path, line)}: {module}"
        for path, line, module in imports("processor/stream")
        if module.startswith("processor.control")
    ]
    assert not wrong, "\n".join(wrong)


def test_the_checks_see_the_imports_they_judge() -> None:
    # Guards the guard: each rule above has something to look at.
    assert any(module.startswith("processor.admin") for _, _, module in imports("stack"))
    assert any(module.startswith("processor.stream") for _, _, module in imports("processor/control"))
    assert any(top(module) == "runtime" for _, _, module in imports("processor/stream"))
