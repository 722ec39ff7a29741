"""The package floors run one way (model -> util.data -> util.engine -> util.deploy -> the scripts, then the
benchmarks) and no module of the tree imports itself back through others: read from the source, every import at
any depth counted."""
import ast

from conftest import ROOT

FLOORS = ["model", "util.data", "util.engine", "util.deploy", "", "benchmarks"]  # each imports those before it
# only; "" is the scripts at the top (trainTeacher, run_cekd, ...); util.files and util.options sit below all
SHARED = ("util.files", "util.options")  # import nothing of the project: every floor may use them


def module_name(path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports_of(path, name: str, known: set[str]) -> set[str]:
    """The project modules `path` imports (relative imports resolved; a package's names to its modules; a
    benchmark's bare `import common` to benchmarks.common, as its sys.path makes it)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
            if name.startswith("benchmarks."):
                targets = [t if t in known else f"benchmarks.{t}" for t in targets]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                head = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(head + ([base] if base else []))
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        found |= {t for t in targets if t in known and t != name}
    return found


def project_graph() -> dict[str, set[str]]:
    paths = [p for d in ("model", "util") for p in (ROOT / d).rglob("*.py")]
    paths += sorted(ROOT.glob("*.py")) + sorted((ROOT / "benchmarks").glob("*.py"))
    known = {module_name(p) for p in paths}
    return {module_name(p): imports_of(p, module_name(p), known) for p in paths}


def floor(name: str) -> int:
    if name in SHARED:
        return -1
    if ("." not in name and name not in ("model", "util")) or (name.count(".") == 1 and name.startswith("util.")
                                                                and name not in FLOORS):
        return FLOORS.index("")  # a script at the top of the tree, or a command of util/ (util.demo, util.export)
    return max((i for i, f in enumerate(FLOORS) if f and (name == f or name.startswith(f + "."))), default=-1)


def cycle(graph: dict[str, set[str]]) -> list[str]:
    """One import circle of `graph` (a list of modules, the first repeated at the end), or []."""
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> list[str]:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt, path + [nxt])):
                return found
        state[node] = 2
        return []

    for start in sorted(graph):
        if start not in state and (found := visit(start, [start])):
            return found
    return []


def test_the_floors_import_downwards_only():
    graph = project_graph()
    assert "util.data.layout" in graph and "util.engine.config" in graph["util.engine.cli"]
    assert "benchmarks.common" in graph["benchmarks.bench_deploy"] and "util.engine" in graph["trainTeacher"]
    upward = sorted(f"{a} imports {b}" for a, deps in graph.items() for b in deps
                    if floor(a) >= 0 and floor(b) > floor(a))
    assert upward == []
    shared = sorted(f"{a} imports {b}" for a in SHARED for b in graph[a])
    assert shared == []


def test_no_import_circles():
    assert cycle(project_graph()) == []


def test_the_circle_finder_finds_circles():
    assert cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert cycle({"a": {"b"}, "b": set()}) == []
