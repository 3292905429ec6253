#!/usr/bin/env python3
"""The layer check: reads the `crate::` paths that each file of src/ uses
(tests excluded) and fails on an import cycle between files, or on an
import that runs up the order `src/lib.rs` draws, unless it is on the
allow-list below with its reason. Run by ./scripts/test.sh."""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

# (importer, imported) module prefixes allowed to run upward, and why.
ALLOWED = {}


def layers():
    """The order of src/lib.rs's drawing, top first: a list of name sets."""
    text = open(os.path.join(SRC, "lib.rs")).read()
    block = re.search(r"//! ```text\n(.*?)//! ```", text, re.S).group(1)
    order = []
    for line in block.splitlines():
        line = line[len("//! "):] if line.startswith("//! ") else ""
        if not line or line[0].isspace():
            continue
        names = re.split(r"\s{2,}", line)[0]
        order.append({n.strip() for n in names.split(",") if n.strip()})
    return order


def expand(path):
    """`a::{b, c::{d}}` as its full paths."""
    path = path.strip()
    i = path.find("{")
    if i < 0:
        return [path.split(" as ")[0].strip()]
    prefix, inner = path[:i], path[i + 1 : path.rfind("}")]
    parts, depth, cur = [], 0, ""
    for ch in inner:
        depth += ch == "{"
        depth -= ch == "}"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    out = []
    for part in (p.strip() for p in parts):
        if part == "self":
            out.append(prefix.rstrip(":"))
        elif part:
            out += expand(prefix + part)
    return out


def crate_paths(src):
    src = src.split("#[cfg(test)]\nmod tests")[0]
    src = re.sub(r"//[^\n]*", "", src)
    paths = []
    for m in re.finditer(r"\buse\s+crate::(.*?);", src, re.S):
        paths += expand(m.group(1).replace("\n", " "))
    body = re.sub(r"\buse\s+crate::.*?;", "", src, flags=re.S)
    paths += re.findall(r"\bcrate::([A-Za-z_]\w*(?:::[A-Za-z_]\w*)*)", body)
    return paths


def modules():
    mods = {}
    for d, _, files in os.walk(SRC):
        for f in files:
            if f.endswith(".rs"):
                rel = os.path.relpath(os.path.join(d, f), SRC)[:-3].split("/")
                if rel[-1] in ("mod", "lib"):
                    rel = rel[:-1]
                if rel != ["main"]:
                    mods[tuple(rel)] = os.path.join(d, f)
    return mods


def resolve(parts, mods):
    """The deepest module that `parts` names or is inside of."""
    return next((parts[:k] for k in range(len(parts), -1, -1) if parts[:k] in mods), ())


def graph(mods):
    edges = {}
    for mod, path in mods.items():
        src = open(path).read()
        targets = set()
        for used in crate_paths(src):
            target = resolve(tuple(used.split("::")), mods)
            targets.add(target)
            # A module brought in by name (`use crate::transport;`) is then
            # used through it: `transport::ws::handle`.
            if target and target == tuple(used.split("::")):
                body = src.split("#[cfg(test)]\nmod tests")[0]
                for rest in re.findall(rf"\b{target[-1]}::((?:[a-z_]\w*::)*[A-Za-z_]\w*)", body):
                    targets.add(resolve(target + tuple(rest.split("::")), mods))
        targets.discard(mod)
        edges[mod] = targets
    return edges


def cycles(edges):
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
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
                found.append(comp)

    sys.setrecursionlimit(10_000)
    for v in list(edges):
        if v not in index:
            visit(v)
    return found


def name(mod):
    return "::".join(mod) or "crate"


def main():
    order = layers()
    rank = {n: i for i, names in enumerate(order) for n in names}
    edges = graph(modules())
    problems = []
    for comp in cycles(edges):
        problems.append("import cycle: " + " <-> ".join(sorted(map(name, comp))))
    for mod, targets in sorted(edges.items()):
        if not mod:
            continue
        for target in sorted(targets):
            if target[:1] == mod[:1]:
                continue  # within one top-level module
            up = not target or rank.get(target[0], -1) < rank.get(mod[0], len(order))
            key = (name(mod[:2]), name(target[:2]))
            if up and key not in ALLOWED and (name(mod[:1]), name(target[:1])) not in ALLOWED:
                problems.append(f"upward import: {name(mod)} -> {name(target)}")
    for p in problems:
        print(p)
    print(f"layer check: {len(problems)} problem(s) in {len(edges)} files")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
