#!/usr/bin/env python3
"""Checks the rule stated at the top of src/lib.rs: imports point down the layers only, and
no two modules import each other, directly or through others.

Reads every `crate::…` path in src/ (comments and string-free code lines), resolves it to
the module it names, and fails (exit 1) on an edge to a higher layer or on any cycle.
Run by scripts/test.sh; `scripts/layers.py --graph` prints the module graph.
"""
import collections
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

# Layer of each top-level module; higher numbers may use lower ones, never the reverse.
LAYER = {
    "main": 5, "server": 5,
    "net": 4,
    "chat": 3,
    "conn": 2, "store": 2,
    "args": 1, "config": 1, "metrics": 1, "clock": 1, "random": 1,
    "lib": 6,
}
# Tools are clients of the server: only base modules and the protocol's types.
TOOLS_MAY_USE = {"args", "config", "metrics", "clock", "random", "chat::protocol", "tools"}
# Inside the way in (src/net/), folders by job: the access rules are consulted by the
# sessions, never the reverse; an HTTP exchange and a WebSocket session do not know each
# other (the connection thread in entry/ picks one).
NET_MAY_NOT = {
    "net::access": ("net::entry", "net::http", "net::ws"),
    "net::http": ("net::ws",),
    "net::ws": ("net::http",),
}


def modules():
    found = {}
    for dirpath, _, files in os.walk(ROOT):
        for f in files:
            if f.endswith(".rs"):
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, ROOT)[:-3].replace(os.sep, "::")
                name = rel[: -len("::mod")] if rel.endswith("::mod") else rel
                found[name] = open(path, encoding="utf-8").read()
    return found


def code_only(src):
    out = []
    for line in src.splitlines():
        line = re.sub(r"//.*", "", line)
        out.append(line)
    return "\n".join(out)


def edges_of(name, src, names):
    deps = set()
    code = code_only(src)
    paths = re.findall(r"crate::([a-z0-9_]+(?:::[a-z0-9_]+)*)", code)
    for group in re.findall(r"crate::\{([^}]*)\}", code):
        paths += [p.strip() for p in group.split(",")]
    if name in ("main",):
        paths += re.findall(r"threadchat::([a-z0-9_]+(?:::[a-z0-9_]+)*)", code)
    for path in paths:
        parts = [p for p in path.split("::") if p]
        for i in range(len(parts), 0, -1):
            cand = "::".join(parts[:i])
            if cand in names:
                if cand != name:
                    deps.add(cand)
                break
    return deps


def layer(module):
    return LAYER.get(module.split("::")[0], 0)


def main():
    mods = modules()
    mods["main"] = mods.get("main", "")
    names = set(mods)
    graph = {m: edges_of(m, src, names) for m, src in mods.items()}
    problems = []
    for m, deps in sorted(graph.items()):
        for d in sorted(deps):
            top, dtop = m.split("::")[0], d.split("::")[0]
            if top == "tools":
                if not any(d == t or d.startswith(t + "::") for t in TOOLS_MAY_USE):
                    problems.append(f"{m} -> {d}: tools use only the protocol and base modules")
            elif dtop == "tools" and top not in ("main", "lib"):
                problems.append(f"{m} -> {d}: the server does not use the tools")
            elif layer(d) > layer(m) and top not in ("lib",):
                problems.append(f"{m} -> {d}: reaches up a layer")
            for folder, banned in NET_MAY_NOT.items():
                if (m == folder or m.startswith(folder + "::")) and any(d == b or d.startswith(b + "::") for b in banned):
                    problems.append(f"{m} -> {d}: {folder} may not use {', '.join(banned)}")
    # Cycles (strongly connected components of more than one module), lib.rs aside.
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w == "lib":
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    for v in sorted(graph):
        if v != "lib" and v not in index:
            visit(v)
    for comp in comps:
        problems.append("cycle: " + " <-> ".join(comp))
    if "--graph" in sys.argv:
        for m in sorted(graph):
            if m != "lib":
                print(f"{m} -> {' '.join(sorted(graph[m]))}")
    for p in problems:
        print("layers:", p)
    print(f"layers: {len(graph) - 1} modules, {sum(len(d) for d in graph.values())} imports, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
