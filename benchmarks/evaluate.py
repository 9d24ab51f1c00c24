"""Learn better online than the batch peers? The evaluation runner.

    PYTHONPATH=. python benchmarks/evaluate.py            # full: 3 seeds, tuned peers
    PYTHONPATH=. python benchmarks/evaluate.py --quick    # about a minute, one seed
    PYTHONPATH=. python benchmarks/evaluate.py --readme README.md  # and the README's table

Writes benchmarks/results/evaluation.{json,md} and hr_over_stream.png. Needs the
`bench` extra (implicit, lightfm); a peer whose library is missing is left out.
"""

from __future__ import annotations

import os

# One BLAS/OpenMP thread per process, set before numpy is imported anywhere.
for _name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_name, "1")

import argparse  # noqa: E402
from pathlib import Path  # noqa: E402

from benchmarks.evaluation.suite import run_evaluation  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed, short test, no tuning")
    parser.add_argument("--seeds", type=int, default=None, help="number of seeds (default 3)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--no-diagnostics", action="store_true", help="skip the what-if runs")
    parser.add_argument("--out", type=Path, default=RESULTS, help=f"default {RESULTS}")
    parser.add_argument(
        "--models",
        default="mf",
        help="our --model values to evaluate, comma-separated (default mf; e.g. mf,history)",
    )
    parser.add_argument(
        "--readme", type=Path, default=None, help="also rewrite this README's quality section"
    )
    args = parser.parse_args()
    report = run_evaluation(
        args.out,
        args.quick,
        args.seeds,
        args.workers,
        diagnostics=not args.no_diagnostics,
        models=tuple(args.models.split(",")),
    )
    if args.readme is not None:
        from benchmarks.evaluation.readme import quality_section, update_readme

        update_readme(args.readme, quality_section(report))


if __name__ == "__main__":
    main()
