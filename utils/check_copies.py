"""Check that every block marked `# Copied from <module>.<Name>` still equals its source; `--fix` rewrites the copies.

Model folders are Hub units: `save_pretrained` copies a folder's files for users without hf_iqa, so a folder may
import only its siblings, and code two folders need is copied (docs/architecture.md). The marker says where a copy
comes from; this script keeps it true. The conventions are those of transformers' `utils/check_copies.py`:

    # Copied from hf_iqa.models.liqe.fast_liqe.own_unconverted_tensors
    def own_unconverted_tensors(model): ...

    # Copied from hf_iqa.models.qualiclip.modeling_qualiclip.ClipResNetVisionModel with ClipResNet->Tower
    class TowerVisionModel(TowerPreTrainedModel): ...

- The marker is the comment line directly above the copied definition (above its decorators): a class, a function,
  a method, or an assignment to one name (a module constant).
- The target is the source file as a dotted path from the repository root (`hf_iqa.models.liqe.fast_liqe`, any
  `.py` file or package `__init__.py` of the repository), then the definition's qualified name in it
  (`ClipResNetVisionModel._apply` for a method).
- `with A->B, C->D` replaces the text A by B, then C by D, in the source before comparing (plain text, not regular
  expressions); `A->B all-casing` also replaces the lower- and upper-case forms.
- The whole definition is compared, its name, decorators, docstring and comments included; indentation follows the
  copy's. The source carries no marker, so it is obvious which side to edit.

    python utils/check_copies.py          # check every .py file of the repository; exit status 1 on a difference
    python utils/check_copies.py --fix    # rewrite the copies that differ from their source
    python utils/check_copies.py hf_iqa/models/uniqa/fast_uniqa.py   # only the copies in these files
"""

from __future__ import annotations

import argparse
import ast
import difflib
import io
import re
import sys
import tokenize
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
MARKER = re.compile(r"#\s*Copied from\s+(?P<target>[A-Za-z_][\w.]*)(?:\s+with\s+(?P<replace>.+?))?\s*$")
REPLACEMENT = re.compile(r"\s*(?P<old>\S+?)->(?P<new>\S+?)(?P<casing>\s+all-casing)?\s*")
SKIPPED_DIRS = {"__pycache__", "build", "dist", "node_modules", "venv", "site-packages"}


@dataclass
class Copy:
    """One marked copy: the marker's line and the definition's lines (0-based, end exclusive)."""

    path: Path
    marker_line: int
    target: str
    replace: str | None
    start: int
    end: int


@dataclass
class Problem:
    path: Path
    line: int  # 1-based line of the marker
    message: str
    diff: str = ""

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}" + (f"\n{self.diff}" if self.diff else "")


class CopyError(ValueError):
    """A marker that cannot be resolved (its target does not exist, or it marks nothing)."""


def walk_definitions(tree: ast.Module) -> list[tuple[str, int, int]]:
    """(qualified name, first line incl. decorators, end line exclusive), 0-based, of every class, function, method
    and single-name assignment, at any depth of classes (the insides of functions are not definitions)."""
    found: list[tuple[str, int, int]] = []

    def visit(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            name = None
            if isinstance(node, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                name = node.name
            elif isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
                name = node.targets[0].id
            elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
                name = node.target.id
            if name is None:
                continue
            first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
            found.append((prefix + name, first - 1, node.end_lineno))
            if isinstance(node, ast.ClassDef):
                visit(node.body, f"{prefix}{name}.")

    visit(tree.body, "")
    return found


def definitions(tree: ast.Module) -> dict[str, tuple[int, int]]:
    """Qualified name -> (first line, end line exclusive); a name defined twice means its last definition, as in
    Python."""
    return {name: (start, end) for name, start, end in walk_definitions(tree)}


def marker_comments(text: str) -> list[tuple[int, re.Match]]:
    """(0-based line, match) of every `# Copied from` comment that stands alone on its line (not in strings)."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
        if token.type == tokenize.COMMENT and not token.line[: token.start[1]].strip():
            match = MARKER.match(token.string)
            if match:
                found.append((token.start[0] - 1, match))
    return found


def find_copies(path: Path, text: str) -> tuple[list[Copy], list[Problem]]:
    """The marked copies of one file, and the markers that mark no definition."""
    markers = marker_comments(text)
    if not markers:
        return [], []
    by_start = {start: (start, end) for _, start, end in walk_definitions(ast.parse(text, str(path)))}
    copies, problems = [], []
    for line, match in markers:
        span = by_start.get(line + 1)
        if span is None:
            problems.append(
                Problem(path, line + 1, "'# Copied from' must stand directly above a class, function or assignment")
            )
            continue
        copies.append(Copy(path, line, match["target"], match["replace"], *span))
    return copies, problems


def resolve(target: str, root: Path) -> tuple[Path, str]:
    """`a.b.c.Name.method` -> (root/a/b/c.py, "Name.method"); the longest module path that exists wins."""
    parts = target.split(".")
    for split in range(len(parts) - 1, 0, -1):
        base = root.joinpath(*parts[:split])
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate, ".".join(parts[split:])
    raise CopyError(f"{target}: no file of the repository matches (expected <dotted file path>.<name>)")


def replace(code: str, spec: str | None) -> str:
    """Apply `A->B, C->D [all-casing]` in order."""
    if not spec:
        return code
    for item in spec.split(","):
        match = REPLACEMENT.fullmatch(item)
        if match is None:
            raise CopyError(f"cannot read the replacement {item.strip()!r} (expected 'A->B' or 'A->B all-casing')")
        old, new = match["old"], match["new"]
        code = code.replace(old, new)
        if match["casing"]:
            code = code.replace(old.lower(), new.lower()).replace(old.upper(), new.upper())
    return code


def reindent(lines: list[str], indent: str) -> str:
    """Move a block from its own indentation to `indent` (blank lines stay empty)."""
    first = lines[0]
    current = first[: len(first) - len(first.lstrip())]
    out = []
    for line in lines:
        if not line.strip():
            out.append(line)
            continue
        if not line.startswith(current):
            raise CopyError(f"inconsistent indentation in {first.strip()!r}")
        out.append(indent + line[len(current) :])
    return "".join(out)


class Sources:
    """Source files read once per run."""

    def __init__(self, root: Path):
        self.root = root
        self.files: dict[Path, tuple[list[str], dict[str, tuple[int, int]]]] = {}

    def code(self, target: str) -> tuple[Path, str, list[str]]:
        path, name = resolve(target, self.root)
        if path not in self.files:
            text = path.read_text(encoding="utf-8")
            self.files[path] = (text.splitlines(keepends=True), definitions(ast.parse(text, str(path))))
        lines, found = self.files[path]
        if name not in found:
            raise CopyError(f"{target}: {path.relative_to(self.root)} defines no {name!r}")
        start, end = found[name]
        return path, name, lines[start:end]


def expected_code(copy: Copy, lines: list[str], sources: Sources) -> str:
    """What the copy should read: the source definition, renamed, at the copy's indentation."""
    path, name, source = sources.code(copy.target)
    if path.resolve() == copy.path.resolve() and lines[copy.start : copy.end] == source:
        raise CopyError(f"{copy.target}: the marker points at the definition it stands on")
    first = lines[copy.start]
    return replace(reindent(source, first[: len(first) - len(first.lstrip())]), copy.replace)


def python_files(root: Path) -> list[Path]:
    return sorted(
        path
        for path in root.rglob("*.py")
        if not any(part.startswith(".") or part in SKIPPED_DIRS for part in path.relative_to(root).parts[:-1])
    )


def check_copies(root: Path = REPO_ROOT, paths: list[Path] | None = None, fix: bool = False) -> list[Problem]:
    """Check (and with `fix`, rewrite) every marked copy in `paths` (default: every .py file under `root`).
    Returns the problems left: differences when not fixing, and markers that cannot be resolved."""
    root = Path(root).resolve()
    files = [Path(p).resolve() for p in paths] if paths else python_files(root)
    problems: list[Problem] = []
    for _ in range(8):  # a copy of a copy is right once its source is: repeat until nothing changes
        sources, problems, changed = Sources(root), [], False
        for path in files:
            text = path.read_text(encoding="utf-8")
            if "Copied from" not in text:
                continue
            copies, problems_here = find_copies(path, text)
            problems += problems_here
            lines = text.splitlines(keepends=True)
            rewrites = []
            for copy in copies:
                try:
                    expected = expected_code(copy, lines, sources)
                except CopyError as error:
                    problems.append(Problem(path, copy.marker_line + 1, f"false marker: {error}"))
                    continue
                actual = "".join(lines[copy.start : copy.end])
                if actual == expected:
                    continue
                if fix:
                    rewrites.append((copy, expected))
                    continue
                diff = difflib.unified_diff(
                    expected.splitlines(keepends=True), actual.splitlines(keepends=True), copy.target, str(path), n=1
                )
                diff_lines = list(diff)
                shown = "".join(diff_lines[:40]) + ("    ...\n" if len(diff_lines) > 40 else "")
                problems.append(
                    Problem(path, copy.marker_line + 1, f"differs from {copy.target} (run with --fix)", shown.rstrip())
                )
            for copy, expected in sorted(rewrites, key=lambda item: -item[0].start):
                lines[copy.start : copy.end] = [expected]
            if rewrites:
                path.write_text("".join(lines), encoding="utf-8")
                changed = True
                for copy, _ in rewrites:
                    print(f"fixed {_shown(path, root)}:{copy.marker_line + 1} from {copy.target}")
        if not changed:
            break
    return problems


def _shown(path: Path, root: Path) -> str:
    return str(path.relative_to(root)) if path.is_relative_to(root) else str(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path, help="files to check (default: every .py file of the repo)")
    parser.add_argument("--fix", action="store_true", help="rewrite the copies that differ from their source")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="repository root the targets start from")
    args = parser.parse_args(argv)
    problems = check_copies(args.root, args.paths or None, fix=args.fix)
    root = args.root.resolve()
    for problem in problems:
        problem.path = Path(_shown(problem.path, root))
        print(problem)
    if problems:
        print(f"{len(problems)} copy problem(s)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
