"""Executor side of aef-zonal: what Spark's Python workers run.

spark.py holds the functions Spark calls (mapInArrow bodies, pandas UDFs); they use the pure
kernels (grid, quantisation, pixels, partials, statistics, finish, quantiles, pca_model:
numpy/numba/shapely, no I/O), the store reader (store.py: zarr, obstore) and the Arrow schemas
(schemas.py).
"""
