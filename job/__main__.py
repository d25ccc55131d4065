"""`python -m job ...`: the container's entrypoint."""

from job.cli import main

raise SystemExit(main())
