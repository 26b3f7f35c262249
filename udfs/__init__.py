"""Pure numpy/numba kernels of aef-zonal: grid arithmetic, pixel membership, chunk reduction."""
