#!/usr/bin/env bash

/usr/bin/python3 -m distributed.cli.dask_worker tcp://10.0.0.1:8786 --name w-0 --nthreads 2 --memory-limit 3.73GiB --nanny --death-timeout 60 --preload jobqueue.runtime.worker --preload-nanny jobqueue.runtime.worker
