"""`--where EXPR`: a row filter parsed with `ast` against a strict whitelist and evaluated by pyarrow compute.

The text is never evaluated by Python: `ast.parse(mode="eval")` gives a tree, every node of which must be one
of a few kinds (and/or/not, comparisons, `in` a literal list, + - * /, column names, numbers, strings, booleans);
it is then rebuilt as a `pyarrow.compute` Expression over the table's columns. Anything else (calls,
attributes, subscripts, lambdas, comprehensions, conditional expressions, dunder names) is a parse error.
Arithmetic is done in float64; a row whose value is null (no outlier score, say) does not match.
"""

from __future__ import annotations

import ast
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.errors import ConfigError
from pipeline.roots.features import FeatureSet, read_meta

MAX_LENGTH = 2000  # characters: a filter, not a program

_COMPARE = {ast.Lt: "less", ast.LtE: "less_equal", ast.Gt: "greater", ast.GtE: "greater_equal",
            ast.Eq: "equal", ast.NotEq: "not_equal"}
_ARITHMETIC = {ast.Add: "add", ast.Sub: "subtract", ast.Mult: "multiply", ast.Div: "divide"}
# What a refused node is called in the message.
_NAMES = {ast.Call: "function calls", ast.Attribute: "attribute access", ast.Subscript: "subscripts",
          ast.Lambda: "lambda", ast.IfExp: "conditional expressions (a if b else c)",
          ast.ListComp: "comprehensions", ast.SetComp: "comprehensions", ast.DictComp: "comprehensions",
          ast.GeneratorExp: "comprehensions", ast.NamedExpr: "assignment (:=)", ast.Starred: "starred values",
          ast.Await: "await", ast.Yield: "yield", ast.YieldFrom: "yield", ast.JoinedStr: "f-strings",
          ast.Dict: "dicts", ast.Set: "sets"}


def _refuse(text: str, why: str) -> ConfigError:
    return ConfigError(f"cannot parse --where {text!r}: {why}; allowed: column names, numbers, 'strings', True/False, "
                       "and/or/not, < <= > >= == !=, in / not in [literal list], + - * /, parentheses")


@dataclass(frozen=True)
class Where:
    """A parsed, checked filter: its text, its tree and the column names it reads (first use order)."""

    text: str
    tree: ast.Expression
    columns: tuple[str, ...]

    def expression(self, available: Sequence[str]) -> pc.Expression:
        """The pyarrow Expression; a column not among `available` is an error that lists them."""
        unknown = [c for c in self.columns if c not in available]
        if unknown:
            raise ConfigError(f"--where {self.text!r}: no column {', '.join(map(repr, unknown))}; available: "
                              f"{', '.join(available)}")
        try:
            return _Compiler(self.text).build(self.tree.body)
        except RecursionError:
            raise _refuse(self.text, "nested too deeply") from None


def parse_where(text: str) -> Where:
    """Parse and check a --where text (no column is looked up yet); refused input raises ConfigError."""
    if not text or not text.strip():
        raise _refuse(text, "the expression is empty")
    if len(text) > MAX_LENGTH:
        raise _refuse(text[:60] + "...", f"longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
        raise _refuse(text, f"not an expression ({type(exc).__name__}: {getattr(exc, 'msg', exc)})") from None
    columns: list[str] = []
    try:
        _check(tree.body, text, columns)
    except RecursionError:
        raise _refuse(text, "nested too deeply") from None
    return Where(text, tree, tuple(dict.fromkeys(columns)))


def _check(node: ast.AST, text: str, columns: list[str]) -> None:
    """Every node on the whitelist, or a ConfigError naming the first one that is not."""
    if isinstance(node, ast.BoolOp):
        for value in node.values:
            _check(value, text, columns)
    elif isinstance(node, ast.UnaryOp):
        if type(node.op) not in (ast.Not, ast.USub, ast.UAdd):
            raise _refuse(text, f"operator {type(node.op).__name__} is not allowed")
        _check(node.operand, text, columns)
    elif isinstance(node, ast.BinOp):
        if type(node.op) not in _ARITHMETIC:
            raise _refuse(text, f"operator {type(node.op).__name__} is not allowed (only + - * /)")
        _check(node.left, text, columns)
        _check(node.right, text, columns)
    elif isinstance(node, ast.Compare):
        _check(node.left, text, columns)
        for op, right in zip(node.ops, node.comparators):
            if isinstance(op, (ast.In, ast.NotIn)):
                _literal_list(right, text)
            elif type(op) in _COMPARE:
                _check(right, text, columns)
            else:
                raise _refuse(text, f"comparison {type(op).__name__} is not allowed ('is' included)")
    elif isinstance(node, ast.Name):
        if node.id.startswith("__") or not node.id.isidentifier():
            raise _refuse(text, f"name {node.id!r} is not allowed (dunder names are never columns)")
        columns.append(node.id)
    elif isinstance(node, ast.Constant):
        _scalar(node, text)
    else:
        what = _NAMES.get(type(node), type(node).__name__)
        raise _refuse(text, f"{what} not allowed")


def _scalar(node: ast.AST, text: str) -> object:
    """A literal number, string or boolean (a negated number too)."""
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)) \
            and isinstance(node.operand, ast.Constant):
        value = _scalar(node.operand, text)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _refuse(text, f"a sign before {value!r}")
        return -value if isinstance(node.op, ast.USub) else value
    if not isinstance(node, ast.Constant) or not isinstance(node.value, (bool, int, float, str)):
        shown = (repr(node.value) if isinstance(node, ast.Constant) else "a column name" if isinstance(node, ast.Name)
                 else _NAMES.get(type(node), type(node).__name__))
        raise _refuse(text, f"{shown} is not a number, string or boolean")
    return node.value


def _literal_list(node: ast.AST, text: str) -> list:
    if not isinstance(node, (ast.List, ast.Tuple)):
        raise _refuse(text, "'in' takes a literal list, e.g. shard in ['a', 'b']")
    values = [_scalar(v, text) for v in node.elts]
    if len({type(v) is str for v in values}) > 1:
        raise _refuse(text, "an 'in' list mixes strings and numbers")
    return values


class _Compiler:
    """A checked tree → pyarrow Expression (nothing here runs Python code from the text)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def build(self, node: ast.AST) -> pc.Expression:
        if isinstance(node, ast.BoolOp):
            parts = [self.build(v) for v in node.values]
            out = parts[0]
            for part in parts[1:]:
                out = (out & part) if isinstance(node.op, ast.And) else (out | part)
            return out
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.Not):
                return ~self.build(node.operand)
            if isinstance(node.operand, ast.Constant):
                return pc.scalar(_scalar(node, self.text))
            operand = self.build(node.operand).cast(pa.float64())
            return pc.negate(operand) if isinstance(node.op, ast.USub) else operand
        if isinstance(node, ast.BinOp):
            left, right = (self.build(n).cast(pa.float64()) for n in (node.left, node.right))
            return getattr(pc, _ARITHMETIC[type(node.op)])(left, right)
        if isinstance(node, ast.Compare):
            out, left = None, node.left
            for op, right in zip(node.ops, node.comparators):  # a < b < c is (a < b) and (b < c)
                part = self._compare(left, op, right)
                out = part if out is None else out & part
                left = right
            return out
        if isinstance(node, ast.Name):
            return pc.field(node.id)
        return pc.scalar(_scalar(node, self.text))

    def _compare(self, left: ast.AST, op: ast.cmpop, right: ast.AST) -> pc.Expression:
        value = self.build(left)
        if isinstance(op, (ast.In, ast.NotIn)):
            found = value.isin(_literal_list(right, self.text))
            return ~found if isinstance(op, ast.NotIn) else found
        return getattr(pc, _COMPARE[type(op)])(value, self.build(right))


def matching_rows(table: pa.Table, where: Where) -> np.ndarray:
    """Positions (ascending, int64) of the rows of `table` the filter keeps; null counts as not kept."""
    expression = where.expression(table.column_names)
    numbered = pa.table({**{c: table.column(c) for c in where.columns}, "__row": np.arange(table.num_rows)})
    try:
        kept = numbered.filter(expression)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
        types = ", ".join(f"{c}: {table.schema.field(c).type}" for c in where.columns)
        raise ConfigError(f"cannot evaluate --where {where.text!r} ({types}): {str(exc).splitlines()[0]}") from None
    return kept.column("__row").to_numpy().astype(np.int64)


def row_columns(fs: FeatureSet) -> list[str]:
    """The columns a --where can read from a feature set's files: every scalar (non-vector) column, then `id`."""
    if fs.files[0].suffix.lower() == ".npy":  # vectors made elsewhere: keys only
        return ["key", "id"]
    schema = pq.read_schema(fs.files[0])
    scalar = [f.name for f in schema if not (pa.types.is_list(f.type) or pa.types.is_fixed_size_list(f.type)
                                             or pa.types.is_large_list(f.type))]
    return scalar + ["id"]


def read_rows(fs: FeatureSet, columns: Sequence[str]) -> pa.Table:
    """Those columns of `row_columns(fs)` for every row, in id order (`id` = the running row number)."""
    stored = [c for c in columns if c != "id"]
    ids = pa.array(np.arange(fs.count, dtype=np.int64))
    if not stored:  # (a table of no columns would have no rows either)
        table = pa.table({"id": ids})
    elif fs.files[0].suffix.lower() == ".npy":
        table = read_meta(fs, tuple(stored))  # `id` added
    else:
        table = pa.concat_tables(pq.read_table(p, columns=stored) for p in fs.files).append_column("id", ids)
    return table.select(list(columns))
