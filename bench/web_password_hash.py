"""How long one web console login's scrypt takes here, for the default and nearby parameters.

The credentials file's default (``webusers`` rule 3) should cost a few tens of milliseconds:
slow for offline guessing, fast enough that a login (run in a worker thread) is not felt.
Prints one line per parameter set: N, R, P, memory, and the median of ``--runs`` verifications.

    python bench/web_password_hash.py [--runs 9]
"""

from __future__ import annotations

import argparse
import statistics
import time

from pyprocserv._core.webusers import DEFAULT_N, DEFAULT_P, DEFAULT_R, hash_password, verify_password


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    for n in (DEFAULT_N // 2, DEFAULT_N, DEFAULT_N * 2):
        stored = hash_password("correct horse", n=n, r=DEFAULT_R, p=DEFAULT_P)
        times = []
        for _ in range(args.runs):
            start = time.perf_counter()
            verify_password(stored, "correct horse")
            times.append(time.perf_counter() - start)
        default = "  (default)" if n == DEFAULT_N else ""
        print(f"N=2**{n.bit_length() - 1} R={DEFAULT_R} P={DEFAULT_P} {128 * n * DEFAULT_R >> 20} MiB: "
              f"median {statistics.median(times) * 1000:.1f} ms over {args.runs}{default}")


if __name__ == "__main__":
    main()
