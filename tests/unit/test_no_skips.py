"""A skip fails the run: a missing service must never turn CI green with tests unrun."""

from __future__ import annotations

pytest_plugins = ["pytester"]


def test_a_skipped_test_fails_and_an_expected_failure_does_not(pytester) -> None:
    pytester.makeconftest("from pytest_no_skips import *\n")
    pytester.makepyfile(
        """
        import pytest

        def test_skipped_inside():
            pytest.skip("mosquitto not installed")

        @pytest.mark.skipif(True, reason="needs socat")
        def test_skipped_by_mark():
            pass

        @pytest.mark.xfail(reason="known")
        def test_expected_failure():
            assert False

        def test_fine():
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:asyncio")
    # a skip in the test fails it; one from a mark fails its setup (an error): both fail the run
    result.assert_outcomes(passed=1, failed=1, errors=1, xfailed=1)
    result.stdout.fnmatch_lines(["*a missing service must fail the run*needs socat*"])
    assert result.ret != 0


def test_a_module_that_skips_itself_stops_the_run(pytester) -> None:
    pytester.makeconftest("from pytest_no_skips import *\n")
    pytester.makepyfile(
        """
        import pytest
        pytest.skip("no service", allow_module_level=True)

        def test_never_collected():
            pass
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider", "-p", "no:asyncio")
    result.assert_outcomes(errors=1)
    assert result.ret != 0


def test_this_suite_runs_with_the_plugin_whatever_is_collected(pytestconfig) -> None:
    """Loaded from pyproject.toml (`-p pytest_no_skips`), not by a conftest a test path or
    --noconftest could leave out."""
    plugin = pytestconfig.pluginmanager.get_plugin("pytest_no_skips")
    assert plugin is not None
    hooks = pytestconfig.hook.pytest_runtest_makereport.get_hookimpls()
    assert any(h.plugin is plugin for h in hooks)
    assert pytestconfig.getini("xfail_strict") is True


def test_a_missing_service_binary_is_an_error_naming_its_package(monkeypatch) -> None:
    import services

    monkeypatch.setitem(services._PACKAGES, "/nonexistent/mosquitto", "mosquitto")
    try:
        services.require("/nonexistent/mosquitto")
    except RuntimeError as error:
        assert "apt-get install" in str(error) and "'mosquitto'" in str(error)
    else:
        raise AssertionError("a missing binary must raise, not return")
