"""roadnode: the software of a roadside traffic-enforcement camera node."""

import os

# numpy's BLAS thread pool fights the detector's interpreter threads for the board's cores
# (measured: a 4x4 matrix inverse in the tracker took 3.4 ms; detector p50 108 -> 47 ms with
# one BLAS thread, docs/BENCHMARKS.md). The node's matrices are tiny: one thread, unless the
# environment says otherwise. Set before anything imports numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

__version__ = "0.1.0"
