"""`python -m jobqueue.runtime.mpi ...` is `jobqueue mpi ...` (and dask-mpi's command)."""

import sys

from .command import main

sys.exit(main())
