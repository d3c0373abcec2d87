"""Start-up time of `hf-iqa --help` / `hf-iqa list` / `import hf_iqa` against `python -c "import torch"`, same run.

Each command runs `--repeats` times in a fresh interpreter (best and median wall time); the ratio to
`import torch` is what to compare across machines. Run from the repository root: `python bench/bench_startup.py`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

COMMANDS = {
    'python -c "import torch"': "import torch",
    'python -c "import transformers; transformers.AutoModel"': "import transformers; transformers.AutoModel",
    "hf-iqa --help": "from hf_iqa.cli import main; main(['--help'])",
    "hf-iqa score --help": "from hf_iqa.cli import main\ntry:\n    main(['score', '--help'])\nexcept SystemExit:\n    pass",
    "hf-iqa list": "from hf_iqa.cli import main; main(['list'])",
    'python -c "import hf_iqa"': "import hf_iqa",
    "import hf_iqa; from transformers import AutoModel": "import hf_iqa; from transformers import AutoModel",
}


def run_once(code: str) -> float:
    """Wall seconds of a fresh interpreter running `code`."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}; {args.repeats} runs each (the first warms the file cache)")
    results = {}
    for label, code in COMMANDS.items():
        run_once(code)  # warm the page cache
        walls = [run_once(code) for _ in range(args.repeats)]
        results[label] = walls
    torch_best = min(results['python -c "import torch"'])
    print(f"{'command':<55} {'best s':>7} {'median s':>9} {'best / import torch':>20}")
    for label, walls in results.items():
        print(f"{label:<55} {min(walls):7.2f} {statistics.median(walls):9.2f} {min(walls) / torch_best:20.2f}")


if __name__ == "__main__":
    main()
