"""The `math` agent: `calculate` evaluates arithmetic safely, without `eval`.

The expression is parsed with `ast` and only numbers, arithmetic operators, a few
functions and constants are allowed; exponents and results are bounded so a goal
cannot make the server compute forever.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

from agents.errors import ToolError
from agents.llm import ToolSpec
from agents.tools._base import Agent, Tool, require_valid

MAX_EXPRESSION_CHARS = 500
MAX_EXPONENT = 1000
MAX_MAGNITUDE = 1e300

_BINARY: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "sqrt": math.sqrt,
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "log": math.log,
    "log10": math.log10,
    "exp": math.exp,
    "abs": abs,
    "round": round,
    "min": min,
    "max": max,
    "floor": math.floor,
    "ceil": math.ceil,
}
_CONSTANTS = {"pi": math.pi, "e": math.e}

CALCULATE = ToolSpec(
    agent="math",
    action="calculate",
    description="Evaluate an arithmetic expression (+ - * / // % **, sqrt, log, sin, ...).",
    parameters={
        "type": "object",
        "properties": {"expression": {"type": "string", "description": "e.g. 17 * 23 + 4"}},
        "required": ["expression"],
    },
    idempotent=True,
    keywords=("calculate", "compute", "math", "sum", "plus", "times", "multiply", "divide"),
)


def evaluate(expression: str) -> float | int:
    """The value of an arithmetic expression; `ToolError` for anything else."""
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"expression longer than {MAX_EXPRESSION_CHARS} characters")
    try:
        tree = ast.parse(expression.replace("^", "**").replace("\u00d7", "*"), mode="eval")
    except SyntaxError as exc:
        raise ToolError(f"not an arithmetic expression: {expression!r}") from exc
    try:
        value: float | int = _eval(tree.body)
    except (ZeroDivisionError, OverflowError, ValueError, TypeError) as exc:
        raise ToolError(f"cannot evaluate {expression!r}: {exc}") from exc
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError(f"{expression!r} has no finite value")
    return value


def _eval(node: ast.AST) -> Any:
    match node:
        case ast.Constant(value=value) if isinstance(value, int | float) and not isinstance(
            value, bool
        ):
            return value
        case ast.Name(id=name) if name in _CONSTANTS:
            return _CONSTANTS[name]
        case ast.BinOp(left=left, op=op, right=right) if type(op) in _BINARY:
            return _binary(op, _eval(left), _eval(right))
        case ast.UnaryOp(op=op, operand=operand) if type(op) in _UNARY:
            return _UNARY[type(op)](_eval(operand))
        case ast.Call(func=ast.Name(id=name), args=args, keywords=[]) if name in _FUNCTIONS:
            return _FUNCTIONS[name](*[_eval(a) for a in args])
    raise ToolError(f"not allowed in an expression: {ast.unparse(node)!r}")


def _binary(op: ast.operator, left: Any, right: Any) -> Any:
    if isinstance(op, ast.Pow) and abs(right) > MAX_EXPONENT:
        raise ToolError(f"exponent {right} is larger than {MAX_EXPONENT}")
    value = _BINARY[type(op)](left, right)
    if abs(value) > MAX_MAGNITUDE:
        raise ToolError("result too large")
    return value


class CalculateTool(Tool):
    spec = CALCULATE

    async def call(self, parameters: Mapping[str, Any]) -> dict[str, Any]:
        require_valid(self.spec, parameters)
        expression = parameters["expression"]
        value = evaluate(expression)
        return {"expression": expression, "value": value}


class MathAgent(Agent):
    name = "math"

    @classmethod
    def tool_specs(cls) -> tuple[ToolSpec, ...]:
        return (CALCULATE,)

    def __init__(self, context: object = None) -> None:
        self._tools = {"calculate": CalculateTool()}

    def tools(self) -> Mapping[str, Tool]:
        return self._tools
