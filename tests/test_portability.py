"""The golden and parity tests again on the portable ATen kernels (``ATEN_CPU_CAPABILITY=default``).

Machines of this project's kind differ in vector instructions (AVX2 here, AVX-512 elsewhere), so a
test that expects bit-identical floats can pass here and fail on a user's first ``make test``.
Running the tests that pin encoder output (golden packets, ONNX edge against torch edge) on the
non-vectorised kernels, in a fresh process, makes such a fragile expectation fail on our own
machines first. (The thread counts 1 and 2 are covered inside those tests.)
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TESTS = ["tests/test_golden_packets.py",
         "tests/test_runtime_client.py::test_client_packets_are_the_torch_packets"]


def test_golden_and_parity_tests_pass_on_portable_kernels() -> None:
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default", "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-m", "pytest", "-o", "addopts=", "-q", "-p",
                           "no:cacheprovider", *TESTS],
                          check=False, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "failed" not in done.stdout
