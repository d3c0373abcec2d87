"""Print pip constraints that pin every dependency of pyproject.toml (and the extras named) to its declared lower
bound: `name>=X` -> `name==X`, `name==X` kept. CI installs with them, so a lower bound that does not work (or does
not exist) fails CI instead of reaching users.

Usage: python .ci/lowest_constraints.py pyproject.toml [extra ...] > lowest.txt
"""

from __future__ import annotations

import re
import sys

import tomllib

REQUIREMENT = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*(\[[^\]]*\])?\s*([^;]*)")


def lower_bound_pins(requirements: list[str]) -> dict[str, str]:
    pins = {}
    for requirement in requirements:
        match = REQUIREMENT.match(requirement)
        if match is None:
            raise SystemExit(f"cannot parse requirement {requirement!r}")
        name, specifiers = match.group(1).lower().replace("_", "-"), match.group(3)
        for specifier in specifiers.split(","):
            bound = re.fullmatch(r"\s*(>=|==)\s*([^\s]+)\s*", specifier)
            if bound:
                pins[name] = bound.group(2)
        if name not in pins:
            raise SystemExit(f"{requirement!r} declares no lower bound: add one (>=) so CI can test it")
    return pins


def main(argv: list[str]) -> None:
    with open(argv[0], "rb") as file:
        project = tomllib.load(file)["project"]
    requirements = list(project["dependencies"])
    for extra in argv[1:]:
        requirements += project["optional-dependencies"][extra]
    for name, version in sorted(lower_bound_pins(requirements).items()):
        print(f"{name}=={version}")


if __name__ == "__main__":
    main(sys.argv[1:])
