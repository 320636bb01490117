#!/usr/bin/env python3
"""Checks the module structure of src/: no import cycle between modules, and no file over
500 lines outside its `#[cfg(test)]` module.

An edge A -> B is a `crate::B...` or `super::...` path used in A outside comments and
`#[cfg(test)]` modules. Cycles are looked for at two levels: between the crate's top-level
modules, and between the sibling files of each folder module (a child's references to its
own folder's `mod.rs`, which only declares and re-exports, are not edges).
"""
import os, re, sys
from collections import defaultdict

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")
LIMIT = 500

def module_path(path):
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib"):
        rel = rel[:-1]
    return rel  # [] for lib.rs

def code_without_tests(text):
    """The file's lines before its `#[cfg(test)]` module (tests sit at the end here), with
    comments removed."""
    lines = text.split("\n")
    out = []
    for i, line in enumerate(lines):
        if line.strip() == "#[cfg(test)]":
            # `#[cfg(test)]`, maybe more attributes, then `mod tests`.
            j = i + 1
            while j < len(lines) and lines[j].lstrip().startswith("#["):
                j += 1
            if j < len(lines) and lines[j].lstrip().startswith("mod tests"):
                break
        stripped = line.lstrip()
        if stripped.startswith("//"):
            out.append("")
            continue
        out.append(re.sub(r"//.*$", "", line))
    return out

def main():
    files = []
    for root, _, names in os.walk(SRC):
        for name in names:
            if name.endswith(".rs"):
                files.append(os.path.join(root, name))
    modules = {tuple(module_path(f)): f for f in files}
    failures = []
    edges = defaultdict(set)
    for mod, path in modules.items():
        if mod and mod[0] in ("bin",):
            continue
        code = code_without_tests(open(path).read())
        if len(code) > LIMIT:
            failures.append(f"{os.path.relpath(path, SRC)}: {len(code)} lines outside tests (limit {LIMIT})")
        text = "\n".join(code)
        parent = mod[:-1] if not path.endswith("mod.rs") else mod[:-1]
        for m in re.finditer(r"\b(crate|super)((?:::[a-z_][a-z0-9_]*)+)", text):
            parts = [p for p in m.group(2).split("::") if p]
            if m.group(1) == "crate":
                target = parts
            else:
                base = list(mod[:-1]) if not path.endswith("mod.rs") else list(mod[:-1])
                if path.endswith("mod.rs"):
                    base = list(mod[:-1])
                else:
                    base = list(mod[:-1])
                target = base + parts
            # Resolve to the longest existing module.
            while target and tuple(target) not in modules:
                target = target[:-1]
            if tuple(target) != mod:
                edges[mod].add(tuple(target))
    def find_cycles(nodes, edge_of):
        graph = {n: {t for t in edge_of(n) if t in nodes and t != n} for n in nodes}
        index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
        def strong(v):
            index[v] = low[v] = counter[0]; counter[0] += 1
            stack.append(v); on.add(v)
            for w in graph[v]:
                if w not in index:
                    strong(w); low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop(); on.discard(w); comp.append(w)
                    if w == v: break
                if len(comp) > 1: sccs.append(comp)
        for n in nodes:
            if n not in index: strong(n)
        return sccs
    # Top level.
    top = {m[0] for m in modules if m and m[0] != "bin"}
    def top_edges(n):
        return {t[0] for m, ts in edges.items() if m and m[0] == n for t in ts if t}
    for cycle in find_cycles(top, top_edges):
        failures.append("import cycle between top-level modules: " + " <-> ".join(sorted(cycle)))
    # Siblings inside each folder.
    folders = {m[:-1] for m in modules if len(m) >= 2}
    for folder in folders:
        kids = {m[len(folder)] for m in modules if len(m) > len(folder) and m[:len(folder)] == folder}
        def kid_edges(k):
            out = set()
            for m, ts in edges.items():
                if len(m) > len(folder) and m[:len(folder)] == folder and m[len(folder)] == k:
                    for t in ts:
                        if len(t) > len(folder) and t[:len(folder)] == folder:
                            out.add(t[len(folder)])
            return out
        for cycle in find_cycles(kids, kid_edges):
            failures.append(f"import cycle inside {'::'.join(folder)}: " + " <-> ".join(sorted(cycle)))
    for failure in failures:
        print(failure)
    if failures:
        sys.exit(1)
    print(f"{len(modules)} files: no import cycle, none over {LIMIT} lines outside tests")

main()
