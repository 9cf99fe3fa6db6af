"""Errors that carry where the problem is, so the user is told the file and the place."""

from __future__ import annotations


class QebError(Exception):
    """Base class: a problem with user input that the tool reports and survives."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None):
        self.path = path
        self.line = line
        where = ""
        if path is not None:
            where = f"{path}:{line}: " if line is not None else f"{path}: "
        elif line is not None:
            where = f"line {line}: "
        super().__init__(where + message)


class ModelError(QebError):
    """The ONNX file cannot be read or contains something the IR cannot model."""


class UnsupportedOperator(ModelError):
    """An ONNX node whose operator (or operator form) is not modelled."""


class SpecError(QebError):
    """The VNN-LIB file cannot be read or does not describe a supported property."""
