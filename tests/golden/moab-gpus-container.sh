#!/usr/bin/env bash

#PBS -N gpu-worker
#PBS -l select=1:ncpus=4:mem=7630MB:ngpus=2
#PBS -l walltime=01:00:00
#PBS -e /scratch/logs/
#PBS -o /scratch/logs/

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

# each of the 2 worker process(es) sees its own 1 of the job's 2 GPU(s) (jobqueue.runtime.worker)
export JOBQUEUE_GPUS=2 JOBQUEUE_GPUS_PER_WORKER=1

# when this job will be ended, so its workers retire (and hand their data over) in time
export JOBQUEUE_JOB_END=$(( $(date +%s) + 3600 ))
export JOBQUEUE_RETIRE_MARGIN=300 JOBQUEUE_RETIRE_STAGGER=60

apptainer exec --bind /home/u/.jobqueue/tls,/scratch/logs --nv /images/dask.sif python3 -m distributed.cli.dask_worker tls://10.0.0.1:8786 --name w-0 --nthreads 2 --memory-limit 3.73GiB --nworkers 2 --nanny --death-timeout 60 --preload jobqueue.runtime.worker --preload-nanny jobqueue.runtime.worker --no-dashboard --resources GPU=1 --tls-ca-file /home/u/.jobqueue/tls/ca.pem --tls-cert /home/u/.jobqueue/tls/cert.pem --tls-key /home/u/.jobqueue/tls/key.pem
