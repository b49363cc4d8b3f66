"""Run every ``benchmarks/bench_*.py`` module's ``main()``: ``make bench``.

Each module measures lemmata against its peer in one process and prints
ratios. Pass module stems to run a subset: ``python benchmarks/run.py bench_pgd``.
"""

import importlib.util
import sys
from pathlib import Path

from threadpoolctl import threadpool_limits


def main(selected: list[str]) -> None:
    here = Path(__file__).parent
    for path in sorted(here.glob("bench_*.py")):
        if selected and path.stem not in selected:
            continue
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        print(f"== {path.stem} ==", flush=True)
        with threadpool_limits(limits=1):
            module.main()
        print(flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
