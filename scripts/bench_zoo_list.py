"""How long `zoobench zoo list` takes: the first call (builds every model once, caches the
catalogue) and the calls after it (read the cache), each a fresh process as a user runs it.

The cache lives in $ZOOBENCH_CACHE (zoo-index.json, keyed by the zoobench, Keras and Keras Tuner
versions, a hash of zoo/**/*.py and the installed plugins); this script points ZOOBENCH_CACHE at
an empty temporary folder, so the first call is always cold.

    python scripts/bench_zoo_list.py --repeats 3
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time


def timed(env: dict[str, str], args: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "benchmark.cli", *args], env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"zoobench {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="warm calls after the cold one")
    args = parser.parse_args()
    cache = tempfile.mkdtemp(prefix="zoobench-bench-cache-")
    env = {**os.environ, "ZOOBENCH_CACHE": cache, "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        cold = timed(env, ["zoo", "list"])
        warm = [timed(env, ["zoo", "list"]) for _ in range(args.repeats)]
        refresh = timed(env, ["zoo", "list", "--refresh"])
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    print(f"zoobench zoo list, each call a fresh process (cpus: {os.cpu_count()})")
    print(f"  first call, empty cache:   {cold:6.2f} s")
    print(
        f"  later calls (cache read):  {min(warm):6.2f} s best, {max(warm):6.2f} s worst "
        f"of {len(warm)}"
    )
    print(f"  --refresh (rebuild):       {refresh:6.2f} s")


if __name__ == "__main__":
    main()
