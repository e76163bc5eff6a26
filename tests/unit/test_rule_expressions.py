"""Rule expressions: the language, its functions over history, its refusals and its errors."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

from gateway.batch import Batch, Quality
from gateway.config.errors import ConfigError
from rules.expression import (
    FUNCTIONS,
    Context,
    ExpressionError,
    History,
    Source,
    compile_expression,
)


def history_of(point: str, samples: list[tuple[float, object]], **qualities: str) -> History:
    """A history of one point; `qualities` maps a sample's ts (as `t<ts>`) to a bad quality."""
    history = History(max_samples=1000)
    history.need({point: 86400})
    for ts, value in samples:
        history.record(point, ts, value, qualities.get(f"t{int(ts)}", Quality.GOOD))
    return history


def evaluate(text: str, history: History | None = None, now: float = 0.0, **kwargs):
    return compile_expression(text).evaluate(Context(history or History(), now, **kwargs))


def error_of(text: str, **kwargs) -> ExpressionError:
    with pytest.raises(ExpressionError) as caught:
        compile_expression(text, **kwargs)
    return caught.value


# -- arithmetic and logic -----------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("7 % 4", 3),
        ("10 / 4", 2.5),
        ("-2 + +5", 3),
        ("- (1 - 3)", 2),
        ("2 * -3", -6),
        ("1.5e2", 150.0),
        (".5 + 1", 1.5),
        ("1 < 2", True),
        ("2 >= 3", False),
        ('"开" == "开"', True),
        ("'a' != \"a\"", False),
        ("true and not false", True),
        ("false or 0 or 3 > 2", True),
        ("not 0", True),
        ("abs(-3)", 3),
        ("min(4, 2, 9)", 2),
        ("max(4, 2, 9)", 9),
        ("round(2.346, 2)", 2.35),
        ("round(2.6)", 3),
    ],
)
def test_arithmetic_comparison_and_logic_follow_the_usual_rules(text: str, expected) -> None:
    assert evaluate(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1 < 2 < 3", True), ("1 < 3 < 2", False), ("3 > 2 > 1 >= 1", True), ("1 == 1 != 2", True)],
)
def test_chained_comparisons_hold_only_when_every_link_holds(text: str, expected: bool) -> None:
    assert evaluate(text) is expected


def test_a_chained_comparison_reads_its_middle_point_once_per_link() -> None:
    history = history_of("p", [(0, 0.5)])
    assert evaluate("0.2 <= p < 0.6", history) is True
    assert evaluate("0.6 <= p < 1", history) is False


def test_division_by_zero_is_unknown_rather_than_an_exception() -> None:
    assert evaluate("1 / 0") is None
    assert evaluate("1 % 0") is None


def test_arithmetic_on_text_is_unknown_so_text_cannot_be_multiplied_into_memory() -> None:
    assert evaluate('"x" * 1000000000') is None
    assert evaluate('"a" + "b"') is None


def test_points_read_their_current_good_value() -> None:
    history = history_of("outlet_pressure", [(0, 0.1), (5, 0.35)])
    assert evaluate("outlet_pressure * 1000", history, now=5) == 350.0


def test_chinese_point_names_and_text_values_work() -> None:
    history = history_of("运行状态", [(0, "运行")])
    assert evaluate('运行状态 == "运行"', history) is True


def test_a_backquoted_name_reaches_a_point_whose_id_is_not_an_identifier() -> None:
    history = history_of("pump-b1.outlet_pressure", [(0, 0.1)])
    assert evaluate("`pump-b1.outlet_pressure` < 0.2", history) is True


# -- missing and bad values ----------------------------------------------------------


def test_a_point_whose_latest_sample_is_bad_is_unknown_and_arithmetic_propagates_it() -> None:
    history = history_of("p", [(0, 0.5), (5, None)], t5=Quality.COMM_FAILURE)
    assert evaluate("p", history, now=5) is None
    assert evaluate("p * 2 + 1", history, now=5) is None
    assert evaluate("abs(p)", history, now=5) is None
    assert evaluate("max(p, 1)", history, now=5) is None


def test_a_comparison_with_an_unknown_value_is_unknown_and_never_holds() -> None:
    expression = compile_expression("p < 0.2")
    context = Context(History(), 0)
    assert expression.evaluate(context) is None
    assert expression.holds(context) is False


def test_not_of_unknown_stays_unknown_so_a_dead_sensor_does_not_fire_a_negated_rule() -> None:
    expression = compile_expression("not (p > 0.2)")
    assert expression.evaluate(Context(History(), 0)) is None
    assert expression.holds(Context(History(), 0)) is False


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("p > 1 and false", False),
        ("p > 1 and true", None),
        ("p > 1 or true", True),
        ("p > 1 or false", None),
        ("false and p > 1", False),
        ("1 < p < 0", None),
        ("2 < 1 < p", False),
    ],
)
def test_and_or_follow_three_valued_logic_with_unknown(text: str, expected) -> None:
    assert evaluate(text) is expected


def test_comparing_text_with_a_number_is_unknown_but_equality_is_simply_false() -> None:
    history = history_of("state", [(0, "fault")])
    assert evaluate("state > 3", history) is None
    assert evaluate("state == 3", history) is False


# -- profile rules and site rules ----------------------------------------------------


def test_a_profile_rule_reads_the_points_of_the_device_it_runs_for() -> None:
    history = History()
    history.record_batch(Batch("pump_b1_1", 10.0, ("outlet_pressure", "running"), [0.1, 1]))
    history.record_batch(Batch("pump_b1_2", 10.0, ("outlet_pressure", "running"), [0.4, 1]))
    expression = compile_expression("outlet_pressure < 0.2 and running == 1")
    assert expression.holds(Context(history, 10.0, device="pump_b1_1")) is True
    assert expression.holds(Context(history, 10.0, device="pump_b1_2")) is False


def test_a_site_rule_names_points_across_devices() -> None:
    history = History()
    history.record_batch(Batch("ahu_1", 10.0, ("fan_command", "fan_status"), [1, 0]))
    expression = compile_expression("ahu_1.fan_command == 1 and ahu_1.fan_status == 0")
    assert expression.holds(Context(history, 10.0)) is True
    assert expression.points == {"ahu_1.fan_command", "ahu_1.fan_status"}


def test_a_batch_with_bad_quality_records_no_value() -> None:
    history = History()
    history.record_batch(Batch.failed("meter_1", 5.0, ("kwh",), Quality.COMM_FAILURE))
    assert Context(history, 5.0, device="meter_1").value("kwh") is None
    assert evaluate('age(meter_1.kwh)', history, now=5.0) == math.inf


# -- functions over history ----------------------------------------------------------

# A pressure sampled every minute: 1, 2, 4, 8 at t = 0, 60, 120, 180.
PRESSURE = [(0, 1.0), (60, 2.0), (120, 4.0), (180, 8.0)]


def test_avg_min_over_and_max_over_use_the_good_samples_inside_the_window() -> None:
    history = history_of("p", PRESSURE)
    # the window is (now - 2m, now]: the samples at 120 and 180
    assert evaluate('avg(p, "2m")', history, now=180) == 6.0
    assert evaluate('min_over(p, "2m")', history, now=180) == 4.0
    assert evaluate('max_over(p, "2m")', history, now=180) == 8.0
    assert evaluate('avg(p, "1h")', history, now=180) == 3.75


def test_window_functions_skip_bad_samples_and_are_unknown_over_an_empty_window() -> None:
    history = history_of("p", [*PRESSURE, (240, None)], t240=Quality.DEVICE_EXCEPTION)
    assert evaluate('max_over(p, "90s")', history, now=240) == 8.0
    assert evaluate('avg(p, "30s")', history, now=240) is None


def test_delta_is_the_change_since_the_value_in_force_when_the_window_opened() -> None:
    history = history_of("kwh", PRESSURE)
    assert evaluate('delta(kwh, "90s")', history, now=180) == 6.0  # 8 - value at t=90 (2)
    assert evaluate('delta(kwh, "2m")', history, now=180) == 6.0  # 8 - value at t=60 (2)


def test_delta_over_a_window_longer_than_the_history_measures_from_the_oldest_sample() -> None:
    history = history_of("kwh", PRESSURE)
    assert evaluate('delta(kwh, "1h")', history, now=180) == 7.0


def test_delta_of_a_single_sample_is_unknown() -> None:
    assert evaluate('delta(kwh, "1h")', history_of("kwh", [(0, 5.0)]), now=0) is None


def test_rate_is_per_minute_between_the_last_two_samples_or_over_a_window() -> None:
    history = history_of("level", [(0, 10.0), (30, 10.5), (60, 12.0)])
    assert evaluate("rate(level)", history, now=60) == 3.0  # 1.5 in 30 s
    assert evaluate('rate(level, "1m")', history, now=60) == 2.0  # 2 in 60 s
    assert evaluate("rate(level)", history_of("level", [(0, 1.0)])) is None


def test_changed_is_true_only_for_a_new_different_value_since_the_previous_evaluation() -> None:
    history = history_of("door", [(0, 0), (10, 1)])
    expression = compile_expression("changed(door)")
    assert expression.evaluate(Context(history, 10, previous=5)) is True
    assert expression.evaluate(Context(history, 12, previous=10)) is False  # nothing new
    history.record("door", 20, 1)
    assert expression.evaluate(Context(history, 20, previous=12)) is False  # new, same value
    assert evaluate("changed(door)", history_of("door", [(0, 1)])) is False  # nothing before


def test_changed_looks_past_bad_samples_to_the_previous_good_value() -> None:
    history = history_of("door", [(0, 0), (5, None), (10, 0)], t5=Quality.COMM_FAILURE)
    assert evaluate("changed(door)", history, now=10, previous=7) is False


def test_age_is_seconds_since_the_last_good_value_and_infinite_before_any() -> None:
    history = history_of("p", [(100, 1.0), (130, None)], t130=Quality.COMM_FAILURE)
    assert evaluate("age(p)", history, now=150) == 50.0
    assert evaluate("age(q)", history, now=150) == math.inf
    assert evaluate("age(q) > 120", history, now=150) is True


def test_stale_is_true_when_no_good_value_arrived_within_the_window() -> None:
    history = history_of("p", [(100, 1.0), (130, None)], t130=Quality.COMM_FAILURE)
    assert evaluate('stale(p, "1m")', history, now=150) is False
    assert evaluate('stale(p, "1m")', history, now=161) is True
    assert evaluate('stale(never_read, "1m")', history, now=0) is True


def test_count_counts_the_samples_in_the_window_that_meet_the_condition() -> None:
    history = history_of("state", [(0, 1), (60, 3), (120, 3), (180, 2), (240, 3)])
    assert evaluate('count(state == 3, "1h")', history, now=240) == 3
    assert evaluate('count(state == 3, "2m")', history, now=240) == 1  # 180 and 240 only
    assert evaluate('count(state >= 2 and state != 3, "1h")', history, now=240) == 1


def test_count_of_a_bare_point_counts_its_true_samples() -> None:
    history = history_of("alarm_button", [(0, 0), (10, 1), (20, 1), (30, 0)])
    assert evaluate('count(alarm_button, "1m")', history, now=30) == 2


def test_rises_counts_off_to_on_transitions_such_as_pump_starts() -> None:
    history = history_of("running", [(0, 0), (60, 1), (120, 0), (180, 1), (240, 1), (300, 0)])
    assert evaluate('rises(running, "1h")', history, now=300) == 2
    # the value in force when the window opened (1 at t=180) is no start
    assert evaluate('rises(running, "100s")', history, now=300) == 0


def test_every_documented_function_is_exercised_here() -> None:
    tested = {"abs", "min", "max", "round", "avg", "min_over", "max_over", "delta", "rate",
              "changed", "age", "stale", "count", "rises"}
    assert set(FUNCTIONS) == tested


# -- history retention ----------------------------------------------------------------


def test_history_keeps_one_sample_older_than_the_window_and_drops_the_rest() -> None:
    history = History({"p": 60})
    for ts in range(0, 301, 10):
        history.record("p", ts, ts)
    samples = history.get("p").samples
    assert samples[0].ts == 240 and samples[-1].ts == 300
    assert evaluate('delta(p, "1m")', history, now=300) == 60


def test_history_keeps_two_samples_when_only_the_latest_is_read_so_changed_works() -> None:
    history = History()
    for ts in range(5):
        history.record("p", ts, ts)
    assert [sample.ts for sample in history.get("p").samples] == [3, 4]


def test_age_survives_the_last_good_sample_being_trimmed_away() -> None:
    history = History()
    history.record("p", 0, 1.0)
    for ts in range(10, 100, 10):
        history.record("p", ts, None, Quality.COMM_FAILURE)
    assert evaluate("age(p)", history, now=100) == 100.0


def test_a_late_sample_is_ignored_rather_than_breaking_the_order() -> None:
    history = history_of("p", [(10, 1.0), (5, 9.0)])
    assert [sample.ts for sample in history.get("p").samples] == [10]


# -- points and windows ---------------------------------------------------------------


def test_points_and_windows_tell_the_engine_what_to_index_and_how_much_to_keep() -> None:
    expression = compile_expression(
        'avg(p, "5m") < 0.2 and max_over(p, "1h") > 0 and delta(kwh, "10m") > 3 '
        'and running == 1 and count(state == 3, "2h") > 4 and stale(q, "30s")'
    )
    assert expression.points == {"p", "kwh", "running", "state", "q"}
    assert expression.windows == {"p": 3600.0, "kwh": 600.0, "running": 0.0,
                                  "state": 7200.0, "q": 30.0}


def test_a_window_may_be_given_in_seconds_as_a_number() -> None:
    assert compile_expression("avg(p, 90) > 1").windows == {"p": 90.0}


def test_history_need_keeps_what_the_expression_asks_for() -> None:
    expression = compile_expression('avg(p, "1m") > 0')
    history = History()
    history.need(expression.windows)
    for ts in range(0, 301, 10):
        history.record("p", ts, 1.0)
    assert history.get("p").samples[0].ts == 240


def test_an_expression_compiled_once_evaluates_against_many_contexts() -> None:
    expression = compile_expression("p > 1")
    assert [expression.holds(Context(history_of("p", [(0, v)]), 0)) for v in (0, 2)] == [
        False, True,
    ]


# -- refusals ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "col", "says"),
    [
        ("p.__class__", 3, "no attribute access"),
        ("p.__class__.__bases__", 12, "no attribute access"),
        ("__import__('os')", 1, "unknown function '__import__'"),
        ("open('/etc/passwd')", 1, "unknown function 'open'"),
        ("eval('1')", 1, "'eval' is Python"),
        ("lambda: 1", 1, "no lambda functions"),
        ("[x for x in p]", 1, "subscripts and lists are not part"),
        ("p for p in q", 3, "no comprehensions"),
        ("p[0]", 2, "subscripts and lists are not part"),
        ("import os", 1, "no imports"),
        ("p if q else 1", 3, "no conditional expressions"),
        ("p is None", 3, "'is' is Python"),
        ("p ** 2", 4, "no power operator"),
        ("p = 1", 3, "write == to compare"),
        ("p && q", 3, "write and"),
        ("{'a': 1}", 1, "dicts and sets"),
        ("p.real.imag", 7, "no attribute access"),
        ("f'{p}'", 2, "follows a complete value"),
    ],
)
def test_anything_beyond_the_language_is_refused_with_a_reason(text: str, col: int, says: str) -> None:
    error = error_of(text)
    assert says in error.message
    assert error.col == col


def test_the_package_never_calls_eval_exec_or_compile() -> None:
    package = Path(__file__).resolve().parents[2] / "rules" / "expression"
    modules = sorted(package.glob("*.py"))
    assert {"compiler.py", "functions.py", "parser.py"} <= {m.name for m in modules}
    for module in modules:
        for node in ast.walk(ast.parse(module.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id not in {"eval", "exec", "compile", "__import__"}, module


# -- errors that say what is wrong and what is right ---------------------------------


def test_an_unknown_function_suggests_the_closest_one() -> None:
    error = error_of('avrage(p, "5m") > 1')
    assert "unknown function 'avrage'; did you mean" in error.message
    assert "avg" in error_of('mean(p, "5m")').message


def test_an_unknown_point_suggests_known_points() -> None:
    error = error_of("outlet_presure < 0.2", known_points={"outlet_pressure", "running"})
    assert error.message == "unknown point 'outlet_presure'; did you mean outlet_pressure?"


def test_known_points_apply_inside_function_calls_too() -> None:
    error = error_of('avg(runing, "5m")', known_points={"running"})
    assert error.col == 5 and "did you mean running?" in error.message


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ('avg(p)', 'avg() got 1 argument; write avg(point, "5m")'),
        ('abs(p, q)', "abs() got 2 arguments; write abs(x)"),
        ('min(p)', 'min_over(point, "5m")'),
        ('changed()', "changed() got 0 arguments"),
    ],
)
def test_a_wrong_number_of_arguments_shows_how_to_call_the_function(text: str, says: str) -> None:
    assert says in error_of(text).message


def test_a_window_that_is_not_a_duration_is_refused_at_its_column() -> None:
    error = error_of('avg(p, "5 minutes") > 1')
    assert error.col == 8
    assert "'5 minutes' is not a window" in error.message and '"5m"' in error.message


def test_a_window_must_be_written_out_not_computed() -> None:
    assert "fixed duration" in error_of('avg(p, q) > 1').message
    assert 'quoted duration such as "5m"' in error_of("avg(p, 5m) > 1").message
    assert "is not a window" in error_of('stale(p, "0s")').message


def test_a_window_function_needs_a_point_not_an_expression() -> None:
    error = error_of('avg(p * 2, "5m")')
    assert error.col == 5 and "first argument is a point's name" in error.message


def test_count_needs_a_condition_on_exactly_one_point_without_nested_history() -> None:
    assert "names exactly one point (it names 2)" in error_of('count(p > q, "1h")').message
    assert "cannot be used inside count()" in error_of('count(avg(p, "1m") > 1, "1h")').message


@pytest.mark.parametrize(
    ("text", "col", "says"),
    [
        ("p > ", 4, "ends too early; expected a value"),  # just after the last character
        ("(p > 1", 7, "expected ')'"),
        ("p > 1)", 6, "closes no '('"),
        ("p q", 3, "an operator is missing"),
        ("p < < 1", 5, "expected a value"),
        ("", 1, "the expression is empty"),
        ('p == "open', 6, "a string is closed"),
    ],
)
def test_a_syntax_error_names_the_column_inside_the_expression(text: str, col: int, says: str) -> None:
    error = error_of(text)
    assert error.col == col and says in error.message
    assert str(error).startswith(f"column {col}: ")


def test_with_a_source_the_error_names_file_line_and_column_of_the_bad_character() -> None:
    # rules[0].when's value starts at column 11 of line 14; 'avrg' is 9 characters in
    source = Source("config/profiles/pump.yaml", 14, 11, ("rules", 0, "when"))
    error = error_of('running and avrg(p, "5m") < 1', source=source)
    assert str(error).startswith("config/profiles/pump.yaml:14:23 rules[0].when: unknown function")


def test_a_plain_file_line_column_tuple_is_accepted_as_the_source() -> None:
    error = error_of("p >", source=("site/rules.yaml", 3, 9))
    assert str(error) == ("site/rules.yaml:3:12: the expression ends too early; expected a "
                          "value (a number, a point, a function call or '(')")


def test_an_error_on_a_later_line_of_a_block_scalar_moves_down_the_file() -> None:
    error = error_of("p > 1 and\n  q >", source=("a.yaml", 10, 9))
    assert error.file_position() == (11, 6)


def test_an_expression_error_becomes_a_config_issue_for_the_loader() -> None:
    error = error_of("p > > 1", source=Source("pump.yaml", 4, 7, ("rules", 1, "when")))
    issue = error.to_issue()
    assert (issue.line, issue.col, issue.path) == (4, 11, ("rules", 1, "when"))
    assert str(ConfigError([issue])).endswith(f"pump.yaml:4:11 rules[1].when: {error.message}")


def test_the_pointer_puts_a_caret_under_the_bad_character() -> None:
    assert error_of("p >= 1 & q").pointer() == "p >= 1 & q\n       ^"


def test_the_engines_history_keeps_only_the_points_a_rule_reads():
    history = History(needed_only=True)
    history.need({"pump_1.outlet_pressure": 300.0, "pump_1.running": 0.0})
    history.record_batch(Batch("pump_1", 100.0, ("outlet_pressure", "running", "current"),
                               [0.42, 1, 12.5]))
    assert history.get("pump_1.outlet_pressure").latest().value == 0.42
    assert history.get("pump_1.running").latest().value == 1  # read as a value, no window
    assert history.get("pump_1.current") is None  # read by no rule: not kept
