"""The protocol cores stay pure and layered (STYLE.md §1, §6; ARCHITECTURE.md "Rules of the house").

Every module under ``sip/`` and ``media/`` is read with ``ast`` (never imported), and the test fails naming the
file and line of each violation:

* no import of a module that does I/O, reads a clock, draws randomness or runs concurrently: ``FORBIDDEN``
  below (asyncio, socket, time, random, selectors, threading, subprocess, os, and their close relatives).
  Imports under ``if TYPE_CHECKING:`` are exempt from this rule only (``random.Random`` as the type of an
  injected generator, STYLE.md §6), since they never run;
* no call of the I/O builtins (``open``, ``print``, ``input``), of ``eval``/``exec``/``__import__``/
  ``breakpoint``, nor a wall-clock read through ``datetime.now()``/``utcnow()``/``today()``;
* layering: ``sip`` never imports ``gateway``; ``media`` imports neither ``gateway`` nor ``sip``; ``sip`` imports
  from ``media`` only ``media.sdp`` (the one SDP codec). Type-only imports count here too.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE_PACKAGES = ("sip", "media")

FORBIDDEN = frozenset({
    # named by STYLE.md and the brief
    "asyncio", "socket", "time", "random", "selectors", "threading", "subprocess", "os",
    # the same things by other names: randomness, processes, signals, TLS, sockets, files, dynamic imports
    "secrets", "uuid", "multiprocessing", "concurrent", "signal", "ssl", "socketserver", "shutil", "tempfile",
    "importlib", "urllib", "http",
})
FORBIDDEN_CALLS = frozenset({"open", "print", "input", "breakpoint", "eval", "exec", "__import__"})
CLOCK_METHODS = frozenset({"now", "utcnow", "today"})


@dataclass(frozen=True)
class Import:
    module: str  # absolute dotted name of what is imported (``pkg.mod`` or ``pkg.mod.name`` for from-imports)
    line: int
    type_only: bool


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(tree: ast.Module, name: str, is_package: bool) -> list[Import]:
    """Every import in ``tree`` (module ``name``), relative ones resolved to absolute names."""
    package = name.split(".") if is_package else name.split(".")[:-1]
    found: list[Import] = []

    def visit(node: ast.AST, type_only: bool) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.body:
                visit(child, True)
            for child in node.orelse:
                visit(child, type_only)
            return
        if isinstance(node, ast.Import):
            found.extend(Import(alias.name, node.lineno, type_only) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - (node.level - 1)] if node.level > 1 else package
                base_name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                base_name = node.module or ""
            found.append(Import(base_name, node.lineno, type_only))
            found.extend(Import(f"{base_name}.{alias.name}", node.lineno, type_only) for alias in node.names)
        for child in ast.iter_child_nodes(node):
            visit(child, type_only)

    visit(tree, False)
    return found


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def _within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


def violations(source: str, name: str, is_package: bool = False, filename: str = "<src>") -> list[str]:
    """Human-readable violations of the purity and layering rules in one module's source."""
    tree = ast.parse(source, filename=filename)
    layer = _top(name)
    out: list[str] = []
    for imp in imports(tree, name, is_package):
        where = f"{filename}:{imp.line}"
        if _top(imp.module) in FORBIDDEN and not imp.type_only:
            out.append(f"{where}: imports {imp.module} (no I/O, clocks, randomness or threads in {layer}/)")
        if layer in ("sip", "media") and _within(imp.module, "gateway"):
            out.append(f"{where}: imports {imp.module} ({layer} must not import gateway)")
        if layer == "media" and _within(imp.module, "sip"):
            out.append(f"{where}: imports {imp.module} (media must not import sip)")
    if layer == "sip":
        # ``from media import sdp`` yields "media" and "media.sdp": judge each statement by its most specific names.
        by_line: dict[int, list[str]] = {}
        for imp in imports(tree, name, is_package):
            if _within(imp.module, "media"):
                by_line.setdefault(imp.line, []).append(imp.module)
        for line, mods in sorted(by_line.items()):
            specific = [m for m in mods if not any(o != m and o.startswith(m + ".") for o in mods)]
            for mod in specific:
                if not _within(mod, "media.sdp"):
                    out.append(f"{filename}:{line}: imports {mod} (sip may import only media.sdp from media)")
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and func.id in FORBIDDEN_CALLS:
            out.append(f"{filename}:{node.lineno}: calls {func.id}()")
        elif isinstance(func, ast.Attribute) and func.attr in CLOCK_METHODS:
            owner = func.value
            owner_name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
            if owner_name in ("datetime", "date"):
                out.append(f"{filename}:{node.lineno}: reads the clock with {owner_name}.{func.attr}()")
    return out


def core_modules() -> list[Path]:
    return sorted(p for pkg in CORE_PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def test_core_modules_found() -> None:
    names = {module_name(p) for p in core_modules()}
    assert {"sip", "sip.message", "sip.errors", "media"} <= names


@pytest.mark.parametrize("path", core_modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_is_pure(path: Path) -> None:
    name = module_name(path)
    problems = violations(path.read_text(encoding="utf-8"), name, path.name == "__init__.py",
                          str(path.relative_to(ROOT)))
    assert not problems, "\n".join(problems)


# The checker itself, on synthetic sources (so that a broken checker cannot pass silently).


@pytest.mark.parametrize(
    ("source", "name", "expected"),
    [
        ("import asyncio", "sip.x", ["<src>:1: imports asyncio"]),
        ("import os.path", "media.x", ["<src>:1: imports os.path"]),
        ("from time import monotonic", "sip.x", ["<src>:1: imports time", "<src>:1: imports time.monotonic"]),
        ("\n\nfrom socket import socket as s", "sip.x", ["<src>:3: imports socket", "<src>:3: imports socket.socket"]),
        ("import concurrent.futures", "sip.x", ["<src>:1: imports concurrent.futures"]),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from random import Random", "sip.x", []),
        ("import typing\nif typing.TYPE_CHECKING:\n    import random\nelse:\n    import random", "sip.x",
         ["<src>:5: imports random"]),
        ("def f():\n    import random", "sip.x", ["<src>:2: imports random"]),
        ("import timeit", "sip.x", []),
        ("import gateway.app", "sip.x", ["<src>:1: imports gateway.app (sip must not import gateway)"]),
        ("from ..gateway import app", "sip.x", ["imports gateway (sip must not", "imports gateway.app (sip must not"]),
        ("from sip.message import Via", "media.x", ["imports sip.message (media", "imports sip.message.Via (media"]),
        ("from ..sip import message", "media.x", ["imports sip (media", "imports sip.message (media"]),
        ("from . import rtp", "media.x", []),
        ("from gateway import app", "media.x", ["imports gateway (media", "imports gateway.app (media"]),
        ("from media.sdp import SessionDescription", "sip.x", []),
        ("from ..media import sdp", "sip.x", []),
        ("import media.sdp", "sip.x", []),
        ("from ..media.sdp import parse", "sip.x", []),
        ("from media import rtp", "sip.x", ["imports media.rtp (sip may import only media.sdp"]),
        ("from media import sdp, ps", "sip.x", ["imports media.ps (sip may import only media.sdp"]),
        ("import media", "sip.x", ["imports media (sip may import only media.sdp"]),
        ("from .message import Via", "sip.x", []),
        ("from . import rtp", "sip", []),
        ("from .. import media", "sip.sub.x", []),
        ("open('f')", "sip.x", ["<src>:1: calls open()"]),
        ("print(1)", "media.x", ["<src>:1: calls print()"]),
        ("import datetime\ndatetime.datetime.now()", "sip.x", ["<src>:2: reads the clock with datetime.now()"]),
        ("from datetime import date\ndate.today()", "sip.x", ["<src>:2: reads the clock with date.today()"]),
        ("from datetime import datetime\ndatetime.strptime('1', '%S')", "sip.x", []),
        ("def f(now: float) -> float:\n    return now", "sip.x", []),
    ],
)
def test_checker(source: str, name: str, expected: list[str]) -> None:
    found = violations(source, name, is_package=name == "sip")
    assert len(found) == len(expected), found
    for line, prefix in zip(found, expected, strict=True):
        assert prefix in line, (line, prefix)


def test_relative_import_resolution() -> None:
    tree = ast.parse("from . import a\nfrom .b import c\nfrom .. import d\nfrom ..e.f import g")
    got = {i.module for i in imports(tree, "sip.sub.mod", is_package=False)}
    assert got == {"sip.sub", "sip.sub.a", "sip.sub.b", "sip.sub.b.c", "sip", "sip.d", "sip.e.f", "sip.e.f.g"}
    pkg = {i.module for i in imports(ast.parse("from . import a"), "sip.sub", is_package=True)}
    assert pkg == {"sip.sub", "sip.sub.a"}
