#!/usr/bin/env python3
"""Line coverage of kernelzoo's CUDA kernel sources, as run by the CPU harness.

The cuda_emulation suites are built with gcov instrumentation when the CMake
option KERNELZOO_HARNESS_COVERAGE is ON. This script (Python standard library
only) turns what they leave behind into one figure per kernel source:

    kernel_coverage.py reset  --build <dir>
        deletes the counters (*.gcda) under <dir> and the last report, so that
        a run counts only what it executes (ctest runs it before the suites);
    kernel_coverage.py report --build <dir> --source <repo> --out <dir> [--gcov gcov-12]
        runs gcov on every *.gcda under <dir>, merges the counts of every suite
        and every template instantiation, and writes <out>/kernel_coverage.txt
        (also printed) and <out>/kernel_coverage.json.

Which files: every file under <source> matching a --files glob, by default
csrc/**/*.cuh (kernel bodies and device helpers), found by glob, not by name.

Which lines count (docs/gpu-verification.md, "Coverage of the kernel sources"):
 * every line gcov reports for the file in some suite (any instantiation);
 * and the code lines that no suite compiled, which gcov cannot see: functions
   and templates never instantiated, and inside compiled functions, blocks no
   suite compiled (a discarded `if constexpr` branch, an #if branch the harness
   build leaves out, such as the inline PTX behind __CUDA_ARCH__). They are
   found by reading the source: a function, statement block or #if branch with
   code lines of which gcov has no line was not compiled; its code lines count
   as executable and not run ("not inst." or "#if excl." in the report).
A line is executed when any suite ran it in any instantiation.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

DEFAULT_FILES = ["csrc/**/*.cuh"]
REPORT_TXT = "kernel_coverage.txt"
REPORT_JSON = "kernel_coverage.json"


# ---------------------------------------------------------------------------
# Reading a C++ source: code without comments and literals, directive lines
# ---------------------------------------------------------------------------
def strip_comments_and_literals(text: str) -> str:
    """The text with comments and the contents of string and character literals
    replaced by spaces; newlines and every other character keep their place."""
    out = list(text)
    i, n = 0, len(text)

    def blank(a: int, b: int) -> None:
        for j in range(a, b):
            if out[j] != "\n":
                out[j] = " "

    while i < n:
        c = text[i]
        if c == "/" and i + 1 < n and text[i + 1] == "/":
            j = text.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif c == "/" and i + 1 < n and text[i + 1] == "*":
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            blank(i, j)
            i = j
        elif c == '"' and i > 0 and text[i - 1] == "R":  # raw string R"delim( ... )delim"
            k = text.find("(", i)
            delim = text[i + 1 : k] if k >= 0 else ""
            j = text.find(")" + delim + '"', k + 1) if k >= 0 else -1
            j = n if j < 0 else j + len(delim) + 2
            blank(i + 1, j - 1)
            i = j
        elif c == '"' or (c == "'" and not (i > 0 and text[i - 1].isdigit())):
            # A ' right after a digit is a digit separator (1'000), not a literal.
            j = i + 1
            while j < n and text[j] != c and text[j] != "\n":
                j += 2 if text[j] == "\\" else 1
            j = min(j, n - 1)
            blank(i + 1, j)
            i = j + 1
        else:
            i += 1
    return "".join(out)


def directive_lines(code_lines: list[str]) -> set[int]:
    """0-based indices of preprocessor directive lines, continuations included."""
    result: set[int] = set()
    i = 0
    while i < len(code_lines):
        if code_lines[i].lstrip().startswith("#"):
            while True:
                result.add(i)
                if code_lines[i].rstrip().endswith("\\") and i + 1 < len(code_lines):
                    i += 1
                else:
                    break
        i += 1
    return result


_NON_CODE = re.compile(r"^[\s{}();,]*$")
_NOT_STATEMENT = re.compile(
    r"^\s*(?:[{}]\s*)*(?:else|do|try|public\s*:|private\s*:|protected\s*:|using\b|typedef\b|"
    r"static_assert\b|template\b|namespace\b|case\b[^;]*:|default\s*:)[\s{}]*$"
)


def is_code_line(code: str) -> bool:
    """True for a line holding more than braces, parentheses and punctuation,
    and more than a keyword (else, do), a label or a declaration such as using,
    typedef, static_assert."""
    if _NON_CODE.match(code):
        return False
    stripped = code.strip()
    if _NOT_STATEMENT.match(stripped):
        return False
    if re.match(r"^\s*(using|typedef|static_assert|template)\b", stripped):
        return False
    return True


# ---------------------------------------------------------------------------
# Structure: function bodies, blocks inside them, #if branches
# ---------------------------------------------------------------------------
@dataclass
class Region:
    kind: str  # "function", "block" or "branch" (one branch of an #if chain)
    first: int  # 1-based, inclusive. Functions: the line of the name; blocks: the
    last: int  # lines of the braces; branches: the lines between the directives
    chain: int = -1  # branches: the #if chain they belong to,
    branch: int = -1  # their own number
    parent: int = -1  # and the number of the enclosing branch (-1: none)
    open: int = 0  # functions: the line of the opening brace
    # blocks inside a macro's argument (a lambda passed to a dispatch macro): the
    # line of the macro's name, to which GCC attributes the code of the argument
    macro_line: int = 0


@dataclass
class Structure:
    code_lines: set[int] = field(default_factory=set)  # 1-based
    regions: list[Region] = field(default_factory=list)


_CLASS_HEAD = re.compile(r"\b(class|struct|union|enum)\b")
# What may precede the '{' of a statement block inside a function (else a brace
# initializer): ) ] else do try mutable noexcept ; { } or a label's ':'.
_BLOCK_BEFORE = re.compile(r"(\)|\]|\belse|\bdo|\btry|\bmutable|\bnoexcept|;|\{|\}|:)\s*$")
# Names before a '(' that are not the function's: attributes, macros, keywords.
_NOT_NAME = re.compile(r"^(__\w*|[A-Z][A-Z0-9_]*|alignas|decltype|noexcept|requires|sizeof|alignof)$")


def _strip_template_prefix(h: str) -> str:
    h = h.strip()
    while h.startswith("template"):
        k = h.find("<")
        if k < 0:
            break
        depth, j = 0, k
        while j < len(h):
            depth += {"<": 1, ">": -1}.get(h[j], 0)
            if depth == 0:
                break
            j += 1
        h = h[j + 1 :].strip()
    return h


def _classify_scope_brace(head: str) -> str:
    """What a '{' outside function bodies opens, from the code since the last
    ';', '{' or '}': "namespace" (a namespace, extern "C", class or struct
    body: functions may be defined inside), "function", "member_init" (a brace
    initializer in a constructor's initializer list) or "skip" (an enum body,
    a variable's initializer)."""
    h = _strip_template_prefix(" ".join(head.split()))
    if re.match(r"^(inline\s+)?namespace\b", h) or re.match(r'^extern\s*""\s*$', h):
        return "namespace"
    paren = h.find("(")
    cls = _CLASS_HEAD.search(h)
    if cls and (paren < 0 or cls.start() < paren):
        return "skip" if cls.group(1) == "enum" else "namespace"
    if paren < 0 or ")" not in h:
        return "skip"
    if re.search(r"\)\s*(?:const\s*|noexcept\s*)*:(?!:)", h) and re.search(r"[\w>]\s*$", h):
        return "member_init"
    depth = 0
    for j, ch in enumerate(h):  # an '=' outside brackets: a variable's initializer
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif (ch == "=" and depth == 0 and h[j + 1 : j + 2] != "=" and h[j - 1 : j] not in "=!<>"
              and not h[:j].rstrip().endswith("operator")):
            return "skip"
    return "function"


def _name_line(head: list[tuple[str, int]]) -> int:
    """The line of a function's name: the identifier before the first '(' at
    bracket depth 0 that is not an attribute, macro or keyword."""
    text = "".join(c for c, _ in head)
    depth = 0
    for j, ch in enumerate(text):
        if ch == "(":
            if depth == 0:
                m = re.search(r"(~?[A-Za-z_]\w*|operator\s*\S+)\s*$", text[:j])
                if m and not _NOT_NAME.match(m.group(1)):
                    return head[m.start(1)][1]
            depth += 1
        elif ch == ")":
            depth -= 1
    return head[0][1] if head else 0


def _in_macro_argument(before: str) -> bool:
    """Whether a '{' after this statement text lies inside the argument list
    of a macro (an all-capitals name before the innermost open parenthesis)."""
    opened = []
    for j, ch in enumerate(before):
        if ch == "(":
            opened.append(j)
        elif ch == ")" and opened:
            opened.pop()
    if not opened:
        return False
    m = re.search(r"([A-Za-z_]\w*)\s*$", before[: opened[-1]])
    return bool(m and re.fullmatch(r"[A-Z][A-Z0-9_]*", m.group(1)))


def parse_structure(text: str) -> Structure:
    """Function bodies (at namespace or class scope), the statement blocks
    inside them, #if branches, and the code lines of the file. Where the
    branches of an #if disagree on braces, the first branch's structure wins."""
    lines = strip_comments_and_literals(text).split("\n")
    directives = directive_lines(lines)
    st = Structure()
    st.code_lines = {i + 1 for i, line in enumerate(lines)
                     if i not in directives and is_code_line(line)}

    # open braces: (kind, line, name line of a function, macro line of a block)
    stack: list[tuple[str, int, int, int]] = []
    chains: list[dict] = []  # open #if chains
    n_chains = n_branches = 0
    head: list[tuple[str, int]] = []  # code since the last ; { } outside functions
    stmt: list[str] = []  # the same inside functions,
    stmt_line = 0  # starting on this line

    def depth_of(kind: str) -> int:
        return sum(1 for entry in stack if entry[0] == kind)

    def close_branch(ln: int) -> None:
        c = chains[-1]
        st.regions.append(Region("branch", c["start"] + 1, ln - 1, c["id"], c["branch"], c["parent"]))

    for i, line in enumerate(lines):
        ln = i + 1
        if i in directives:
            m = re.match(r"\s*#\s*(\w+)", line)
            word = m.group(1) if m else ""
            if word in ("if", "ifdef", "ifndef"):
                parent = chains[-1]["branch"] if chains else -1
                chains.append({"id": n_chains, "branch": n_branches, "parent": parent,
                               "saved": list(stack), "after_first": None, "start": ln})
                n_chains += 1
                n_branches += 1
            elif word in ("elif", "else", "endif") and chains:
                close_branch(ln)
                c = chains[-1]
                if c["after_first"] is None:
                    c["after_first"] = list(stack)
                if word == "endif":
                    stack[:] = c["after_first"]
                    chains.pop()
                else:
                    stack[:] = c["saved"]
                    c["start"] = ln
                    c["branch"] = n_branches
                    n_branches += 1
            continue
        for ch in line:
            in_function = depth_of("function") > 0
            if not in_function and depth_of("skip") > 0:
                if ch == "{":
                    stack.append(("skip", ln, 0, 0))
                elif ch == "}":
                    stack.pop()
                    if depth_of("skip") == 0:
                        head.clear()
                continue
            if ch == "{":
                if in_function:
                    before = "".join(stmt)
                    block = (not before.strip() or _BLOCK_BEFORE.search(before)
                             or re.search(r"\]\s*\([^)]*\)\s*->", before))
                    macro = next((e[3] for e in reversed(stack) if e[3]), 0)
                    if not macro and _in_macro_argument(before):
                        macro = stmt_line
                    stack.append(("block" if block else "init", ln, 0, macro))
                    stmt.clear()
                    continue
                kind = _classify_scope_brace("".join(c for c, _ in head))
                if kind == "member_init":
                    stack.append(("member_init", ln, 0, 0))
                    head.append(("{", ln))
                    continue
                stack.append((kind, ln, _name_line(head) if kind == "function" else 0, 0))
                head.clear()
                stmt.clear()
            elif ch == "}":
                if not stack:
                    continue
                kind, open_ln, name_ln, macro_ln = stack.pop()
                if kind == "function":
                    st.regions.append(Region("function", name_ln or open_ln, ln, open=open_ln))
                elif kind == "block":
                    st.regions.append(Region("block", open_ln, ln, macro_line=macro_ln))
                if kind == "member_init":
                    head.append(("}", ln))
                elif kind == "init":
                    stmt.append("}")
                elif depth_of("function") > 0:
                    stmt.clear()
                else:
                    head.clear()
            elif ch == ";":
                if in_function:
                    stmt.clear()
                else:
                    head.clear()
            elif in_function:
                if not ch.isspace() and not "".join(stmt).strip():
                    stmt_line = ln
                stmt.append(ch)
            else:
                head.append((ch, ln))
        if depth_of("function") > 0:
            stmt.append(" ")
        else:
            head.append((" ", ln))
    return st


def classify_unseen(st: Structure, seen: set[int]) -> tuple[set[int], set[int]]:
    """The code lines that no suite compiled, which gcov cannot see, split in
    (not instantiated, preprocessed out):
     - a function of which gcov has no line, from its name to its closing
       brace: the name line, the code lines after the opening brace's line and
       the closing line count (gcov's choice for compiled functions, but for
       the closing line, which gcov counts only in some);
     - inside a function body, a statement block or #if branch with code lines
       of which gcov has none: its code lines count (a discarded if constexpr,
       an #if branch excluded in the harness). A block in a macro's argument
       (a lambda passed to a dispatch macro) is compiled when gcov has the
       macro's line: GCC puts the argument's code on that line.
    A line is "preprocessed out" when it lies in an #if branch whose chain has
    another branch that gcov saw (or inside such a branch): only one branch of
    a chain is compiled, and that one was another. Else "not instantiated"."""
    def has_data(first: int, last: int) -> bool:
        return any(ln in seen for ln in range(first, last + 1))

    bodies = [r for r in st.regions if r.kind == "function"]
    unseen: set[int] = set()
    for r in st.regions:
        if r.kind == "function":
            if not has_data(r.first, r.last):
                unseen.add(r.first)
                unseen.update(ln for ln in range(r.open + 1, r.last) if ln in st.code_lines)
                unseen.add(r.last)
            continue
        if not any(b.first <= r.first and r.last <= b.last for b in bodies):
            continue  # an #if branch around whole functions: they are regions themselves
        if r.kind == "block" and r.last > r.first:
            first, last = r.first + 1, r.last - 1  # the brace lines belong to the statement
        else:
            first, last = r.first, r.last
        counted = [ln for ln in range(first, last + 1) if ln in st.code_lines]
        if counted and not has_data(first, last) and not (r.macro_line and r.macro_line in seen):
            unseen.update(counted)

    branches = {r.branch: r for r in st.regions if r.kind == "branch"}
    dead = {b: not has_data(r.first, r.last)
            and any(s.chain == r.chain and s is not r and has_data(s.first, s.last)
                    for s in branches.values())
            for b, r in branches.items()}

    def is_dead(b: int) -> bool:
        while b >= 0:
            if dead.get(b):
                return True
            b = branches[b].parent if b in branches else -1
        return False

    preprocessed = {ln for b, r in branches.items() if is_dead(b)
                    for ln in range(r.first, r.last + 1) if ln in unseen}
    return unseen - preprocessed, preprocessed


# ---------------------------------------------------------------------------
# gcov
# ---------------------------------------------------------------------------
@dataclass
class FileData:
    lines: dict[int, int] = field(default_factory=dict)  # line -> count (summed)
    functions: dict[str, dict] = field(default_factory=dict)  # mangled -> info
    # (line, function) -> counts of the line's branch outcomes (exception edges left out)
    branches: dict[tuple[int, str], list[int]] = field(default_factory=dict)

    def branch_outcomes(self) -> dict[int, list[bool]]:
        """Per line, whether each branch outcome was taken in some instantiation.
        Instantiations whose code for the line has a different number of
        outcomes than most of them do are left out of that line."""
        per_line: dict[int, list[list[int]]] = {}
        for (line, _), counts in self.branches.items():
            per_line.setdefault(line, []).append(counts)
        result = {}
        for line, vectors in per_line.items():
            lengths = [len(v) for v in vectors]
            n = max(set(lengths), key=lambda k: (lengths.count(k), k))
            result[line] = [any(v[i] > 0 for v in vectors if len(v) == n) for i in range(n)]
        return result


def run_gcov(gcov: str, gcda_files: list[str]) -> list[dict]:
    docs = []
    for chunk_start in range(0, len(gcda_files), 64):
        chunk = gcda_files[chunk_start : chunk_start + 64]
        proc = subprocess.run([gcov, "--json-format", "--stdout", "--branch-probabilities", *chunk],
                              capture_output=True, text=True, cwd=os.path.dirname(chunk[0]))
        if proc.returncode != 0:
            raise SystemExit(f"kernel_coverage: {gcov} failed ({proc.returncode}):\n{proc.stderr}")
        bad = [l for l in proc.stderr.splitlines() if "version" in l or "stamp mismatch" in l]
        if bad:
            raise SystemExit("kernel_coverage: gcov does not match the compiler's data "
                             "(pass --gcov, e.g. gcov-12):\n" + "\n".join(bad))
        for line in proc.stdout.splitlines():
            if line.strip():
                docs.append(json.loads(line))
    return docs


def collect(docs: list[dict], wanted: set[str]) -> dict[str, FileData]:
    data: dict[str, FileData] = {}
    for doc in docs:
        cwd = doc.get("current_working_directory", "")
        for f in doc.get("files", []):
            path = os.path.realpath(os.path.join(cwd, f["file"]))
            if path not in wanted:
                continue
            fd = data.setdefault(path, FileData())
            for l in f.get("lines", []):
                n = l["line_number"]
                fd.lines[n] = fd.lines.get(n, 0) + int(l["count"])
                counts = [int(b["count"]) for b in l.get("branches", []) if not b.get("throw")]
                if counts:
                    key = (n, l.get("function_name", ""))
                    old = fd.branches.get(key)
                    fd.branches[key] = (counts if old is None or len(old) != len(counts)
                                        else [a + b for a, b in zip(old, counts)])
            for fn in f.get("functions", []):
                info = fd.functions.setdefault(fn["name"], {
                    "name": fn.get("demangled_name", fn["name"]),
                    "start_line": fn["start_line"], "end_line": fn["end_line"], "count": 0})
                info["count"] += int(fn["execution_count"])
    return data


# ---------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------
def find_files(source: str, patterns: list[str]) -> list[str]:
    """Files under source (relative, sorted) that match a glob; each glob's
    folders before its first wildcard are the only ones walked."""
    found = set()
    for pattern in patterns:
        fixed = []
        for part in pattern.split("/")[:-1]:
            if any(c in part for c in "*?["):
                break
            fixed.append(part)
        top = os.path.join(source, *fixed)
        for root, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for name in files:
                rel = os.path.relpath(os.path.join(root, name), source).replace(os.sep, "/")
                if _glob_match(rel, pattern):
                    found.add(rel)
    return sorted(found)


def _glob_match(rel: str, pattern: str) -> bool:
    # ** matches any number of folders (none included); * stays within one.
    parts = re.split(r"(\*\*/|\*|\?)", pattern)
    rx = "".join("(?:.*/)?" if p == "**/" else "[^/]*" if p == "*" else "[^/]" if p == "?"
                 else re.escape(p) for p in parts)
    return re.fullmatch(rx, rel) is not None


def compress(numbers: list[int]) -> str:
    out, i = [], 0
    while i < len(numbers):
        j = i
        while j + 1 < len(numbers) and numbers[j + 1] == numbers[j] + 1:
            j += 1
        out.append(str(numbers[i]) if i == j else f"{numbers[i]}-{numbers[j]}")
        i = j + 1
    return ", ".join(out)


def file_report(source: str, rel: str, fd: FileData | None) -> dict:
    with open(os.path.join(source, rel), encoding="utf-8", errors="replace") as fh:
        st = parse_structure(fh.read())
    gcov_lines = fd.lines if fd else {}
    not_instantiated, preprocessed = classify_unseen(st, set(gcov_lines))
    executable = set(gcov_lines) | not_instantiated | preprocessed
    executed = {n for n, c in gcov_lines.items() if c > 0}
    never_entered = sorted(
        (f for f in (fd.functions.values() if fd else []) if f["count"] == 0),
        key=lambda f: (f["start_line"], f["name"]))
    outcomes = fd.branch_outcomes() if fd else {}
    return {
        "file": rel,
        "executable": len(executable),
        "executed": len(executed),
        "percent": 100.0 * len(executed) / len(executable) if executable else 100.0,
        "executed_lines": sorted(executed),
        # lines not run, three kinds (disjoint):
        "count_zero_lines": sorted(set(gcov_lines) - executed),
        "not_instantiated_lines": sorted(not_instantiated),
        "preprocessed_out_lines": sorted(preprocessed),
        "instantiations_never_entered": [
            {"line": f["start_line"], "function": f["name"]} for f in never_entered],
        # branch outcomes of the compiled code (a secondary figure)
        "branches": sum(len(v) for v in outcomes.values()),
        "branches_taken": sum(sum(v) for v in outcomes.values()),
        "partly_taken_lines": [
            {"line": n, "taken": sum(v), "outcomes": len(v)}
            for n, v in sorted(outcomes.items()) if n in executed and not all(v)],
    }


KINDS = [("count_zero_lines", "count 0", "compiled, never run"),
         ("not_instantiated_lines", "not inst.",
          "not instantiated: compiled by no suite (a template or inline function never "
          "instantiated or called, a discarded if constexpr branch)"),
         ("preprocessed_out_lines", "#if excl.",
          "#if excluded: in an #if branch the harness build leaves out (the inline PTX "
          "behind __CUDA_ARCH__, the non-harness side of KERNELZOO_CUDA_HARNESS)")]


def format_report(files: list[dict], n_gcda: int) -> str:
    width = max([len(f["file"]) for f in files] + [5])
    total = {"file": "total", "executable": sum(f["executable"] for f in files),
             "executed": sum(f["executed"] for f in files)}
    total["percent"] = (100.0 * total["executed"] / total["executable"]
                        if total["executable"] else 100.0)
    for key in ("branches", "branches_taken"):
        total[key] = sum(f[key] for f in files)
    for key, _, _ in KINDS:
        total[key] = [0] * sum(len(f[key]) for f in files)
    kinds = "".join(f"  {short:>9}" for _, short, _ in KINDS)
    out = [f"CUDA kernel line coverage in the CPU harness "
           f"(cuda_emulation suites, {n_gcda} counter file(s) merged)",
           f"{'file':<{width}}  {'run':>5} / {'lines':<5}  {'%':>6}{kinds}  {'branches':>13}"]
    for f in files + [total]:
        cells = "".join(f"  {len(f[key]):>9}" for key, _, _ in KINDS)
        out.append(f"{f['file']:<{width}}  {f['executed']:>5} / {f['executable']:<5}  "
                   f"{f['percent']:>5.1f}%{cells}  {f['branches_taken']:>5} / {f['branches']:<5}")
    missed = [f for f in files if any(f[key] for key, _, _ in KINDS)]
    if missed:
        out.append("")
        out.append("lines not run, by kind:")
        for key, short, long in KINDS:
            out.append(f"  {short:<9}  {long}")
        for f in missed:
            out.append(f"  {f['file']}")
            for key, short, _ in KINDS:
                if f[key]:
                    out.append(f"    {short}: {compress(f[key])}")
    partly = [f for f in files if f["partly_taken_lines"]]
    if partly:
        out.append("")
        out.append("lines run with a branch outcome never taken (taken/outcomes):")
        for f in partly:
            out.append(f"  {f['file']}: " + ", ".join(
                f"{b['line']} ({b['taken']}/{b['outcomes']})" for b in f["partly_taken_lines"]))
    entered = [f for f in files if f["instantiations_never_entered"]]
    if entered:
        out.append("")
        out.append("instantiations compiled but never entered:")
        for f in entered:
            for e in f["instantiations_never_entered"]:
                out.append(f"  {f['file']}:{e['line']}: {e['function']}")
    return "\n".join(line.rstrip() for line in out) + "\n"


def gcda_files(build: str, exclude: list[str]) -> list[str]:
    found = []
    ex = [os.path.realpath(e) for e in exclude]
    for root, dirs, files in os.walk(build):
        if any(os.path.realpath(root).startswith(e + os.sep) or os.path.realpath(root) == e
               for e in ex):
            dirs[:] = []
            continue
        found.extend(os.path.abspath(os.path.join(root, f)) for f in files if f.endswith(".gcda"))
    return sorted(found)


def cmd_reset(args: argparse.Namespace) -> int:
    for path in gcda_files(args.build, args.exclude):
        os.remove(path)
    if args.out:
        for name in (REPORT_TXT, REPORT_JSON):
            p = os.path.join(args.out, name)
            if os.path.exists(p):
                os.remove(p)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    source = os.path.realpath(args.source)
    rels = find_files(source, args.files or DEFAULT_FILES)
    if not rels:
        print(f"kernel_coverage: no file under {source} matches {args.files or DEFAULT_FILES}",
              file=sys.stderr)
        return 1
    gcdas = gcda_files(args.build, args.exclude)
    if not gcdas:
        print(f"kernel_coverage: no counters (*.gcda) under {args.build}: run the "
              "cuda_emulation suites of a build with KERNELZOO_HARNESS_COVERAGE=ON first",
              file=sys.stderr)
        return 1
    gcov = args.gcov or shutil.which("gcov")
    if not gcov:
        print("kernel_coverage: gcov not found (pass --gcov)", file=sys.stderr)
        return 1
    wanted = {os.path.realpath(os.path.join(source, r)) for r in rels}
    data = collect(run_gcov(gcov, gcdas), wanted)
    files = [file_report(source, r, data.get(os.path.realpath(os.path.join(source, r))))
             for r in rels]
    text = format_report(files, len(gcdas))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, REPORT_TXT), "w") as fh:
            fh.write(text)
        with open(os.path.join(args.out, REPORT_JSON), "w") as fh:
            json.dump({"files": files, "counter_files": len(gcdas)}, fh, indent=1)
    sys.stdout.write(text)
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("reset", "report"):
        p = sub.add_parser(name)
        p.add_argument("--build", required=True, help="folder searched for *.gcda")
        p.add_argument("--exclude", action="append", default=[],
                       help="folder under --build to leave alone (repeatable)")
        p.add_argument("--out", help="folder of kernel_coverage.txt / .json")
        if name == "report":
            p.add_argument("--source", required=True, help="the repository root")
            p.add_argument("--gcov", help="gcov matching the compiler (default: gcov on PATH)")
            p.add_argument("--files", action="append",
                           help=f"glob under --source (repeatable; default: {DEFAULT_FILES})")
    args = ap.parse_args(argv)
    return cmd_reset(args) if args.cmd == "reset" else cmd_report(args)


if __name__ == "__main__":
    sys.exit(main())
