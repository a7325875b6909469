"""Run identity: a hash of what decides a run's numbers, and the code version stored with it."""

import ast
import hashlib
import json
import subprocess
from functools import cache
from pathlib import Path

from actrange import __version__
from actrange.config import RunConfig

# the modules whose code changes a run's numbers; editing one gives every run a new identity
NUMERIC_MODULES = (
    "activations.py",
    "cpu_kernels.py",
    "data.py",
    "devicedata.py",
    "diagnostics.py",
    "engine.py",
    "grouped.py",
    "model.py",
)
# compiled numeric code, fingerprinted by its bytes
NUMERIC_SOURCES = ("kernels/pooled_conv.c",)


def _without_docstrings(tree: ast.AST) -> ast.AST:
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        first = body[0] if isinstance(body, list) and body else None
        is_docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
        if is_docstring and isinstance(first.value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return tree


@cache
def code_fingerprint() -> str:
    """sha256 over the syntax trees of the modules that compute a run's numbers (12 hex digits).

    Trees, not bytes: comments, docstrings and formatting do not change a run's numbers, so
    editing them keeps every stored run valid. The C kernels count by their bytes.
    """
    digest = hashlib.sha256()
    package = Path(__file__).parent
    for name in NUMERIC_MODULES:
        tree = _without_docstrings(ast.parse((package / name).read_text(encoding="utf-8")))
        digest.update(name.encode())
        digest.update(ast.dump(tree).encode())
    for name in NUMERIC_SOURCES:
        digest.update(name.encode())
        digest.update((package / name).read_bytes())
    return digest.hexdigest()[:12]


def run_id(run: RunConfig) -> str:
    """16 hex digits naming the run: its identity settings plus the numeric code."""
    text = json.dumps({"run": run.identity(), "code": code_fingerprint()}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def group_id(run_ids: list[str]) -> str:
    """12 hex digits naming a set of runs trained together."""
    return hashlib.sha256(",".join(sorted(run_ids)).encode()).hexdigest()[:12]


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", *args],
        cwd=Path(__file__).parent,
        capture_output=True,
        text=True,
        timeout=5,
        check=True,
    ).stdout.strip()


@cache
def code_version() -> str:
    """The package version, the git commit when run from a checkout, and the fingerprint."""
    try:
        commit = _git("rev-parse", "--short=12", "HEAD")
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        commit = f"git {commit}{'+dirty' if dirty else ''}"
    except (OSError, subprocess.SubprocessError):
        commit = "git unknown"
    return f"actrange {__version__}, {commit}, numeric code {code_fingerprint()}"
