"""Compares two weight files of the example trainer (float32, back to back).

Usage: compare_weights.py A B START MAX_RATIO

Passes when the distance between A and B is at most MAX_RATIO times the
distance from START to B: two runs that trained the same model differ far
less than training moved it.
"""

import array
import math
import sys


def load(path):
    values = array.array("f")
    with open(path, "rb") as file:
        values.frombytes(file.read())
    return values


def distance(x, y):
    return math.sqrt(sum((a - b) ** 2 for a, b in zip(x, y)))


def main():
    a, b, start = (load(path) for path in sys.argv[1:4])
    max_ratio = float(sys.argv[4])
    if not len(a) == len(b) == len(start):
        print(f"different sizes: {len(a)}, {len(b)} and {len(start)} values")
        return 1
    apart = distance(a, b)
    moved = distance(start, b)
    ratio = apart / moved if moved > 0 else math.inf
    print(f"|A - B| = {apart:.3e}, |B - START| = {moved:.3e}, ratio {ratio:.3e} (at most {max_ratio})")
    return 0 if ratio <= max_ratio else 1


if __name__ == "__main__":
    sys.exit(main())
