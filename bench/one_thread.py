"""Import first: pins the numeric libraries to one thread before numpy loads them.

The detection benchmarks (``bench_detect``, ``bench_mmod``, ``bench_detector_choice``) time one
photo at a time on one thread, and OpenBLAS/MKL/OpenMP read these variables once, when numpy
(or torch) is first imported, so this module must come before them. Variables already set
win. It also names the data sets the benchmarks read (``../shared/datasets``).
"""

from __future__ import annotations

import os
from pathlib import Path

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
