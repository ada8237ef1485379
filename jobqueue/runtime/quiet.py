"""Dask preload for worker processes started by a nanny in `jobqueue mpi`.

distributed's worker process logs "Worker process died unexpectedly" with a traceback
from its stop-queue thread when the process is ending anyway (the queue's pipe closes
under it during a clean shutdown). That line is all it reports; a worker that really
dies is reported by its nanny, in the parent process. So this preload drops just that
record, and a clean run prints no traceback.
"""

import logging


class StopQueueRace(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return record.funcName != "watch_stop_q"


_nanny_logger = logging.getLogger("distributed.nanny")
if not any(isinstance(f, StopQueueRace) for f in _nanny_logger.filters):
    _nanny_logger.addFilter(StopQueueRace())
