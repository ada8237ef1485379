# jobqueue's, not dask-mpi's: never imported (../../shim.py answers for dask_mpi);
# it marks this directory a package so that pytest names the tests dask_mpi.tests.*
