"""`python -m job ...`: the container's entrypoint."""

import sys

from job import stopping

stopping.install_at_start()  # Before anything slow: as PID 1 the job would otherwise ignore SIGTERM.

from job.cli import main  # noqa: E402

exit_code = main()
if stopping.requested() or "tensorflow" in sys.modules:
    # Everything is written, flushed and closed (or saved, after a stop): skip Python's teardown of
    # TensorFlow, which took 2.6 s after the last line of a tiny run here (AMD EPYC, 2 cores).
    stopping.exit_at_once(exit_code)
raise SystemExit(exit_code)
