"""Text to syntax tree: the grammar of rule expressions and its error messages.

The grammar is the whole language: a construct it does not list (attribute access,
subscripts, lambdas, comprehensions, imports) cannot be written, so safety does not
depend on a blacklist kept in step with Python. Lark's LALR parser reports the exact
character where the text stops making sense and what it expected there; this module
turns that into a sentence a site engineer can act on.
"""

from __future__ import annotations

import functools

from lark import Lark, Token, Tree
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

from rules.expression.errors import ExpressionError, Source

GRAMMAR = r"""
?start: or_test

?or_test: and_test ("or" and_test)*
?and_test: not_test ("and" not_test)*
?not_test: "not" not_test -> not_
         | comparison
?comparison: sum (COMPARE sum)*
?sum: product (ADD product)*
?product: unary (MUL unary)*
?unary: ADD unary -> sign
      | atom

?atom: NUMBER -> number
     | STRING -> string
     | "true" -> true
     | "false" -> false
     | call
     | name
     | "(" or_test ")"

call: NAME "(" [or_test ("," or_test)* [","]] ")"
name: NAME ["." NAME]
    | QUOTED_NAME

COMPARE: "==" | "!=" | "<=" | ">=" | "<" | ">"
ADD: "+" | "-"
MUL: "*" | "/" | "%"
NAME: /[^\W\d]\w*/
QUOTED_NAME: /`[^`\n]+`/
NUMBER: /\d+(\.\d*)?([eE][+-]?\d+)?|\.\d+([eE][+-]?\d+)?/
STRING: /"(\\.|[^"\\\n])*"|'(\\.|[^'\\\n])*'/

%ignore /[ \t\r\n]+/
"""

# Python words an engineer may reach for; each names the construct being refused.
_PYTHON_WORDS = {
    "lambda": "lambda functions",
    "import": "imports",
    "from": "imports",
    "for": "comprehensions and loops",
    "in": "membership tests (`x in ...`); compare with == and combine with or",
    "is": "`is`; compare with == or !=",
    "if": "conditional expressions (`a if c else b`); combine conditions with and/or",
    "else": "conditional expressions (`a if c else b`); combine conditions with and/or",
    "def": "function definitions",
    "class": "class definitions",
    "await": "await",
    "async": "async",
    "yield": "yield",
    "global": "global",
    "del": "del",
    "exec": "exec",
    "eval": "eval",
    "None": "None; a missing value is tested with stale(point, \"2m\") or age(point)",
    "True": "True; write true",
    "False": "False; write false",
    "null": "null; a missing value is tested with stale(point, \"2m\") or age(point)",
}

# Characters that are not in the language at all, and what to write instead.
_CHARACTER_HINTS = {
    "=": "'=' alone is not a comparison; write == to compare",
    "!": "'!' is not an operator; write not, or != to compare",
    "&": "'&' is not an operator; write and",
    "|": "'|' is not an operator; write or",
    "[": "subscripts and lists are not part of rule expressions; "
         "use a window function such as avg(point, \"5m\") for history",
    "]": "subscripts and lists are not part of rule expressions",
    "{": "dicts and sets are not part of rule expressions",
    "}": "dicts and sets are not part of rule expressions",
    ":": "':' is not part of rule expressions (no lambdas, slices or dicts)",
    "@": "'@' is not an operator",
    "^": "'^' is not an operator; there is no power operator, write x * x",
    "~": "'~' is not an operator; write not",
    ";": "an expression is one expression; combine conditions with and/or",
    "$": "'$' is not part of rule expressions; a point is named by its id",
    "`": "a quoted name is closed with a second ` on the same line",
    '"': "a string is closed with a second \" on the same line",
    "'": "a string is closed with a second ' on the same line",
}

_EXPECTED_NAMES = {
    "NAME": "a name", "QUOTED_NAME": "a `quoted name`", "NUMBER": "a number",
    "STRING": "a string", "TRUE": "true", "FALSE": "false", "NOT": "not", "AND": "and",
    "OR": "or", "LPAR": "'('", "RPAR": "')'", "COMMA": "','", "DOT": "'.'",
    "COMPARE": "a comparison", "ADD": "+ or -", "MUL": "*, / or %",
    "$END": "the end of the expression",
}

_VALUE_TOKENS = {"NAME", "QUOTED_NAME", "NUMBER", "STRING", "TRUE", "FALSE", "LPAR"}
# After a name '(' is expected too (it may be a call), so "a value is missing" is
# decided on these alone.
_OPERAND_TOKENS = _VALUE_TOKENS - {"LPAR"}
_A_VALUE = "a value (a number, a point, a function call or '(')"


def _reject_python_words(token: Token) -> Token:
    # Called by the lexer for every name, so the error points at the word itself
    # rather than at whatever follows it.
    refused = _PYTHON_WORDS.get(token.value)
    if refused is not None:
        raise _Refused(f"'{token.value}' is Python, not a rule expression: rule expressions "
                       f"have no {refused}", token.line or 1, token.column or 1)
    return token


class _Refused(Exception):
    def __init__(self, message: str, line: int, col: int) -> None:
        super().__init__(message)
        self.message, self.line, self.col = message, line, col


@functools.cache
def _parser() -> Lark:
    """Built on first use: a site without rules never pays for the parser tables."""
    return Lark(
        GRAMMAR, parser="lalr", propagate_positions=True, maybe_placeholders=False,
        lexer_callbacks={"NAME": _reject_python_words},
    )


def parse(text: str, source: Source | None = None) -> Tree:
    """The syntax tree of `text`, or an ExpressionError at the first character that is wrong."""
    if not text.strip():
        raise ExpressionError("the expression is empty; write a condition such as "
                              "outlet_pressure < 0.2", text=text, source=source)
    try:
        return _parser().parse(text)
    except _Refused as refused:
        raise ExpressionError(refused.message, text=text, line=refused.line, col=refused.col,
                              source=source) from None
    except UnexpectedInput as error:
        message, line, col = _describe(error, text)
        raise ExpressionError(message, text=text, line=line, col=col, source=source) from None


def _describe(error: UnexpectedInput, text: str) -> tuple[str, int, int]:
    """A message and its (line, col) for one of Lark's parse errors."""
    if isinstance(error, UnexpectedCharacters):
        char = text[error.pos_in_stream] if error.pos_in_stream < len(text) else ""
        hint = _CHARACTER_HINTS.get(char, f"{char!r} is not part of rule expressions")
        return hint, error.line, error.column
    if isinstance(error, UnexpectedEOF) or (
        isinstance(error, UnexpectedToken) and error.token.type == "$END"
    ):
        terminals = set(getattr(error, "expected", set()))
        expected = _A_VALUE if terminals & _VALUE_TOKENS else _expected(terminals)
        lines = text.rstrip().splitlines() or [""]
        return (f"the expression ends too early; expected {expected}",
                len(lines), len(lines[-1]) + 1)
    assert isinstance(error, UnexpectedToken)
    token = error.token
    expected = _expected(error.expected)
    found = f"'{token.value}'"
    if token.type == "MUL" and token.value == "*" and text[token.start_pos - 1] == "*":
        message = "there is no power operator '**'; write x * x"
    elif token.type == "DOT":
        message = ("a point is named `point` or `device.point`; rule expressions have no "
                   "attribute access")
    elif token.type == "RPAR" and "RPAR" not in error.expected:
        message = "this ')' closes no '('"
    elif error.expected & _VALUE_TOKENS and token.type not in _VALUE_TOKENS:
        message = f"expected {_A_VALUE} but found {found}"
    elif token.type in _VALUE_TOKENS and not error.expected & _OPERAND_TOKENS:
        message = (f"{found} follows a complete value; an operator is missing before it "
                   f"(+ - * / %, a comparison, and, or)")
        if token.type == "NAME" and token.value in {"s", "m", "h", "d", "ms"}:
            message = "a window is a quoted duration such as \"5m\"; put the number and unit in quotes"
    else:
        message = f"unexpected {found}; expected {expected}"
    return message, token.line or 1, token.column or 1


def _expected(terminals: set[str]) -> str:
    names = sorted({_EXPECTED_NAMES.get(name, name.lower()) for name in terminals})
    if not names:
        return "more"
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
