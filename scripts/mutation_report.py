"""Per-module mutation score from mutmut's results in mutants/ (``scripts/mutation.sh`` prints it).

``python scripts/mutation_report.py [PATTERN...]``: the mutants whose names match a pattern (all without
one), per module: killed, survived, other (not checked, no tests, timeout) and the score killed / judged;
then the survivors by name (``mutmut show NAME`` prints a survivor's change).
"""
from __future__ import annotations

import fnmatch
import json
import sys
from collections import Counter
from pathlib import Path

KILLED, SURVIVED = {1, 3}, {0}


def main(patterns: list[str]) -> int:
    rows, survivors = {}, []
    for meta in sorted(Path("mutants/pyrawan").rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        module = ".".join(meta.relative_to("mutants").with_suffix("").with_suffix("").parts)
        picked = {k: v for k, v in codes.items() if not patterns or any(fnmatch.fnmatch(k, p) for p in patterns)}
        if not picked:
            continue
        count = Counter("killed" if v in KILLED else "survived" if v in SURVIVED else "other" for v in picked.values())
        rows[module] = count
        survivors += sorted((k for k, v in picked.items() if v in SURVIVED), key=lambda k: (len(k), k))
    print(f"{'module':36} {'killed':>7} {'survived':>9} {'other':>6} {'total':>6} {'score':>7}")
    for module, c in rows.items():
        judged = c["killed"] + c["survived"]
        score = f"{100 * c['killed'] / judged:.1f}%" if judged else "-"
        print(f"{module:36} {c['killed']:7} {c['survived']:9} {c['other']:6} {sum(c.values()):6} {score:>7}")
    if survivors:
        print("\nsurvivors:\n  " + "\n  ".join(survivors))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
