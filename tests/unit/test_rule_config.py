"""Rules in the configuration: every mistake in a profile rule, a site rule file or the
sla:/rules: blocks of site.yaml is a located config error, reported with the rest by one
`gateway check`, at the exact character of an expression."""

from __future__ import annotations

from pathlib import Path

import pytest
from config_site_files import SITE, errors_of, write_site

from gateway.config.loader import load_site
from rules.compile import compile_rules

REPO = Path(__file__).resolve().parents[2]

# Lines 1-6; a test's rules: start on line 7, its first rule's `- id:` on line 8.
PUMP = """\
name: booster pump
system: water_supply
points:
  outlet_pressure: {address: 2, type: uint16, scale: 0.001}
  running: {address: 3, type: uint16}
  run_hours: {address: 4, type: uint32}
"""

DEVICES = """\
devices:
  - {id: pump_1, profile: pump, connection: {host: 127.0.0.1}}
  - {id: pump_2, profile: pump, connection: {host: 127.0.0.2}}
"""

ALARM = "    alarm: {severity: major}\n"


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Work in tmp_path, so messages show paths relative to it as an engineer would see them."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def pump_site(root: Path, rules: str = "", *, site_rules: str | None = None,
              **files: str | None) -> Path:
    """A site of two pumps: `rules` is appended to the profile (its rules: and
    maintenance:), `site_rules` is rules/site.yaml, and `files` replace or add files
    (`devices__b1.yaml` for devices/b1.yaml)."""
    layout: dict[str, str | None] = {
        "profiles/pump.yaml": PUMP + rules,
        "devices/b1.yaml": DEVICES,
        "rules/site.yaml": site_rules,
        **{name.replace("__", "/"): text for name, text in files.items()},
    }
    return write_site(root, layout)


# --- expressions at their character -------------------------------------------------


def test_an_unknown_function_is_reported_at_its_first_character_in_a_plain_scalar(in_tmp: Path) -> None:
    site = pump_site(in_tmp, 'rules:\n  - id: low\n    when: avrg(outlet_pressure, "5m") < 0.2\n' + ALARM)

    [error] = errors_of(site)
    assert error.startswith("profiles/pump.yaml:9:11 rules[0].when: unknown function 'avrg'; "
                            "did you mean avg?")


def test_a_quoted_expression_is_located_one_past_its_quote(in_tmp: Path) -> None:
    site = pump_site(in_tmp, "rules:\n  - id: low\n    when: \"running == 1 and outlet_presure < 0.2\"\n"
                     + ALARM)

    # the quote is column 11, `r` of running 12, `o` of outlet_presure 29
    assert errors_of(site) == [
        "profiles/pump.yaml:9:29 rules[0].when: unknown point 'outlet_presure'; "
        "did you mean outlet_pressure?"
    ]


def test_a_single_quoted_expression_counts_a_doubled_quote_as_one_character(in_tmp: Path) -> None:
    site = pump_site(in_tmp, "rules:\n  - id: low\n    when: 'running == ''on'' and outlet_presure < 0.2'\n"
                     + ALARM)

    [error] = errors_of(site)
    # `''on''` is four characters in the file, two in the value: `o` of outlet_presure is
    # column 34, not the 32 of counting the value's characters from the quote
    assert error.startswith("profiles/pump.yaml:9:34 rules[0].when: unknown point 'outlet_presure'")


def test_a_folded_block_expression_is_located_on_its_content_lines(in_tmp: Path) -> None:
    site = pump_site(in_tmp, """\
rules:
  - id: low
    when: >-
      avrg(outlet_pressure, "5m") < 0.2
        and running == 1
""" + ALARM)

    [error] = errors_of(site)
    assert error.startswith("profiles/pump.yaml:10:7 rules[0].when: unknown function 'avrg'")


def test_an_error_on_a_later_line_of_a_block_is_at_its_character_there(in_tmp: Path) -> None:
    folded = pump_site(in_tmp / "folded", """\
rules:
  - id: low
    when: >-
      outlet_pressure < 0.2
        and runing == 1
""" + ALARM)
    literal = pump_site(in_tmp / "literal", """\
rules:
  - id: low
    when: |
      outlet_pressure < 0.2
      and runing == 1
""" + ALARM)

    assert errors_of(folded) == [
        "folded/profiles/pump.yaml:11:13 rules[0].when: unknown point 'runing'; did you mean running?"
    ]
    assert errors_of(literal) == [
        "literal/profiles/pump.yaml:11:11 rules[0].when: unknown point 'runing'; did you mean running?"
    ]


def test_a_plain_expression_continued_on_the_next_line_is_located_there(in_tmp: Path) -> None:
    site = pump_site(in_tmp, "rules:\n  - id: low\n    when: outlet_pressure < 0.2 and\n"
                     "      runing == 1\n" + ALARM)

    assert errors_of(site) == [
        "profiles/pump.yaml:10:7 rules[0].when: unknown point 'runing'; did you mean running?"
    ]


def test_an_expression_that_ends_too_early_points_just_past_its_end(in_tmp: Path) -> None:
    site = pump_site(in_tmp, "rules:\n  - id: low\n    when: \"outlet_pressure <\"\n" + ALARM)

    [error] = errors_of(site)
    assert error.startswith("profiles/pump.yaml:9:29 rules[0].when: the expression ends too early")


# --- gateway check ------------------------------------------------------------------


BROKEN = 'rules:\n  - id: low\n    when: avrg(outlet_pressure, "5m") < 0.2\n' + ALARM


def test_gateway_check_rejects_a_malformed_expression_with_its_position(
    in_tmp: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    from gateway.cli import main

    site = pump_site(in_tmp, BROKEN)

    with pytest.raises(SystemExit) as exited:
        main(["check", "-c", str(site)])

    assert exited.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("profiles/pump.yaml:9:11 rules[0].when: unknown function 'avrg'; "
                             "did you mean avg?")
    assert err[-1] == "1 error in the configuration"


def test_the_gateway_command_rejects_a_malformed_expression_with_its_position(in_tmp: Path) -> None:
    import subprocess

    site = pump_site(in_tmp, BROKEN)

    done = subprocess.run([str(REPO / ".venv" / "bin" / "gateway"), "check", "-c", str(site)],
                          cwd=in_tmp, capture_output=True, text=True, timeout=60)

    assert done.returncode == 2, done.stdout + done.stderr
    assert "profiles/pump.yaml:9:11 rules[0].when: unknown function 'avrg'" in done.stderr
    assert "configuration OK" not in done.stdout


def test_gateway_check_counts_rules_derived_points_alarms_tickets_and_plans(
    in_tmp: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    from gateway.cli import main

    site = pump_site(in_tmp, """\
rules:
  - id: starts_per_hour
    derive: rises(running, "1h")
  - id: low
    when: outlet_pressure < 0.2
    alarm: {severity: major}
    ticket: {category: water}
  - id: trip
    when: running == 0
    alarm: {severity: minor}
maintenance:
  - {task: service, counter: run_hours, every: 2000}
""", site_rules="""\
rules:
  - id: both_stopped
    when: pump_1.running == 0 and pump_2.running == 0
    ticket: {category: water}
maintenance:
  - {task: tank_cleaning, asset: water_tank_1, every_months: 6}
""")

    assert main(["check", "-c", str(site)]) == 0

    out = capsys.readouterr().out
    assert "profiles: 1  rules in profiles: 3" in out
    assert "site rule files: 1  site rules: 1" in out
    assert "rules running on devices: 7  derived points: 2  alarms: 4  raising tickets: 3" in out
    assert "maintenance tasks: 2 written, 3 planned: 2 for 2 devices, 1 for 1 assets" in out
    assert out.rstrip().endswith("configuration OK")


def test_one_check_reports_the_mistakes_of_every_file_at_once(in_tmp: Path) -> None:
    site = pump_site(in_tmp, BROKEN, site_rules="rules:\n  - id: r\n    when: pump_3.running == 1\n"
                     "    alarm: {severity: minor}\n",
                     **{"site.yaml": SITE + "sla:\n  trapped_area: town\n"})

    errors = errors_of(site)

    assert [e.split(" ", 1)[0] for e in errors] == [
        "site.yaml:5:17", "profiles/pump.yaml:9:11", "rules/site.yaml:3:11",
    ]
    assert errors[2] == ("rules/site.yaml:3:11 rules[0].when: unknown point 'pump_3.running'; "
                         "did you mean pump_2.running or pump_1.running or pump_2.run_hours?")


# --- what a rule may name ---------------------------------------------------------


def test_an_unknown_point_suggests_the_closest(in_tmp: Path) -> None:
    site = pump_site(in_tmp, "rules:\n  - id: low\n    when: outlet_presure < 0.2\n" + ALARM)

    assert errors_of(site) == [
        "profiles/pump.yaml:9:11 rules[0].when: unknown point 'outlet_presure'; "
        "did you mean outlet_pressure?"
    ]


def test_a_site_rule_naming_an_unknown_device_is_refused(in_tmp: Path) -> None:
    site = pump_site(in_tmp, site_rules="""\
rules:
  - id: both_stopped
    device: pump_3
    when: pump_1.running == 0
    alarm: {severity: major}
""")

    assert errors_of(site) == [
        "rules/site.yaml:3:13 rules[0].device: 'pump_3' is not a known device; did you mean pump_2?"
    ]


def test_a_site_rule_without_device_belongs_to_the_first_device_it_names(in_tmp: Path) -> None:
    site = pump_site(in_tmp, site_rules="""\
rules:
  - id: both_stopped
    when: pump_2.running == 0 and pump_1.running == 0
    alarm: {severity: major, message: "{running} {outlet_pressure:.2f}"}
""")

    config = load_site(site)
    [rule] = compile_rules(config).rules

    assert config.rule_files[0].source == str(in_tmp / "rules" / "site.yaml")
    assert (rule.id, rule.device, rule.scope) == ("pump_2.both_stopped", "pump_2", None)
    assert rule.inputs == {"pump_1.running", "pump_2.running"}
    assert rule.template_points == {"running", "outlet_pressure"}


def test_a_site_rule_naming_no_device_at_all_is_refused(in_tmp: Path) -> None:
    site = pump_site(in_tmp, site_rules="rules:\n  - id: always\n    when: 1 == 1\n"
                     "    alarm: {severity: minor}\n")

    assert errors_of(site) == [
        "rules/site.yaml:2:5 rules[0]: a site rule names device.point in its condition, or says "
        "which device its alarm belongs to with device:"
    ]


def test_a_duplicate_rule_id_is_refused_in_a_profile_and_on_a_device(in_tmp: Path) -> None:
    site = pump_site(in_tmp, "rules:\n  - id: low\n    when: running == 0\n" + ALARM
                     + "  - id: low\n    when: outlet_pressure < 0.2\n" + ALARM,
                     site_rules="rules:\n  - id: low\n    when: pump_1.running == 0\n"
                     "    alarm: {severity: minor}\n")

    assert errors_of(site) == [
        "profiles/pump.yaml:11:9 rules[1].id: rule id 'low' is already used by rules[0]; "
        "rule ids are unique within a profile",
        "rules/site.yaml:2:9 rules[0].id: device pump_1 already has a rule 'low' "
        "(rules[0] of profile pump); give this one another id",
    ]


def test_a_derived_point_may_not_take_the_name_of_a_point(in_tmp: Path) -> None:
    site = pump_site(in_tmp, "rules:\n  - id: running\n    derive: outlet_pressure > 0.1\n",
                     site_rules="rules:\n  - id: run_hours\n    device: pump_1\n"
                     "    derive: pump_1.running == 1\n    accumulate: hours\n")

    assert errors_of(site) == [
        "profiles/pump.yaml:8:9 rules[0].id: 'running' is already a point of this profile; "
        "a derived point needs its own name",
        "rules/site.yaml:2:9 rules[0].id: 'run_hours' is already a point of pump_1; "
        "a derived point needs its own name",
    ]


def test_a_point_derived_in_a_site_rule_file_is_read_by_site_rules_and_plans(in_tmp: Path) -> None:
    site = pump_site(in_tmp, site_rules="""\
rules:
  - id: both_stopped
    when: pump_1.pumps_running == 0
    alarm: {severity: major, message: "{pumps_running} running"}
  - id: pumps_running
    device: pump_1
    derive: pump_1.running + pump_2.running
  - id: duty_hours
    derive: pump_1.running == 1
    accumulate: hours
maintenance:
  - {task: duty_service, device: pump_1, counter: duty_hours, every: 500}
""")

    compiled = compile_rules(load_site(site))

    assert sorted(r.id for r in compiled.rules) == [
        "pump_1.both_stopped", "pump_1.duty_hours", "pump_1.pumps_running"]
    assert [(p.device, p.task.task) for p in compiled.plans] == [("pump_1", "duty_service")]


def test_an_unknown_maintenance_counter_is_refused(in_tmp: Path) -> None:
    site = pump_site(in_tmp, "maintenance:\n  - {task: service, counter: run_hour, every: 2000}\n",
                     site_rules="maintenance:\n  - {task: seal, device: pump_1, counter: strats, every: 5}\n")

    assert errors_of(site) == [
        "profiles/pump.yaml:8:30 maintenance[0].counter: 'run_hour' is not a point of this profile; "
        "did you mean run_hours?",
        "rules/site.yaml:2:43 maintenance[0].counter: 'strats' is not a point of pump_1",
    ]


def test_a_task_for_an_asset_may_not_count_usage(in_tmp: Path) -> None:
    site = pump_site(in_tmp, site_rules="""\
maintenance:
  - task: septic_check
    asset: septic_tank_1
    counter: run_hours
    every: 500
""")

    assert errors_of(site) == [
        "rules/site.yaml:4:14 maintenance[0].counter: an asset the gateway does not poll has no "
        "counters; use every_days: or every_months:"
    ]


def test_a_message_naming_an_unknown_point_is_refused_at_that_name(in_tmp: Path) -> None:
    site = pump_site(in_tmp, "rules:\n  - id: low\n    when: outlet_pressure < 0.2\n"
                     "    alarm:\n      severity: major\n"
                     "      message: \"出水压力低 {outlet_presure:.2f} MPa\"\n")

    # the quote is column 16; 出水压力低 and a space are 6 characters, `{` column 23
    assert errors_of(site) == [
        "profiles/pump.yaml:12:24 rules[0].alarm.message: message names unknown point "
        "'outlet_presure'; a message uses its device's points; did you mean outlet_pressure?"
    ]


def test_a_message_that_is_not_a_safe_template_is_refused(in_tmp: Path) -> None:
    site = pump_site(in_tmp, "rules:\n  - id: low\n    when: outlet_pressure < 0.2\n"
                     "    alarm: {severity: major, message: \"{outlet_pressure.__class__}\"}\n")

    [error] = errors_of(site)
    assert error.startswith("profiles/pump.yaml:10:40 rules[0].alarm.message: message template")
    assert "must be a plain point name" in error


# --- what a rule may say ------------------------------------------------------------


def test_a_rule_with_both_when_and_derive_is_refused_at_derive(in_tmp: Path) -> None:
    site = pump_site(in_tmp, "rules:\n  - id: low\n    when: running == 0\n"
                     "    derive: running\n" + ALARM)

    assert errors_of(site) == [
        "profiles/pump.yaml:10:5 rules[0].derive: a rule has either when: (a condition that "
        "raises an alarm or opens a ticket) or derive: (an expression that defines a new point), "
        "not both"
    ]


def test_a_when_rule_without_alarm_or_ticket_is_refused_at_the_rule(in_tmp: Path) -> None:
    site = pump_site(in_tmp, "rules:\n  - id: low\n    when: running == 0\n")

    assert errors_of(site) == [
        "profiles/pump.yaml:8:5 rules[0]: a when: rule needs alarm: or ticket: (or both); "
        "otherwise it would do nothing"
    ]


def test_a_duration_in_words_is_refused_at_for(in_tmp: Path) -> None:
    site = pump_site(in_tmp, "rules:\n  - id: low\n    when: running == 0\n"
                     "    for: 5 minutes\n" + ALARM)

    assert errors_of(site) == [
        "profiles/pump.yaml:10:10 rules[0].for: '5 minutes' is not a duration; "
        "expected e.g. 5s, 500ms, 2m or 1h"
    ]


def test_a_delay_on_a_derived_point_is_refused_as_for(in_tmp: Path) -> None:
    site = pump_site(in_tmp, "rules:\n  - id: flow\n    derive: running * 2\n    for: 5m\n")

    assert errors_of(site) == [
        "profiles/pump.yaml:10:5 rules[0].for: for: belongs to when: rules; a derive: rule has no delays"
    ]


def test_an_unknown_rule_key_lists_for_not_on_delay(in_tmp: Path) -> None:
    site = pump_site(in_tmp, "rules:\n  - id: low\n    when: running == 0\n    fro: 30s\n" + ALARM)

    [error] = errors_of(site)
    assert error.startswith("profiles/pump.yaml:10:5 rules[0].fro: 'fro' is not a known key here; "
                            "allowed keys: id, name, description, device, when, clear, for, off_delay,")
    assert "on_delay" not in error
    assert error.endswith("did you mean for?")


def test_a_bad_severity_and_an_unknown_alarm_key_say_what_is_allowed(in_tmp: Path) -> None:
    site = pump_site(in_tmp, "rules:\n  - id: low\n    when: running == 0\n"
                     "    alarm:\n      severity: critcal\n      mesage: 停泵\n")

    assert errors_of(site) == [
        "profiles/pump.yaml:11:17 rules[0].alarm.severity: 'critcal' is not a severity; "
        "expected one of critical, major, minor, warning; did you mean critical?",
        "profiles/pump.yaml:12:7 rules[0].alarm.mesage: 'mesage' is not a known key here; "
        "allowed keys: severity, message, chatter; did you mean message?",
    ]


def test_an_alarm_without_severity_names_the_severities(in_tmp: Path) -> None:
    site = pump_site(in_tmp, "rules:\n  - id: low\n    when: running == 0\n"
                     "    alarm:\n      message: 停泵\n")

    assert errors_of(site) == [
        "profiles/pump.yaml:10:5 rules[0].alarm: missing required key 'severity' "
        "(critical, major, minor or warning)"
    ]


def test_a_task_with_two_cycles_is_refused_at_the_second(in_tmp: Path) -> None:
    site = pump_site(in_tmp, "maintenance:\n  - task: service\n    every_days: 15\n    every_months: 1\n")

    assert errors_of(site) == [
        "profiles/pump.yaml:10:5 maintenance[0].every_months: a maintenance task has exactly one "
        "of every_days:, every_months:, or counter: with every:"
    ]


# --- site.yaml sla: and rules: --------------------------------------------------------


def test_an_unknown_trapped_area_lists_the_areas(in_tmp: Path) -> None:
    site = pump_site(in_tmp, **{"site.yaml": SITE + "sla:\n  trapped_area: town\n"})

    assert errors_of(site) == [
        "site.yaml:5:17 sla.trapped_area: 'town' is not an area for the trapped-passenger clock; "
        "expected one of city, rural"
    ]


def test_sla_and_rules_blocks_load_with_their_durations(in_tmp: Path) -> None:
    site = pump_site(in_tmp, **{"site.yaml": SITE + (
        "sla:\n  trapped_area: rural\n  arrival_urgent: 10m\n  repair_within: {doors: 1d}\n"
        "rules:\n  tick: 500ms\n  flood_threshold: 20\n")})

    config = load_site(site)

    assert (config.sla.trapped_area, config.sla.arrival_urgent) == ("rural", 600.0)
    assert config.sla.repair_within == {"doors": 86400.0}
    assert (config.rules.tick, config.rules.flood_threshold) == (0.5, 20)


def test_a_list_of_rules_in_site_yaml_points_at_the_rule_files(in_tmp: Path) -> None:
    site = pump_site(in_tmp, **{"site.yaml": SITE + "rules:\n  - id: low\n"})

    [error] = errors_of(site)
    assert error.startswith("site.yaml:4:1 rules: site rules are written in rule files "
                            "(include.rules, default rules/*.yaml)")


# --- rule files ---------------------------------------------------------------------


def test_a_rule_file_with_an_unknown_top_level_key_says_which_keys_it_holds(in_tmp: Path) -> None:
    site = pump_site(in_tmp, site_rules="rule:\n  - id: low\n")

    assert errors_of(site) == [
        "rules/site.yaml:1:1 rule: 'rule' is not a known key here; allowed keys: rules, "
        "maintenance; did you mean rules?"
    ]


def test_a_rule_file_sets_no_source(in_tmp: Path) -> None:
    site = pump_site(in_tmp, site_rules="source: x\nrules: []\n")

    assert errors_of(site) == ["rules/site.yaml:1:1 source: 'source' is set by the loader; remove it"]


def test_an_include_rules_pattern_written_that_matches_nothing_is_an_error(in_tmp: Path) -> None:
    site = pump_site(in_tmp, **{"site.yaml": SITE + "include:\n  rules: [rule/*.yaml]\n"})

    [error] = errors_of(site)
    assert error.startswith("site.yaml:5:11 include.rules[0]: 'rule/*.yaml' matches no files")


def test_a_site_without_rule_files_loads(tmp_path: Path) -> None:
    config = load_site(pump_site(tmp_path))

    assert config.rule_files == []


def test_rule_files_are_found_by_include_rules(tmp_path: Path) -> None:
    site = pump_site(tmp_path, **{
        "site.yaml": SITE + "include:\n  rules: [linkage/**/*.yaml]\n",
        "linkage__fire.yaml": "rules:\n  - {id: r, when: pump_1.running == 0, alarm: {severity: minor}}\n",
    })

    config = load_site(site)

    assert [f.source for f in config.rule_files] == [str(tmp_path / "linkage" / "fire.yaml")]
    assert [r.id for r in config.rule_files[0].rules] == ["r"]


def test_site_rules_are_not_checked_against_a_site_missing_a_broken_device(in_tmp: Path) -> None:
    site = pump_site(in_tmp, "rules:\n  - id: low\n    when: outlet_presure < 0.2\n" + ALARM,
                     site_rules="rules:\n  - id: r\n    when: pump_2.running == 0\n"
                     "    alarm: {severity: minor}\n",
                     **{"devices__b1.yaml": DEVICES.replace("host: 127.0.0.2", "port: 502")})

    errors = errors_of(site)

    assert [e.split(" ", 1)[0] for e in errors] == ["profiles/pump.yaml:9:11", "devices/b1.yaml:3:33"]
    assert "pump_2" not in " ".join(errors)


def test_a_rule_of_a_disabled_device_is_checked_but_does_not_run(in_tmp: Path) -> None:
    site = pump_site(in_tmp, "rules:\n  - id: low\n    when: outlet_pressure < 0.2\n" + ALARM,
                     site_rules="rules:\n  - id: r\n    when: pump_2.running == 0\n"
                     "    alarm: {severity: minor}\n",
                     **{"devices__b1.yaml": DEVICES.replace("127.0.0.2}", "127.0.0.2}, enabled: false")})

    compiled = compile_rules(load_site(site))

    assert compiled.issues == []
    assert [r.id for r in compiled.rules] == ["pump_1.low"]


# --- the example site -----------------------------------------------------------------


def test_the_example_site_loads_with_its_rules_and_rule_files() -> None:
    config = load_site(REPO / "config" / "site.yaml")
    compiled = compile_rules(config)

    assert compiled.issues == []
    assert sum(len(p.rules) for p in config.profiles.values()) > 0
    assert compiled.rules
    assert all(f.source is not None for f in config.rule_files)
