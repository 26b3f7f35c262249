"""The built-in sample (sample.py: an AEF-layout Zarr store over Iowa and its fields) that
`aef-zonal sample` writes and `make demo`, the tests and the benchmarks run the job on; the job
never imports it."""
