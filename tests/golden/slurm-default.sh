#!/usr/bin/env bash

#SBATCH -J dask-worker
#SBATCH -n 1
#SBATCH --cpus-per-task=1
#SBATCH --mem=954M
#SBATCH -t 00:30:00

/usr/bin/python3 -m distributed.cli.dask_worker tcp://10.0.0.1:8786 --name w-0 --nthreads 1 --memory-limit 0.93GiB --nanny --death-timeout 60
