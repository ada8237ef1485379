# jobqueue's, not dask-jobqueue's: never imported (../../shim.py answers for dask_jobqueue);
# it marks this directory a package so that pytest names the tests dask_jobqueue.tests.*
