#!/usr/bin/env bash

#PBS -N dask-worker
#PBS -l select=2:ncpus=4:mem=8GB:mpiprocs=4
#PBS -l walltime=01:00:00

# the exit code reaches the log even where the batch system forgets it (PBS without job history)
trap 'echo "[jobqueue] job script exited with code $?" >&2' EXIT

# the nannies start their workers from one forkserver that has imported distributed once,
# instead of a fresh interpreter per worker (2.5x faster for 4 per job); yours wins if set
export DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD="${DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD:-forkserver}"

# when this job will be ended, so its workers retire (and hand their data over) in time
export JOBQUEUE_JOB_END=$(( $(date +%s) + 3600 ))
export JOBQUEUE_RETIRE_MARGIN=300 JOBQUEUE_RETIRE_STAGGER=60

/usr/bin/python3 -m distributed.cli.dask_worker tcp://10.0.0.1:8786 --name w-0 --nthreads 1 --memory-limit 1.86GiB --nworkers 4 --nanny --death-timeout 60 --preload jobqueue.runtime.worker --preload-nanny jobqueue.runtime.worker
