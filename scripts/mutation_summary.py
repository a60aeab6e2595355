"""Summarise `mutmut results --all true` (read on stdin): mutants, killed and survived per module."""

import re
import sys
from collections import Counter, defaultdict

LINE = re.compile(r"^\s*(?P<name>[\w.]+)\.x[_ǁ]\S*__mutmut_\d+: (?P<status>.+)$")


def main():
    counts, survivors = defaultdict(Counter), []
    for line in sys.stdin:
        match = LINE.match(line)
        if not match:
            continue
        module, status = match["name"], match["status"].strip()
        if status == "not checked":  # left out of a narrowed run (scripts/mutate GLOB)
            continue
        counts[module][status] += 1
        if status != "killed":
            survivors.append(line.strip())
    print(f"{'module':32} {'mutants':>8} {'killed':>7} {'survived':>9} {'other':>6} {'killed %':>9}")
    for module in sorted(counts):
        c = counts[module]
        total, killed, survived = sum(c.values()), c["killed"], c["survived"]
        print(f"{module:32} {total:8} {killed:7} {survived:9} {total - killed - survived:6} {100 * killed / total:8.1f}%")
    print("\nnot killed:")
    print("\n".join(survivors) or "(none)")


if __name__ == "__main__":
    main()
