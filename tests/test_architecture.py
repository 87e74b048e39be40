"""The package's shape, checked on its source: what import-linter (pyproject.toml, run by .ci/run)
cannot see. No private name crosses a module boundary, no import cycle among toolken's modules,
modules stay readable in size, the kernels stand alone, and the grammar engine imports without
torch."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = {"toolken": ROOT / "toolken", "toolken.kernels": ROOT / "kernels", "toolken.benchmarks": ROOT / "benchmarks"}
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def modules():
    """(dotted name, path, AST) of every Python module of the installed packages."""
    for package, folder in PACKAGES.items():
        for path in sorted(folder.rglob("*.py")):
            parts = path.relative_to(folder).with_suffix("").parts
            if package == "toolken" and parts[0] == "kernels":
                continue
            name = ".".join((package, *parts)).removesuffix(".__init__")
            yield name, path, ast.parse(path.read_text(encoding="utf-8"))


def imported(name, path, tree, top_level_only=False):
    """(imported module, [names]) of each `import` / `from ... import` in a module."""
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    nodes = tree.body if top_level_only else ast.walk(tree)
    for node in nodes:
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, []


def test_no_private_name_is_imported_from_another_module():
    bad = []
    for name, path, tree in modules():
        for module, names in imported(name, path, tree):
            if not module.startswith("toolken") or module == name:
                continue
            for n in names:
                if n.startswith("_") and not n.startswith("__") and not (module == "toolken" and n == "_grammar"):
                    bad.append(f"{name} imports {module}.{n}")
    assert not bad, bad


def test_no_import_cycles_between_modules():
    names = {name for name, _, _ in modules()}
    graph = {}
    for name, path, tree in modules():
        deps = set()
        for module, items in imported(name, path, tree, top_level_only=True):
            for target in [f"{module}.{i}" for i in items] + [module]:
                if target in names and target != name and not name.startswith(target + "."):
                    deps.add(target)
                    break
        graph[name] = deps
    state, cycles = {}, []

    def visit(node, stack):
        state[node] = 1
        for dep in graph.get(node, ()):
            if state.get(dep) == 1:
                cycles.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, stack + [dep])
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node, [node])
    # a package's __init__ re-exporting its submodules is not a cycle of logic
    cycles = [c for c in cycles if not any(c[i + 1].startswith(c[i] + ".") for i in range(len(c) - 1))]
    assert not cycles, cycles


def test_modules_and_functions_stay_readable():
    long_modules, long_functions = [], []
    for name, path, tree in modules():
        if not name.startswith("toolken.") or name.startswith(("toolken.kernels", "toolken.benchmarks")):
            continue
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_MODULE_LINES:
            long_modules.append(f"{path.relative_to(ROOT)}: {n} lines")
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                doc = ast.get_docstring(node) or ""
                if length > MAX_FUNCTION_LINES and "long because" not in doc.lower():
                    long_functions.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert not long_modules, long_modules
    assert not long_functions, f"say why in the docstring ('Long because ...'): {long_functions}"


def test_kernels_import_nothing_from_toolken_but_themselves():
    bad = [f"{name} imports {module}" for name, path, tree in modules() if name.startswith("toolken.kernels")
           for module, _ in imported(name, path, tree)
           if module.startswith("toolken") and not module.startswith("toolken.kernels")]
    assert not bad, bad


def test_grammar_imports_without_torch():
    code = ("import sys; sys.modules['torch'] = None; sys.modules['transformers'] = None\n"
            "import toolken.grammar, toolken\n"
            "assert 'torch' not in {m for m in sys.modules if sys.modules[m] is not None}\n"
            "print(toolken.grammar.compile_json_schema.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT.parent)
    assert out.returncode == 0, out.stderr[-2000:]
