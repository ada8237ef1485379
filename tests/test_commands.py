"""External commands: argv lists, timeouts, errors naming command, exit code and stderr."""

import asyncio
import sys
import time

import pytest

from jobqueue.commands import CommandError, CommandTimeout, run, run_async


def test_failure_names_command_exit_code_and_stderr():
    with pytest.raises(CommandError) as err:
        run([sys.executable, "-c", "import sys; sys.stderr.write('boom: bad partition\\n'); sys.exit(3)"])
    exc = err.value
    assert exc.returncode == 3
    assert "boom: bad partition" in str(exc) and "exit code 3" in str(exc)
    assert sys.executable in str(exc)


def test_missing_program_says_not_on_path():
    with pytest.raises(CommandError, match="no-such-sbatch` was not found on PATH"):
        run(["no-such-sbatch", "--parsable"])


def test_timeout_is_enforced():
    t0 = time.monotonic()
    with pytest.raises(CommandTimeout, match="did not finish within 0.5 s"):
        run(["sleep", "30"], timeout=0.5)
    assert time.monotonic() - t0 < 5


def test_no_shell_involved(tmp_path):
    marker = tmp_path / "x"
    out = run(["echo", f"$(touch {marker})"])
    assert out.stdout.strip() == f"$(touch {marker})" and not marker.exists()


def test_input_and_check_false():
    res = run(["cat"], input="hello")
    assert res.stdout == "hello"
    res = run(["false"], check=False)
    assert res.returncode == 1


def test_run_async_does_not_block_the_loop():
    async def main():
        ticks = 0

        async def ticker():
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        t = asyncio.create_task(ticker())
        await run_async(["sleep", "0.5"])
        t.cancel()
        return ticks

    assert asyncio.run(main()) > 10
