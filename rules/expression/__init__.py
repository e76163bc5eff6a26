"""Rule expressions: a small, safe language for rule conditions, compiled once.

    expression = compile_expression('avg(outlet_pressure, "5m") < 0.2 and running == 1',
                                    source=Source("config/profiles/booster_pump.yaml", 98, 11),
                                    known_points={"outlet_pressure", "running"})
    history.need(expression.windows)          # keep enough samples per point
    expression.holds(Context(history, now, device="pump_b1_1"))

The language and its semantics are described in docs/rules.md.
"""

from rules.expression.compiler import Expression, compile_expression
from rules.expression.errors import ExpressionError, Source
from rules.expression.functions import FUNCTIONS
from rules.expression.history import Context, History, PointHistory, Sample, Scope

__all__ = [
    "FUNCTIONS", "Context", "Expression", "ExpressionError", "History", "PointHistory",
    "Sample", "Scope", "Source", "compile_expression",
]
