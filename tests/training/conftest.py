"""Training tests run single-threaded: on the shared 2-core machine two OpenMP threads are ~10× slower."""

from __future__ import annotations

import torch

torch.set_num_threads(1)
