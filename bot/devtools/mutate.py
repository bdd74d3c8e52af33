"""`make mutate`: mutation testing of the code that guards the doors.

For each target (a few named functions in a few files, and the fast test files that exercise
them) every mutant is one small change to the syntax tree of one of those functions: a
comparison flipped (`<` to `<=`, `==` to `!=`, `in` to `not in`, `is` to `is not`), `and` and
`or` swapped, a `not` dropped, an `if`'s condition negated, `True`/`False` swapped, an integer
moved by one, arithmetic flipped (`+`/`-`, `*`/`/`), `return x` made `return None`, a `raise`
or a call statement (`f()`, `await f()`) removed, `x.lower()`/`x.strip()` made `x`, a string
that is compared or used as a key changed, and in SQL text `<=`/`<`, `>`/`>=`, `=`/`!=`,
`AND`/`OR`, `OR IGNORE`/`OR REPLACE` swapped in conditions. Logging calls, docstrings and the
text of messages are left alone (what they change is not what these tests guard).

Each mutant runs in a forked child of a parent that has imported the heavy third-party packages
once: the child installs an import hook that compiles the mutated tree in place of the module,
runs the target's test files with pytest (`-x`, one process, no xdist) and exits; a child still
running after the timeout (3× the unmutated run, at least 20 s) has its process group killed.
A mutant is killed when the tests fail, survives when they pass. The rate is
(killed + timed out) / (mutants − equivalent), the equivalent ones being those listed, with the
reason, in tests/mutation_equivalent.txt.

    python -m bot.devtools.mutate [TARGET ...] [--list]
"""

from __future__ import annotations

import argparse
import ast
import copy
import gc
import importlib.abc
import importlib.machinery
import importlib.util
import json
import os
import signal
import sys
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
EQUIVALENT = ROOT / "tests" / "mutation_equivalent.txt"
PRELOAD = (
    "pytest",
    "aiohttp",
    "aiohttp.web",
    "slack_bolt.async_app",
    "slack_sdk",
    "boto3",
    "botocore",
    "pydantic_settings",
    "aiosqlite",
    "hypothesis",
    "prometheus_client",
    "typer",
    "rich",
)


@dataclass(frozen=True)
class Source:
    """One file, and the functions in it (qualified names: `Class.method`) to mutate."""

    path: str
    functions: tuple[str, ...]
    module: str = ""  # the name it is imported as, when not its path's (the tool's own test)


@dataclass(frozen=True)
class Target:
    """What `make mutate` reports on: sources to mutate, the fast tests that guard them."""

    name: str
    sources: tuple[Source, ...]
    tests: tuple[str, ...]
    select: str = ""  # a pytest -k expression, when only some tests of those files apply


TARGETS: tuple[Target, ...] = (
    Target(
        "github",
        (
            Source(
                "bot/github.py",
                (
                    "verify_signature",
                    "_get",
                    "_str",
                    "parse_pull_request",
                    "WebhookEndpoint.__init__",
                    "WebhookEndpoint.handle",
                    "WebhookEndpoint._handle",
                ),
            ),
        ),
        ("tests/test_github_http.py", "tests/test_doors.py"),
    ),
    Target(
        "slack-requests",
        (
            Source(
                "bot/server.py",
                (
                    "_slack_events",
                    "slack_signature_problem",
                    "malformed_event",
                    "malformed_payload",
                    "create_web_app",
                ),
            ),
            Source("bot/guard.py", ("read_bounded", "guard")),
        ),
        ("tests/test_slack_http.py", "tests/test_hostile.py", "tests/test_doors.py"),
    ),
    Target(
        "dispatch",
        (
            Source(
                "bot/slack/dispatch.py",
                (
                    "CommandParser.error",
                    "CommandParser.exit",
                    "Command.parse",
                    "Dispatcher.help_text",
                    "Dispatcher.plan",
                    "Dispatcher.dispatch",
                    "Dispatcher.click",
                    "run_reporting",
                ),
            ),
            Source(
                "bot/slack/context.py",
                (
                    "CommandContext.is_deployer",
                    "CommandContext.require_changer",
                    "CommandContext.require_deployer",
                    "change_refusal",
                ),
            ),
        ),
        ("tests/test_slack_http.py", "tests/test_operators.py", "tests/test_doors.py"),
        # test_operators' end-to-end tests need docker and a PR environment: too slow here
        "not (environment_commands or operator_and_a_deployer or cards_button or thread_reply)",
    ),
    Target(
        "store",
        (
            Source(
                "bot/store/sqlite.py",
                (
                    "SqliteStore.claim",
                    "SqliteStore.claimed",
                    "SqliteStore.save_environment",
                    "SqliteStore.acquire_lock",
                    "SqliteStore.release_lock",
                    "SqliteStore.hold_lease",
                    "SqliteStore.get_lock",
                    "SqliteStore.reserve_post",
                    "SqliteStore.posted",
                    "SqliteStore.prune",
                ),
            ),
            Source("bot/store/lease.py", ("renewing",)),
        ),
        ("tests/test_store.py", "tests/test_store_contract.py"),
        "not dynamo",
    ),
)

# ------------------------------------------------------------------------------ the mutations

COMPARE_SWAP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.Lt: ast.LtE,
    ast.LtE: ast.Lt,
    ast.Gt: ast.GtE,
    ast.GtE: ast.Gt,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
ARITHMETIC_SWAP: dict[type[ast.operator], type[ast.operator]] = {
    ast.Add: ast.Sub,
    ast.Sub: ast.Add,
    ast.Mult: ast.Div,
    ast.Div: ast.Mult,
    ast.FloorDiv: ast.Mult,
    ast.Pow: ast.Mult,
}
SQL_SWAPS = (
    (" <= ", " < "),
    (" < ", " <= "),
    (" > ", " >= "),
    (" >= ", " > "),
    (" = ", " != "),
    (" AND ", " OR "),
    (" OR ", " AND "),
    ("OR IGNORE", "OR REPLACE"),
)
NORMALISING = frozenset({"lower", "upper", "strip"})  # `x.lower()` made `x`
KEYED_CALLS = frozenset({"get", "getall", "_get", "_str", "getfixturevalue"})


@dataclass(frozen=True)
class Mutant:
    """One change: where (file, function, line), what it was and what it became."""

    path: str
    function: str
    line: int
    before: str
    after: str
    statement: int = 0  # the first line of the statement it is in: what a trace sees run

    @property
    def key(self) -> str:
        """Stable across unrelated edits (no line number): how the equivalent list names it."""
        return f"{self.path} | {self.function} | {self.before} -> {self.after}"


def _is_logging(call: ast.Call) -> bool:
    func = call.func
    return (
        isinstance(func, ast.Attribute)
        and isinstance(func.value, ast.Name)
        and func.value.id in ("logger", "logging")
    )


def _call_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


class Mutator(ast.NodeTransformer):
    """Walks a module the same way every time, numbering the possible changes inside the chosen
    functions; with `apply` set, makes change number `apply` and no other."""

    def __init__(self, path: str, functions: Sequence[str], apply: int | None = None) -> None:
        self.path = path
        self.functions = set(functions)
        self.apply = apply
        self.found: list[Mutant] = []
        self.scope: list[str] = []
        self.inside: str | None = None  # the chosen function being walked
        self.keyed: set[int] = set()  # ids of string constants compared or used as keys
        self.sql: set[int] = set()
        self.statements: list[int] = [0]

    def visit(self, node: ast.AST) -> ast.AST:
        if not isinstance(node, ast.stmt):
            return super().visit(node)  # type: ignore[no-any-return]
        self.statements.append(node.lineno)
        try:
            return super().visit(node)  # type: ignore[no-any-return]
        finally:
            self.statements.pop()

    # scopes

    def _scoped(self, node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> ast.AST:
        self.scope.append(node.name)
        qualname = ".".join(self.scope)
        entered = self.inside is None and qualname in self.functions
        if entered:
            self.inside = qualname
        body = node.body
        if (
            self.inside is not None
            and body
            and isinstance(body[0], ast.Expr)
            and isinstance(body[0].value, ast.Constant)
            and isinstance(body[0].value.value, str)
        ):
            # the docstring: walk the rest only
            rest = [self.visit(s) for s in body[1:]]
            node.body = [body[0], *(s for s in rest if isinstance(s, ast.stmt))]
        else:
            self.generic_visit(node)
        if entered:
            self.inside = None
        self.scope.pop()
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        return self._scoped(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        return self._scoped(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> ast.AST:
        return self._scoped(node)

    # bookkeeping

    def _offer(self, node: ast.AST, before: ast.AST, after: ast.AST) -> bool:
        """Number this change; True when it is the one to make."""
        if self.inside is None:
            raise RuntimeError("a change offered outside the chosen functions")
        index = len(self.found)
        self.found.append(
            Mutant(
                self.path,
                self.inside,
                getattr(node, "lineno", 0),
                ast.unparse(before),
                ast.unparse(after),
                self.statements[-1],
            )
        )
        return index == self.apply

    # the changes

    def visit_Expr(self, node: ast.Expr) -> ast.AST:
        value = node.value
        call = value.value if isinstance(value, ast.Await) else value
        if self.inside is None or not isinstance(call, ast.Call):
            return self.generic_visit(node)
        if _is_logging(call):
            return node
        gone = ast.Pass()
        if self._offer(node, node, gone):
            return ast.copy_location(gone, node)
        return self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> ast.AST:
        if self.inside is None:
            return self.generic_visit(node)
        if _is_logging(node):
            return node
        name = _call_name(node)
        if name in KEYED_CALLS and node.args:
            self.keyed.add(id(node.args[0]))
        if name == "execute" and node.args:
            self.sql.add(id(node.args[0]))
        normalising = name in NORMALISING and not node.args
        if (
            normalising
            and isinstance(node.func, ast.Attribute)
            and self._offer(node, node, node.func.value)
        ):
            return node.func.value
        return self.generic_visit(node)

    def visit_Subscript(self, node: ast.Subscript) -> ast.AST:
        self.keyed.add(id(node.slice))
        return self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        if self.inside is None:
            return self.generic_visit(node)
        for operand in (node.left, *node.comparators):
            self.keyed.add(id(operand))
            if isinstance(operand, ast.Tuple | ast.List | ast.Set):
                self.keyed.update(id(e) for e in operand.elts)
        for i, op in enumerate(node.ops):
            swapped = COMPARE_SWAP.get(type(op))
            if swapped is None:
                continue
            after = copy.deepcopy(node)
            after.ops[i] = swapped()
            if self._offer(node, node, after):
                return ast.copy_location(after, node)
        return self.generic_visit(node)

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        if self.inside is None:
            return self.generic_visit(node)
        after = copy.deepcopy(node)
        after.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
        if self._offer(node, node, after):
            return ast.copy_location(after, node)
        return self.generic_visit(node)

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        if self.inside is None or not isinstance(node.op, ast.Not):
            return self.generic_visit(node)
        if self._offer(node, node, node.operand):
            return node.operand
        return self.generic_visit(node)

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        swapped = ARITHMETIC_SWAP.get(type(node.op))
        if self.inside is None or swapped is None:
            return self.generic_visit(node)
        if isinstance(node.op, ast.Add) and (
            _is_text(node.left) or _is_text(node.right)
        ):  # "a" + "b" made "a" - "b" is a type error, not a test
            return self.generic_visit(node)
        return self._swap_operator(node, swapped)

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        swapped = ARITHMETIC_SWAP.get(type(node.op))
        if self.inside is None or swapped is None:
            return self.generic_visit(node)
        return self._swap_operator(node, swapped)

    def _swap_operator(
        self, node: ast.BinOp | ast.AugAssign, swapped: type[ast.operator]
    ) -> ast.AST:
        """Offer `node` with its arithmetic operator swapped for `swapped`'s."""
        after = copy.deepcopy(node)
        after.op = swapped()
        if self._offer(node, node, after):
            return ast.copy_location(after, node)
        return self.generic_visit(node)

    def visit_If(self, node: ast.If) -> ast.AST:
        test = node.test
        if self.inside is None or isinstance(test, ast.Compare | ast.BoolOp | ast.UnaryOp):
            return self.generic_visit(node)  # those have changes of their own
        after = ast.UnaryOp(op=ast.Not(), operand=test)
        if self._offer(node, test, after):
            node.test = ast.copy_location(after, test)
            return node
        return self.generic_visit(node)

    def visit_Raise(self, node: ast.Raise) -> ast.AST:
        if self.inside is None or node.exc is None:
            return self.generic_visit(node)
        gone = ast.Pass()
        if self._offer(node, node, gone):
            return ast.copy_location(gone, node)
        return self.generic_visit(node)

    def visit_Return(self, node: ast.Return) -> ast.AST:
        if self.inside is None or node.value is None:
            return self.generic_visit(node)
        if isinstance(node.value, ast.Constant) and node.value.value is None:
            return node
        after = ast.Return(value=ast.Constant(value=None))
        if self._offer(node, node, after):
            return ast.copy_location(after, node)
        return self.generic_visit(node)

    def visit_JoinedStr(self, node: ast.JoinedStr) -> ast.AST:
        return node  # f-strings build messages

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        if self.inside is None:
            return node
        value = node.value
        replacements: list[str | bool | int | float] = []
        if isinstance(value, bool):
            replacements = [not value]
        elif isinstance(value, int):
            replacements = [value + 1]
        elif isinstance(value, float):
            replacements = [value + 1.0]
        elif isinstance(value, str) and id(node) in self.sql:
            replacements = list(sql_mutants(value))
        elif isinstance(value, str) and id(node) in self.keyed:
            replacements = ["XX" + value + "XX"]
        for replacement in replacements:
            after = ast.Constant(value=replacement)
            if self._offer(node, node, after):
                return ast.copy_location(after, node)
        return node


def _is_text(node: ast.expr) -> bool:
    return isinstance(node, ast.JoinedStr) or (
        isinstance(node, ast.Constant) and isinstance(node.value, str)
    )


def sql_mutants(sql: str) -> list[str]:
    """SQL_SWAPS at each place a token appears in a condition (after the first WHERE or WHEN;
    `SET a = ?` made `SET a != ?` is a syntax error, not a test), and OR IGNORE anywhere."""
    conditions = min((i for i in (sql.find(" WHERE "), sql.find(" WHEN ")) if i != -1), default=-1)
    out: list[str] = []
    for a, b in SQL_SWAPS:
        at = sql.find(a)
        while at != -1:
            clause = a == "OR IGNORE" or (conditions != -1 and at > conditions)
            if clause and not sql.startswith(" OR IGNORE", at):
                out.append(sql[:at] + b + sql[at + len(a) :])
            at = sql.find(a, at + 1)
    return out


def parse(path: str) -> ast.Module:
    return ast.parse((ROOT / path).read_text(), path)


def mutants(source: Source) -> list[Mutant]:
    mutator = Mutator(source.path, source.functions)
    mutator.visit(parse(source.path))
    missing = set(source.functions) - {m.function for m in mutator.found}
    if missing:
        raise SystemExit(f"{source.path}: no mutants in {', '.join(sorted(missing))}: renamed?")
    seen: dict[str, int] = {}
    found = []
    for mutant in mutator.found:  # the same change twice in one function: #2, #3...
        seen[mutant.key] = seen.get(mutant.key, 0) + 1
        if seen[mutant.key] > 1:
            mutant = replace(mutant, after=f"{mutant.after} #{seen[mutant.key]}")
        found.append(mutant)
    return found


def mutated_tree(source: Source, index: int) -> ast.Module:
    mutator = Mutator(source.path, source.functions, apply=index)
    tree = ast.fix_missing_locations(mutator.visit(parse(source.path)))
    if not isinstance(tree, ast.Module):
        raise RuntimeError(f"{source.path}: mutant {index} is not a module")
    return tree


def module_name(path: str) -> str:
    """The name a file is imported as (commands/ installs as bot.commands)."""
    parts = Path(path).with_suffix("").parts
    if parts[0] == "commands":
        parts = ("bot", *parts)
    return ".".join(parts)


# ------------------------------------------------------------------------------ running them


class MutantLoader(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports one module from a mutated tree instead of its file."""

    def __init__(self, name: str, path: str, tree: ast.Module) -> None:
        self.name = name
        self.file = str(ROOT / path)
        self.tree = tree

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != self.name:
            return None
        return importlib.util.spec_from_loader(fullname, self, origin=self.file)

    def exec_module(self, module: ModuleType) -> None:
        module.__file__ = self.file
        exec(compile(self.tree, self.file, "exec"), module.__dict__)


def pytest_args(target: Target, tests: Sequence[str] | None = None) -> list[str]:
    args = ["-x", "-q", "-p", "no:cacheprovider", "--no-header"]
    if tests is not None:  # test ids (the tests that run the mutated line)
        return [*args, *tests]
    if target.select:
        args += ["-k", target.select]
    return [*args, *(str(ROOT / t) for t in target.tests)]


class LineRecorder:
    """A pytest plugin that records, per test, which lines of the given files ran (setup,
    call and teardown; in every thread)."""

    def __init__(self, files: Collection[str]) -> None:
        self.files = set(files)
        self.current: set[tuple[str, int]] | None = None
        self.ran: dict[str, list[tuple[str, int]]] = {}

    def _trace(self, frame: FrameType, event: str, arg: object) -> Any:
        if frame.f_code.co_filename not in self.files:
            return None
        if event == "line" and self.current is not None:
            self.current.add((frame.f_code.co_filename, frame.f_lineno))
        return self._trace

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(self, item: pytest.Item) -> Iterator[None]:
        self.current = set()
        sys.settrace(self._trace)
        threading.settrace(self._trace)
        try:
            yield
        finally:
            sys.settrace(None)
            threading.settrace(None)
            _, _, name = item.nodeid.partition("::")  # the id, from any directory
            self.ran[f"{item.path}::{name}"] = sorted(self.current)
            self.current = None


def run_child(
    target: Target,
    source: Source | None,
    index: int,
    timeout: float,
    log: Path,
    tests: Sequence[str] | None = None,
    coverage: Path | None = None,
) -> str:
    """Run the target's tests (or those `tests`) in a forked child, the mutant `index` of
    `source` in place of its module (or nothing changed; then `coverage` gets which test ran
    which lines, as JSON); "killed", "survived" or "timeout"."""
    pid = os.fork()
    if pid == 0:  # the child: never returns
        code = 3
        try:
            os.setpgrp()
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            if source is not None:
                name = source.module or module_name(source.path)
                loader = MutantLoader(name, source.path, mutated_tree(source, index))
                sys.meta_path.insert(0, loader)
            plugins: list[object] = []
            recorder = None
            if coverage is not None:
                recorder = LineRecorder([str(ROOT / s.path) for s in target.sources])
                plugins.append(recorder)
            gc.freeze()  # what the parent holds is never garbage: pytest's collections skip it
            code = int(pytest.main(pytest_args(target, tests), plugins=plugins))
            if recorder is not None and coverage is not None:
                coverage.write_text(json.dumps(recorder.ran))
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            code = os.waitstatus_to_exitcode(status)
            break
        if time.monotonic() > deadline:
            with _quiet():
                os.killpg(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return "timeout"
        time.sleep(0.05)
    if code == 0:
        return "survived"
    if code in (1, 2, 3):  # tests failed, interrupted (a collection error), crashed
        return "killed"
    raise RuntimeError(f"pytest exited {code} (see {log})")


class _quiet:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> bool:
        return exc[0] is not None and issubclass(exc[0], ProcessLookupError)  # type: ignore[arg-type]


def equivalent_keys(path: Path = EQUIVALENT) -> dict[str, str]:
    """`key  # reason` lines of the equivalent list, key to reason."""
    keys: dict[str, str] = {}
    if not path.exists():
        return keys
    for line in path.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        key, _, reason = line.partition("  # ")
        keys[key.strip()] = reason.strip()
    return keys


@dataclass
class Report:
    """What one target's run found."""

    target: str
    results: list[tuple[Mutant, str]] = field(default_factory=list)
    equivalent: dict[str, str] = field(default_factory=dict)

    def count(self, outcome: str) -> int:
        return sum(1 for _, o in self.results if o == outcome)

    @property
    def survivors(self) -> list[Mutant]:
        return [m for m, o in self.results if o == "survived"]

    @property
    def judged_equivalent(self) -> list[Mutant]:
        return [m for m in self.survivors if m.key in self.equivalent]

    @property
    def rate(self) -> float:
        changing = len(self.results) - len(self.judged_equivalent)
        detected = self.count("killed") + self.count("timeout")
        return detected / changing if changing else 1.0

    def lines(self) -> Iterator[str]:
        yield (
            f"{self.target}: {len(self.results)} mutants, {self.count('killed')} killed, "
            f"{self.count('survived')} survived ({len(self.judged_equivalent)} equivalent), "
            f"{self.count('timeout')} timeout; kill rate {self.rate:.1%} of behaviour-changing"
        )
        for mutant in self.survivors:
            mark = "equivalent" if mutant.key in self.equivalent else "SURVIVED"
            yield f"  {mark}: {mutant.path}:{mutant.line} {mutant.function}: {mutant.key}"


def run_target(target: Target, logs: Path, equivalent: dict[str, str]) -> Report:
    """The unmutated run first (it must pass; it records which test runs which line), then each
    mutant against the tests that run its line, in the order they ran; a mutant no test runs
    survives without a run."""
    report = Report(target.name, equivalent=equivalent)
    logs.mkdir(parents=True, exist_ok=True)
    coverage = logs / f"{target.name}-coverage.json"
    start = time.monotonic()
    baseline = run_child(
        target, None, -1, 1200, logs / f"{target.name}-baseline.log", coverage=coverage
    )
    if baseline != "survived":
        raise SystemExit(f"{target.name}: the tests fail unmutated (see {logs})")
    timeout = max(20.0, 3 * (time.monotonic() - start))
    ran: dict[str, list[list[object]]] = json.loads(coverage.read_text())
    running: dict[tuple[str, int], list[str]] = {}
    for test, lines in ran.items():
        for file, line in lines:
            running.setdefault((str(file), int(str(line))), []).append(test)
    every = [(source, i, m) for source in target.sources for i, m in enumerate(mutants(source))]
    for n, (source, index, mutant) in enumerate(every, 1):
        log = logs / f"{target.name}-{n}.log"
        tests = running.get((str(ROOT / source.path), mutant.statement), [])
        if tests:
            outcome = run_child(target, source, index, timeout, log, tests)
        else:
            outcome = "survived"
            log.write_text("no test runs this line\n")
        report.results.append((mutant, outcome))
        print(
            f"  [{n}/{len(every)}] {outcome} ({len(tests)} tests): {mutant.key}",
            file=sys.stderr,
            flush=True,
        )
        if outcome != "survived":
            log.unlink(missing_ok=True)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.devtools.mutate")
    parser.add_argument("targets", nargs="*", help="targets to run (all when none)")
    parser.add_argument("--list", action="store_true", help="list the mutants, run nothing")
    parser.add_argument("--logs", default="/tmp/uat-mutate", help="where pytest output goes")
    args = parser.parse_args(argv)
    names = {t.name for t in TARGETS}
    unknown = set(args.targets) - names
    if unknown:
        parser.error(f"unknown target {', '.join(sorted(unknown))}; known: {', '.join(names)}")
    chosen = [t for t in TARGETS if not args.targets or t.name in args.targets]
    if args.list:
        for target in chosen:
            for source in target.sources:
                for mutant in mutants(source):
                    print(f"{target.name}: {mutant.path}:{mutant.line} {mutant.key}")
        return 0
    for module in PRELOAD:
        __import__(module)
    logs = Path(args.logs)
    logs.mkdir(parents=True, exist_ok=True)
    equivalent = equivalent_keys()
    reports = []
    for target in chosen:
        print(f"{target.name}: running", file=sys.stderr, flush=True)
        reports.append(run_target(target, logs, equivalent))
    print()
    for report in reports:
        print("\n".join(report.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
