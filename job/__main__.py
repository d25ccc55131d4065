"""`python -m job ...`: the container's entrypoint."""

from job import stopping

stopping.install_at_start()  # Before anything slow: as PID 1 the job would otherwise ignore SIGTERM.

from job.cli import main  # noqa: E402

exit_code = main()
if stopping.requested():
    stopping.exit_at_once(exit_code)  # Asked to stop: everything is saved and flushed; skip the teardown.
raise SystemExit(exit_code)
