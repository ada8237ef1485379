"""Owner-only files: journals, credentials, scheduler files, the MPI rendezvous."""

from __future__ import annotations

import os
import tempfile


def write_private(path: str, text: str) -> str:
    """Write ``text`` to ``path`` as a 0600 file, atomically.

    The text goes to a temporary file in the same directory (mkstemp creates it 0600),
    which then replaces ``path``: readers never see half a file, and a file that existed
    with wider permissions is replaced by a private one."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), prefix=".jobqueue-")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path
