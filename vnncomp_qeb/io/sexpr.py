"""S-expression reading with line numbers, for VNN-LIB 1.0."""

from __future__ import annotations

import re

from vnncomp_qeb.errors import SpecError

_TOKEN = re.compile(r";[^\n]*|\(|\)|[^\s();]+|\n")


class Atom(str):
    """A token, remembering the line it is on."""

    line: int

    def __new__(cls, text: str, line: int) -> "Atom":
        obj = super().__new__(cls, text)
        obj.line = line
        return obj


class SList(list):
    """A parenthesised list, remembering the line it opens on."""

    def __init__(self, line: int):
        super().__init__()
        self.line = line


def parse_sexprs(text: str, path: str = "") -> list[SList]:
    """All top-level s-expressions of ``text``; comments (``;``) are skipped."""
    line = 1
    stack: list[SList] = []
    top: list[SList] = []
    for m in _TOKEN.finditer(text):
        tok = m.group()
        if tok == "\n":
            line += 1
        elif tok[0] == ";":
            continue
        elif tok == "(":
            stack.append(SList(line))
        elif tok == ")":
            if not stack:
                raise SpecError("unbalanced ')'", path=path, line=line)
            done = stack.pop()
            (stack[-1] if stack else top).append(done)
        elif stack:
            stack[-1].append(Atom(tok, line))
        else:
            raise SpecError(f"unexpected token '{tok}' outside parentheses", path=path, line=line)
    if stack:
        raise SpecError("unbalanced '(': missing ')' before end of file", path=path, line=stack[-1].line)
    return top
