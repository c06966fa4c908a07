"""Errors the IR raises. A GraphError is always the user's (or a frontend's) mistake:
the CLI turns it into one line and exit code 2."""

from __future__ import annotations


class GraphError(ValueError):
    """An invalid graph. `rule` names the validation rule that failed, so tests and tools
    can tell the rules apart without parsing messages."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(message)
        self.rule = rule

    def __str__(self) -> str:
        return f"{self.args[0]} [{self.rule}]"


class SchemaError(ValueError):
    """A malformed or unsupported JSON graph file."""


class InputError(ValueError):
    """Bad user input outside a graph file: a malformed ONNX model, an unsupported operator,
    a Python file that fails to import, a bad manifest, a plan that cannot fit. The CLI
    prints it as one line and exits 2."""
