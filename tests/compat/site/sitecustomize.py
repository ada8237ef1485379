# the compatibility shim in every Python process the upstream tests start (see ../aliases.py)
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import aliases  # noqa: E402

aliases.install()
