"""The one way the CLI tests run a command: in process, with its exit code checked."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from click.testing import CliRunner, Result

from watch_pipeline.cli.main import cli

Run = Callable[..., Result]


@pytest.fixture
def run(dagster_home: str) -> Run:
    """``run(*args, input=None, code=0)``: invoke ``watch-pipeline ARGS`` and check its exit code.

    The command runs against a fresh SQLite catalog under the test's DAGSTER_HOME; an exception
    it does not turn into an exit code fails the test with its traceback.
    """
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None, code: int = 0) -> Result:
        result = runner.invoke(cli, list(args), input=input, catch_exceptions=False)
        assert result.exit_code == code, (result.output, result.stderr)
        return result

    return invoke
