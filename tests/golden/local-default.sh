#!/usr/bin/env bash

# the exit code reaches the log even where the batch system forgets it (PBS without job history)
trap 'echo "[jobqueue] job script exited with code $?" >&2' EXIT

/usr/bin/python3 -m distributed.cli.dask_worker tcp://10.0.0.1:8786 --name w-0 --nthreads 2 --memory-limit 3.73GiB --nanny --death-timeout 60 --preload jobqueue.runtime.worker --preload-nanny jobqueue.runtime.worker
