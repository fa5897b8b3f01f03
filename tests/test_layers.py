"""One way down the layers (../shared/DESIGN.md): no module imports one above it, and no
imports form a cycle, imports inside functions and under `if TYPE_CHECKING:` included (a module
that names a higher one's types depends on it all the same). Read from the source, so an import
that only runs on some path counts too. Lazy names resolved by string (the WebSocket upgrade,
`hio_http.StaticSink`) are the way a lower layer is handed a higher one."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "hio_http"

# Each module's layer; a module may import from its own layer or below.
LAYERS = {
    1: ["timing", "version"],
    2: ["polling", "stalls", "doing"],
    3: ["net"],
    4: ["grammar"],
    5: ["chunked", "request", "requesting", "framing", "wsgi", "responding", "compression",
        "client_parsing", "client_bodies", "forwarding", "proxy_protocol", "accesslog",
        "websocket_frames", "pool"],
    6: ["threaded", "settings", "client_response", "client_exchange",
        "client_protocols", "hosting"],
    7: ["client_session", "sse", "static", "websocket"],
    8: ["stewarding", "serving", "client_core"],
    9: ["client_events", "websocket_client", "clienting"],
    10: ["compat", "compat.http", "compat.http.adapting", "compat.http.serving",
         "compat.http.clienting"],
    11: ["testing", "pytest_plugin"],
    12: ["build", "demo", "config", "workers", "cli", "tuning", "metrics", "reloading", "__main__", ""],  # "": the package's re-exports
}
LAYER_OF = {name: layer for layer, names in LAYERS.items() for name in names}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


class Imports(ast.NodeVisitor):
    """The package modules a module imports, wherever the import statement stands."""

    def __init__(self, name: str, is_package: bool):
        parts = name.split(".") if name else []  # "": the package itself
        self.package = parts if is_package else parts[:-1]
        self.found: set = set()

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name == "hio_http" or alias.name.startswith("hio_http."):
                self.found.add(alias.name[len("hio_http."):] if "." in alias.name else "")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.level:
            base = self.package[:len(self.package) - (node.level - 1)]
        elif node.module and (node.module == "hio_http" or node.module.startswith("hio_http.")):
            base, node_module = [], node.module[len("hio_http"):].lstrip(".")
            self._add(base, node_module, node)
            return
        else:
            return
        self._add(base, node.module, node)

    def _add(self, base: list, module, node: ast.ImportFrom) -> None:
        target = ".".join(base + ([module] if module else []))
        if module is None:  # from . import x: x may be a module
            for alias in node.names:
                candidate = ".".join(base + [alias.name])
                self.found.add(candidate if candidate in LAYER_OF else target)
        else:
            self.found.add(target)


def graph() -> dict:
    edges = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        name = module_name(path)
        visitor = Imports(name, path.name == "__init__.py")
        visitor.visit(ast.parse(path.read_text(), str(path)))
        edges[name] = visitor.found - {name}
    return edges


def test_every_module_has_a_layer():
    edges = graph()
    assert set(edges) - set(LAYER_OF) == set(), "add new modules to LAYERS (and DESIGN.md)"
    imported = set().union(*edges.values())
    assert imported - set(LAYER_OF) == set(), "an import the check did not resolve"


def test_no_module_imports_one_above_it():
    upward = [f"{name} (layer {LAYER_OF[name]}) imports {target} (layer {LAYER_OF[target]})"
              for name, targets in graph().items() for target in sorted(targets)
              if LAYER_OF.get(target, 0) > LAYER_OF[name]]
    assert upward == []


def test_imports_form_no_cycle():
    edges = graph()
    state: dict = {}
    cycles = []

    def visit(node, trail):
        state[node] = "open"
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                cycles.append(" -> ".join(trail[trail.index(target):] + [target]))
            elif target not in state:
                visit(target, trail + [target])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    assert cycles == []


def test_the_check_sees_imports_inside_functions():
    source = "def f():\n    from .serving import Server\n"
    visitor = Imports("static", is_package=False)
    visitor.visit(ast.parse(source))
    assert visitor.found == {"serving"}
