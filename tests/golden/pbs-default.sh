#!/usr/bin/env bash

#PBS -N dask-worker
#PBS -l select=1:ncpus=1:mem=954MB
#PBS -l walltime=00:30:00

# the exit code reaches the log even where the batch system forgets it (PBS without job history)
trap 'echo "[jobqueue] job script exited with code $?" >&2' EXIT

# each nanny forks its worker from its own process, which has imported distributed already:
# no interpreter start or imports per worker. What a fresh worker process would read at
# start-up is set here; a value already in your environment (or set in the prologue) wins.
[ -n "${DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD+x}" ] || export DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD=fork
[ -n "${MALLOC_TRIM_THRESHOLD_+x}" ] || export MALLOC_TRIM_THRESHOLD_=65536
[ -n "${OMP_NUM_THREADS+x}" ] || export OMP_NUM_THREADS=1
[ -n "${MKL_NUM_THREADS+x}" ] || export MKL_NUM_THREADS=1
[ -n "${OPENBLAS_NUM_THREADS+x}" ] || export OPENBLAS_NUM_THREADS=1
[ -n "${PYTHONHASHSEED+x}" ] || export PYTHONHASHSEED=6640

# the worker command starts lean (jobqueue/runtime/boot: no garbage collection during its
# imports, libyaml for dask's config) and idles quietly (jobqueue/runtime/idle.py: profiler,
# memory checks and ticks slow down while no task runs); lean_start=False for dask's defaults
export JOBQUEUE_LEAN_START=1 JOBQUEUE_QUIET_IDLE=1 PYTHONPATH=/site-packages/jobqueue/runtime/boot${PYTHONPATH:+:$PYTHONPATH}
[ -n "${DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL+x}" ] || export DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL=200ms

# when this job will be ended, so its workers retire (and hand their data over) in time
export JOBQUEUE_JOB_END=$(( $(date +%s) + 1800 ))
export JOBQUEUE_RETIRE_MARGIN=180 JOBQUEUE_RETIRE_STAGGER=60

/usr/bin/python3 -m distributed.cli.dask_worker tcp://10.0.0.1:8786 --name w-0 --nthreads 1 --memory-limit 0.93GiB --nanny --death-timeout 60 --preload jobqueue.runtime.worker --preload-nanny jobqueue.runtime.worker --no-dashboard
