"""The shape of shared/cems, enforced: AWS only in adapters, key formats in one module, no import cycles.

Each check walks the source with `ast`, imports inside functions included, so a late import cannot
hide a dependency.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from cems.adapters.dynamodb import keys

CEMS = Path(__file__).resolve().parents[2] / "shared" / "cems"
KEY_MODULE = "cems.adapters.dynamodb.keys"
AWS_SDK = ("boto3", "botocore", "mypy_boto3_")
# Where the AWS SDK may be imported: the adapters, the local stack (it runs moto and builds the
# resources), the operator's command line (CloudFormation outputs, SigV4-signed admin requests, the
# audit log read from its table, operators added to the user pool, the audience count's signed POST)
# and the composition root that builds each function's clients. functions/ is outside shared/cems.
MAY_USE_AWS_SDK = (
    "cems.adapters",
    "cems.local",
    "cems.cli",
    "cems.reports.cli",
    "cems.console.audit_cli",
    "cems.console.user_cli",
    "cems.console.audience_cli",
)


@dataclass(frozen=True)
class Import:
    module: str  # the importing module
    target: str  # what it imports: a module, or a module's attribute (cems.x.Name)
    line: int
    type_checking: bool  # under `if TYPE_CHECKING:`: never run, so no import-time dependency


def module_name(path: Path) -> str:
    parts = path.relative_to(CEMS.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


@cache
def sources() -> tuple[tuple[str, Path, ast.Module], ...]:
    """Every module of shared/cems, parsed once for all the checks."""
    return tuple(
        (module_name(path), path, ast.parse(path.read_text(encoding="utf-8"), str(path)))
        for path in sorted(CEMS.rglob("*.py"))
    )


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(module: str, tree: ast.Module, is_package: bool) -> list[Import]:
    found: list[Import] = []

    def visit(node: ast.AST, type_checking: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_checking)
            return
        if isinstance(node, ast.Import):
            found.extend(Import(module, a.name, node.lineno, type_checking) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            found.append(Import(module, base, node.lineno, type_checking))
            found.extend(Import(module, f"{base}.{a.name}", node.lineno, type_checking) for a in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child, type_checking)

    visit(tree, False)
    return found


def all_imports() -> tuple[set[str], list[Import]]:
    modules: set[str] = set()
    found: list[Import] = []
    for module, path, tree in sources():
        modules.add(module)
        found.extend(imports_of(module, tree, path.name == "__init__.py"))
    return modules, found


def within(module: str, prefixes: tuple[str, ...]) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


# ------------------------------------------------------------------------------------------- AWS SDK


def test_only_adapters_the_local_stack_and_the_cli_import_the_aws_sdk() -> None:
    _, found = all_imports()
    offenders = sorted(
        f"{i.module}:{i.line} imports {i.target}"
        for i in found
        if i.target.startswith(AWS_SDK) and not within(i.module, MAY_USE_AWS_SDK)
    )
    assert offenders == [], "rule modules reach AWS through cems.ports, implemented in cems.adapters"


# What rule modules may take from an adapter module directly: jsonbody refuses numbers by boto3's own
# DynamoDB decimal context, so what it accepts is exactly what the serializer can write.
RULES_MAY_IMPORT = {("cems.jsonbody", "cems.adapters.dynamodb.items.DYNAMODB_CONTEXT")}
# Besides the adapters' own users, the composition root: it builds every adapter a function needs.
MAY_IMPORT_ADAPTERS = (*MAY_USE_AWS_SDK, "cems.wiring")


def test_rule_modules_reach_adapters_only_through_ports() -> None:
    _, found = all_imports()
    offenders = sorted(
        f"{i.module}:{i.line} imports {i.target}"
        for i in found
        if within(i.target, ("cems.adapters",))
        and not within(i.module, MAY_IMPORT_ADAPTERS)
        and (i.module, i.target) not in RULES_MAY_IMPORT
        and not any(i.module == m and t.startswith(i.target + ".") for m, t in RULES_MAY_IMPORT)
    )
    assert offenders == [], "a rule takes its collaborators as cems.ports Protocols; cems.wiring builds them"


def test_the_aws_sdk_check_sees_an_import_inside_a_function() -> None:
    tree = ast.parse("def f():\n    import boto3\n    from botocore.exceptions import ClientError\n")
    targets = [i.target for i in imports_of("cems.example", tree, is_package=False)]
    assert "boto3" in targets and "botocore.exceptions.ClientError" in targets


# ------------------------------------------------------------------------------------ key literals


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the docstring nodes (they describe key formats; they do not build keys)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def key_literals_in(tree: ast.Module) -> list[tuple[int, str]]:
    """(line, text) of every string that is, or holds, a key literal of the key module: a prefix
    (`ENR#`) at the start of any string or f-string piece, a fixed key (`PROFILE`) exactly, an infix
    (a cap counter's `#D#`) anywhere in one, or at its start without its leading `#` (`f"D#{day}"`,
    the piece after a channel joined on in another string)."""
    prefixes = tuple(k for k in keys.KEY_LITERALS if k.endswith("#"))
    fixed = {k for k in keys.KEY_LITERALS if not k.endswith("#")}
    infixes = tuple(keys.KEY_INFIXES)
    infix_tails = tuple(k.removeprefix("#") for k in keys.KEY_INFIXES)
    docstrings = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        text = node.value if isinstance(node, ast.Constant) and isinstance(node.value, str) else None
        if text is None or id(node) in docstrings:
            continue
        if (
            text.startswith(prefixes)
            or text in fixed
            or any(infix in text for infix in infixes)
            or text.startswith(infix_tails)
        ):
            found.append((node.lineno, text))
    return sorted(found)


def test_key_prefixes_and_fixed_keys_are_written_only_in_the_key_module() -> None:
    offenders = [
        f"{module}:{line} {text!r}"
        for module, _, tree in sources()
        # Cognito's MessageAction "SUPPRESS" (cems.adapters.cognito) is an API value, not a key.
        if module != KEY_MODULE and not within(module, ("cems.local", "cems.adapters.cognito"))
        for line, text in key_literals_in(tree)
    ]
    assert offenders == [], f"DynamoDB key formats belong in {KEY_MODULE}"


def test_the_key_module_lists_every_prefix_and_fixed_key_it_defines() -> None:
    constants = {
        value
        for name, value in vars(keys).items()
        if name.isupper() and isinstance(value, str) and (name.endswith(("_PREFIX", "_SK", "_PK")))
    }
    assert constants <= keys.KEY_LITERALS
    assert {
        "ID#",
        "CUST#",
        "PROFILE",
        "ENR#",
        "DATE#",
        "CAP#",
        "RPT#",
        "OPTIN#",
        "secret#",
    } <= keys.KEY_LITERALS
    assert set(keys.CAP_PERIOD_MARKS.values()) == keys.KEY_INFIXES == {"#D#", "#W#"}


def test_the_key_literal_check_finds_a_prefix_in_an_f_string() -> None:
    tree = ast.parse('"""ENR# in a docstring is fine."""\nkey = f"ENR#{customer}"\nsk = "PROFILE"\n')
    assert [text for _, text in key_literals_in(tree)] == ["ENR#", "PROFILE"]


def test_the_key_literal_check_finds_a_cap_counters_sort_key_however_it_is_joined() -> None:
    tree = ast.parse(
        '"""line#D#2026-12-03 in a docstring is fine."""\n'
        'day = f"{channel}#D#{label}"\n'
        'week = "line#W#2026-W49"\n'
        'period = f"W#{label}"\n'
        'plain = "Day#1 and W-49"\n'
    )
    assert [text for _, text in key_literals_in(tree)] == ["#D#", "line#W#2026-W49", "W#"]


# ------------------------------------------------------------------------------------ import cycles


def import_graph() -> dict[str, set[str]]:
    """cems module -> the cems modules it imports when run (function-level imports included;
    `if TYPE_CHECKING:` imports are never run, so they are left out). `from cems.x import y` is an
    edge to the module cems.x.y when there is one, else to cems.x."""
    modules, found = all_imports()
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for i in found:
        if i.type_checking or not i.target.startswith("cems"):
            continue
        target = i.target if i.target in modules else i.target.rpartition(".")[0]
        if target in modules and target != i.module and not i.module.startswith(target + "."):
            graph[i.module].add(target)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of the graph as a path that starts and ends at the same module, or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph[node]):
            if state.get(target) == 1:
                return [*path[path.index(target) :], target]
            if target not in state and (cycle := visit(target)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_shared_cems_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_names_the_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


# ------------------------------------------------------------------------------------------ channels


# Besides a class: an assignment, or (Python 3.12+) a `type` statement, defines a name.
_ASSIGNMENTS: tuple[type[ast.AST], ...] = (
    ast.Assign,
    ast.AnnAssign,
    *((ast.TypeAlias,) if hasattr(ast, "TypeAlias") else ()),
)


def lines_defining(name: str, tree: ast.Module) -> list[int]:
    found = []
    for node in ast.walk(tree):
        targets = node.targets if isinstance(node, ast.Assign) else [getattr(node, "target", None)]
        defines = (isinstance(node, ast.ClassDef) and node.name == name) or (
            isinstance(node, _ASSIGNMENTS) and any(isinstance(t, ast.Name) and t.id == name for t in targets)
        )
        if defines:
            found.append(node.lineno)
    return found


def definitions_of(name: str) -> list[str]:
    return [f"{module}:{line}" for module, _, tree in sources() for line in lines_defining(name, tree)]


def test_channel_is_defined_once() -> None:
    (models,) = [tree for module, _, tree in sources() if module == "cems.models"]
    assert definitions_of("Channel") == [f"cems.models:{line}" for line in lines_defining("Channel", models)]
    assert len(definitions_of("Channel")) == 1


def test_the_definition_check_sees_a_class_and_an_alias() -> None:
    tree = ast.parse('class Channel(StrEnum):\n    LINE = "line"\n\nChannel = Literal["line"]\n')
    assert lines_defining("Channel", tree) == [1, 4]
