#!/usr/bin/env bash

#SBATCH -J dask-worker
#SBATCH --cpus-per-task=8
#SBATCH -t 02:00:00
#SBATCH --mem-per-cpu=2G
#SBATCH -n 10

# the exit code reaches the log even where the batch system forgets it (PBS without job history)
trap 'echo "[jobqueue] job script exited with code $?" >&2' EXIT

# the worker command starts lean (jobqueue/runtime/boot: no garbage collection during its
# imports, libyaml for dask's config) and idles quietly (jobqueue/runtime/idle.py: profiler,
# memory checks and ticks slow down while no task runs); lean_start=False for dask's defaults
export JOBQUEUE_LEAN_START=1 JOBQUEUE_QUIET_IDLE=1 PYTHONPATH=/site-packages/jobqueue/runtime/boot${PYTHONPATH:+:$PYTHONPATH}
[ -n "${DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL+x}" ] || export DASK_DISTRIBUTED__ADMIN__TICK__INTERVAL=200ms

# when this job will be ended, so its workers retire (and hand their data over) in time
export JOBQUEUE_JOB_END=$(( $(date +%s) + 7200 ))
export JOBQUEUE_RETIRE_MARGIN=300 JOBQUEUE_RETIRE_STAGGER=60

/usr/bin/python3 -m distributed.cli.dask_worker tcp://10.0.0.1:8786 --name w-0 --nthreads 4 --memory-limit 7.45GiB --no-nanny --death-timeout 60 --preload jobqueue.runtime.worker --no-dashboard
