#!/usr/bin/env python3
"""Keeps docs/tour.md true of the code: every link points at a file that exists, no link
points at a line (`#L…` anchors rot with every edit), and every link whose text is a name
in backticks — `function`, `Type`, `Type::method` — points at the file that defines it.

    python3 scripts/tour.py [docs/tour.md]

Prints `tour: N links, M names checked, K problems` and exits 1 if K > 0.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")

RUST_ITEM = r"\b(?:fn|struct|enum|trait|type|const|static|mod|union)\s+{name}\b"
RUST_TYPE = r"\b(?:struct|enum|trait|type|union)\s+{name}\b|\bimpl(?:<[^>]*>)?\s+(?:[\w:]+\s+for\s+)?{name}\b"
JS_ITEM = r"\b(?:function\*?|const|let|var|class)\s+{name}\b"


def defined(source: str, path: str, symbol: str) -> str | None:
    """None if `symbol` is defined in `source`, else what is missing."""
    parts = re.split(r"::|\.", symbol.rstrip("()"))
    name, owner = parts[-1], parts[-2] if len(parts) > 1 else None
    if path.endswith(".rs"):
        if not re.search(RUST_ITEM.format(name=re.escape(name)), source):
            return f"no `{name}` defined"
        if owner and not re.search(RUST_TYPE.format(name=re.escape(owner)), source):
            # A method of a type defined elsewhere: `impl Type` must still be in this file.
            return f"no `{owner}` (type or impl) here"
        return None
    if path.endswith((".js", ".mjs")):
        return None if re.search(JS_ITEM.format(name=re.escape(name)), source) else f"no `{name}` defined"
    return f"cannot check names in {os.path.basename(path)}"


def main() -> int:
    tour = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "docs", "tour.md")
    base = os.path.dirname(tour)
    text = open(tour, encoding="utf-8").read()
    problems, links, names = [], 0, 0
    for lineno, line in enumerate(text.splitlines(), 1):
        for label, target in LINK.findall(line):
            if target.startswith(("http://", "https://", "#")):
                continue
            links += 1
            where = f"{os.path.relpath(tour, ROOT)}:{lineno}"
            if "#L" in target or re.search(r":\d+$", label.strip("`")):
                problems.append(f"{where}: {label} links to a line ({target}); link a name instead")
                continue
            path = os.path.normpath(os.path.join(base, target.split("#")[0]))
            if not os.path.exists(path):
                problems.append(f"{where}: {target} does not exist")
                continue
            m = re.fullmatch(r"`([A-Za-z_][\w:.]*(?:\(\))?)`", label)
            if not m or os.path.isdir(path) or label.strip("`") == os.path.basename(target):
                continue
            if "/" in m.group(1) or m.group(1).endswith((".rs", ".js", ".md")):
                continue  # a file name, not a symbol
            names += 1
            missing = defined(open(path, encoding="utf-8").read(), path, m.group(1))
            if missing:
                problems.append(f"{where}: `{m.group(1)}` → {target}: {missing}")
    for p in problems:
        print("FAIL", p)
    print(f"tour: {links} links, {names} names checked, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
