#!/usr/bin/env condor_submit

MY.DaskWorkerName = "htcondor--$F(MY.JobId)--"
batch_name = w-0
RequestCpus = MY.DaskWorkerCores
RequestMemory = floor(MY.DaskWorkerMemory / 1048576)
RequestDisk = floor(MY.DaskWorkerDisk / 1024)
MY.JobId = "$(ClusterId).$(ProcId)"
MY.DaskWorkerCores = 4
MY.DaskWorkerMemory = 8000000000
MY.DaskWorkerDisk = 1000000000
LogDirectory = /scratch/logs
Output = $(LogDirectory)/worker-$F(MY.JobId).out
Error = $(LogDirectory)/worker-$F(MY.JobId).err
Log = $(LogDirectory)/worker-$(ClusterId).log
Stream_Output = True
Stream_Error = True
request_gpus = 2
allowed_job_duration = 3600

Arguments = "-c 'trap ''echo ""[jobqueue] job script exited with code $?"" >&2'' EXIT; [ -n ""${DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD+x}"" ] || export DASK_DISTRIBUTED__WORKER__MULTIPROCESSING_METHOD=fork; [ -n ""${MALLOC_TRIM_THRESHOLD_+x}"" ] || export MALLOC_TRIM_THRESHOLD_=65536; [ -n ""${OMP_NUM_THREADS+x}"" ] || export OMP_NUM_THREADS=1; [ -n ""${MKL_NUM_THREADS+x}"" ] || export MKL_NUM_THREADS=1; [ -n ""${OPENBLAS_NUM_THREADS+x}"" ] || export OPENBLAS_NUM_THREADS=1; [ -n ""${PYTHONHASHSEED+x}"" ] || export PYTHONHASHSEED=6640; export JOBQUEUE_GPUS=2 JOBQUEUE_GPUS_PER_WORKER=1; JOBQUEUE_JOB_END=`date +%s`; JOBQUEUE_JOB_END=`expr $JOBQUEUE_JOB_END + 3600`; export JOBQUEUE_JOB_END JOBQUEUE_RETIRE_MARGIN=300 JOBQUEUE_RETIRE_STAGGER=60; apptainer exec --bind /home/u/.jobqueue/tls,/scratch/logs --nv /images/dask.sif python3 -m distributed.cli.dask_worker tls://10.0.0.1:8786 --name w-0 --nthreads 2 --memory-limit 3.73GiB --nworkers 2 --nanny --death-timeout 60 --preload jobqueue.runtime.worker --preload-nanny jobqueue.runtime.worker --no-dashboard --resources GPU=1 --tls-ca-file /home/u/.jobqueue/tls/ca.pem --tls-cert /home/u/.jobqueue/tls/cert.pem --tls-key /home/u/.jobqueue/tls/key.pem'"
Executable = /bin/bash
transfer_executable = False

Queue
