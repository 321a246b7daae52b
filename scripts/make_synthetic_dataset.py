"""Write a synthetic CT-like phantom dataset in the Decathlon layout.

python scripts/make_synthetic_dataset.py OUTPUT_DIR [--training 8] [--test 2] [--shape 48 48 32] [--seed 0]
"""

from __future__ import annotations

import argparse

from gdlseg.data.synthetic import write_dataset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("output_dir")
    parser.add_argument("--training", type=int, default=8)
    parser.add_argument("--test", type=int, default=2)
    parser.add_argument("--shape", type=int, nargs=3, default=[48, 48, 32])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    path = write_dataset(args.output_dir, args.training, args.test, tuple(args.shape), args.seed)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
