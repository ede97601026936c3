"""Checks a file written by `lockstep trace`: valid Chrome Trace Event JSON,
complete spans that nest on each track, async begin/end pairs that match,
and, with --attempts and --killed-rank, the run's story: every attempt on
the launcher's track, the failure naming the killed rank, the restart, and
each rank's steps, collectives, checkpoint phases and restore.

Usage: check_trace.py TRACE.json [--ranks N] [--attempts N] [--killed-rank R]
Prints one line per check; exits 1 when any failed.
"""
import argparse
import collections
import json
import sys

failures = 0


def check(what, condition):
    global failures
    print(("ok:   " if condition else "FAIL: ") + what)
    if not condition:
        failures += 1


def nests(spans):
    """Spans of one track, as (start, end): every two either nest or are
    disjoint (a tolerance of a nanosecond for the float microseconds)."""
    stack = []
    for start, end in sorted(spans, key=lambda s: (s[0], -s[1])):
        while stack and stack[-1] <= start + 1e-3:
            stack.pop()
        if stack and end > stack[-1] + 1e-3:
            return False
        stack.append(end)
    return True


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("trace")
    parser.add_argument("--ranks", type=int, default=0)
    parser.add_argument("--attempts", type=int, default=0)
    parser.add_argument("--killed-rank", type=int, default=-1)
    args = parser.parse_args()
    with open(args.trace) as f:
        document = json.load(f)
    events = document.get("traceEvents")
    check("traceEvents is a list", isinstance(events, list))
    phases = {"X", "i", "b", "e", "M"}
    well_formed = all(isinstance(e, dict) and e.get("ph") in phases and isinstance(e.get("pid"), int)
                      and isinstance(e.get("tid"), int) and isinstance(e.get("name"), str)
                      and (e["ph"] == "M" or isinstance(e.get("ts"), (int, float)) and e["ts"] >= 0)
                      and (e["ph"] != "X" or e.get("dur", -1) >= 0)
                      for e in events)
    check(f"all {len(events)} events have a known phase, pid, tid, name and a time", well_formed)

    tracks = collections.defaultdict(list)
    for e in events:
        if e["ph"] == "X":
            tracks[(e["pid"], e["tid"])].append((e["ts"], e["ts"] + e["dur"]))
    bad = [t for t, spans in tracks.items() if not nests(spans)]
    check(f"complete spans nest on each of {len(tracks)} tracks (bad: {bad[:3]})", not bad)

    opened = collections.Counter()
    begins = {}
    paired = True
    for e in sorted((e for e in events if e["ph"] in "be"), key=lambda e: (e["ts"], e["ph"] == "b")):
        key = (e["pid"], e.get("cat"), e.get("id"), e["name"])
        if e["ph"] == "b":
            opened[key] += 1
            begins[key] = e["ts"]
        else:
            paired = paired and opened[key] > 0
            opened[key] -= 1
    check("every async begin has its end", paired and not any(opened.values()))

    names = collections.defaultdict(set)  # pid -> names
    thread_names = collections.defaultdict(set)
    for e in events:
        if e["ph"] == "M" and e["name"] == "thread_name":
            thread_names[e["pid"]].add(e["args"]["name"])
        elif e["ph"] != "M":
            names[e["pid"]].add(e["name"])
    launcher = names[0]
    if args.attempts:
        for attempt in range(args.attempts):
            check(f"the launcher's track has attempt {attempt}",
                  any(n.startswith(f"attempt {attempt}: ") for n in launcher))
        check("the last attempt succeeded", f"attempt {args.attempts - 1}: success" in launcher)
        check("the restart is on the launcher's track",
              any(n.startswith("restarting (1 of") for n in launcher))
        check("checkpoints are on the launcher's track",
              any(n.startswith("checkpoint step ") for n in launcher))
    if args.killed_rank >= 0:
        check(f"the failure names rank {args.killed_rank} and its signal",
              any(n.startswith(f"rank {args.killed_rank} on ") and "killed by signal 9" in n
                  for n in launcher))
    for rank in range(args.ranks):
        mine = names[rank + 1]
        check(f"rank {rank} has steps", any(n.startswith("step ") for n in mine))
        check(f"rank {rank} has collectives", any(n.startswith("allreduce") for n in mine))
        check(f"rank {rank} has GradSync buckets", any(n.startswith("bucket ") for n in mine))
        check(f"rank {rank} has checkpoint phases",
              {"save", "stage", "write", "commit"} <= {n.split(" ")[0] for n in mine})
        for attempt in range(args.attempts):
            check(f"rank {rank} has a main thread in attempt {attempt}",
                  any(n == f"main, attempt {attempt}" for n in thread_names[rank + 1]))
        if args.attempts > 1:
            check(f"rank {rank} restored after the restart",
                  "restore" in mine and any(n.startswith("restored step ") for n in mine))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
