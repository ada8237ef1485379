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


def test_command_threads_are_reused_and_run_side_by_side(monkeypatch):
    """Calls run in kept threads (starting a thread per status poll blocked the scheduler's loop
    until the thread was scheduled); concurrent calls still get a thread each."""
    import threading

    from jobqueue.commands import in_thread

    async def main():
        await in_thread(threading.get_ident)
        started = []
        start = threading.Thread.start
        monkeypatch.setattr(threading.Thread, "start", lambda self: (started.append(self.name), start(self)))
        idents = [await in_thread(threading.get_ident) for _ in range(20)]
        assert started == [], "sequential calls start no thread"
        monkeypatch.undo()
        barrier = threading.Barrier(4, timeout=30)  # broken unless all four run at once

        def meet():
            barrier.wait()
            return threading.get_ident()

        together = await asyncio.gather(*(in_thread(meet) for _ in range(4)))
        return idents, together

    idents, together = asyncio.run(main())
    assert threading.get_ident() not in idents
    assert len(set(together)) == 4


def test_command_threads_work_in_a_forked_child():
    import os

    from jobqueue.commands import in_thread

    assert asyncio.run(in_thread(lambda: 7)) == 7  # the parent has a thread now
    pid = os.fork()
    if pid == 0:  # the child has none of it: a call must start its own, not wait for a ghost
        try:
            ok = asyncio.run(asyncio.wait_for(in_thread(lambda: 8), 20)) == 8
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
