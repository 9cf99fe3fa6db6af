"""Read a VNN-LIB file of either version (``.gz`` too) into a :class:`Spec`."""

from __future__ import annotations

import gzip
import os
import re

from vnncomp_qeb.errors import SpecError
from vnncomp_qeb.io.vnnlib1 import read_vnnlib1
from vnncomp_qeb.io.vnnlib2 import read_vnnlib2
from vnncomp_qeb.spec import Spec

_V2 = re.compile(r"^\s*\((vnnlib-version|declare-network)\b", re.MULTILINE)


def read_text(path: str) -> str:
    """The text of a (possibly gzip-compressed) file, with clear errors."""
    if os.path.isdir(path):
        raise SpecError("is a folder, not a VNN-LIB file", path=path)
    if not os.path.isfile(path):
        raise SpecError("file not found", path=path)
    try:
        # utf-8-sig: a byte-order mark some editors write is not part of the text
        if path.endswith(".gz"):
            with gzip.open(path, "rt", encoding="utf-8-sig") as f:
                text = f.read()
        else:
            with open(path, encoding="utf-8-sig") as f:
                text = f.read()
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile) as exc:
        raise SpecError(f"cannot read file ({exc})", path=path) from exc
    _check_size(text, path)
    return text


MAX_ATOMS = 2_000_000  # comparisons in one file: ~1,000 inputs × 1,000 disjuncts


def _check_size(text: str, path: str) -> None:
    """Refuse, before parsing, a property with more disjuncts than the verifier takes: counting
    them is one pass over the text, parsing them first cost 47 s and 5.5 GB on 1.7 M disjuncts."""
    from vnncomp_qeb.io.spec_builder import MAX_CLAUSES

    n = text.count("(and")
    if n > MAX_CLAUSES:
        raise SpecError(f"the property has {n} conjunctions, more than the {MAX_CLAUSES} disjuncts the "
                        "verifier takes; split it into several instances", path=path)
    atoms = text.count("(<=") + text.count("(>=")
    if atoms > MAX_ATOMS:  # a disjunction written without (and ...) blocks
        raise SpecError(f"the property has {atoms} comparisons (at most {MAX_ATOMS} are read); split it "
                        "into several instances", path=path)


def load_spec(path: str) -> Spec:
    """Parse the VNN-LIB file at ``path``; the version is detected from its content."""
    text = read_text(path)
    return parse_spec(text, path)


def parse_spec(text: str, path: str = "<string>") -> Spec:
    """Parse VNN-LIB text of either version."""
    spec = read_vnnlib2(text, path) if _V2.search(text) else read_vnnlib1(text, path)
    if not spec.n_inputs:
        raise SpecError("no input variables are declared", path=path)
    return spec
