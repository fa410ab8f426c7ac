#!/usr/bin/env python
"""DINO training throughput and peak memory, hf_ssl vs a hand-written loop: ``vision_throughput.py --method dino``.

Kept so that ``python benchmarks/dino_throughput.py [flags]`` from older notes still runs; the benchmark itself (every
vision method, one harness) is ``benchmarks/vision_throughput.py``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vision_throughput import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["--method", "dino", *sys.argv[1:]]))
