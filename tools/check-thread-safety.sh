#!/usr/bin/env bash
# Clang's thread-safety analysis over lockstep's own sources: every member
# declared LOCKSTEP_GUARDED_BY(m) must be touched only with m held, and every
# LOCKSTEP_REQUIRES / LOCKSTEP_EXCLUDES contract must hold at its callers.
# It parses the translation units of core, collectives, checkpoint and the
# launcher that see an annotation, with the include paths and definitions
# of an existing build (compile_commands.json), generating no code. Exit 1 with clang's diagnostics when the analysis finds a fault.
# Usage: tools/check-thread-safety.sh [build dir]   (default: build)
set -euo pipefail
cd "$(dirname "$0")/.."
build=${1:-build}
clangxx=$(command -v clang++ || command -v clang++-14 || true)
if [ -z "$clangxx" ]; then
  echo "check-thread-safety: clang++ is not installed; run tools/install-deps.sh" >&2
  exit 2
fi
if [ ! -f "$build/compile_commands.json" ]; then
  echo "check-thread-safety: $build/compile_commands.json is missing; configure first (make build)" >&2
  exit 2
fi

# One line per translation unit that can see an annotation (it includes
# lockstep/mutex.h, or a header of ours that does): the file, then the flags
# clang needs from the build's command (include paths, definitions, the
# language standard).
python3 - "$build/compile_commands.json" "$PWD" >"$build/thread-safety.units" <<'EOF'
import json, os, re, shlex, sys
entries = json.load(open(sys.argv[1]))
root = sys.argv[2] + "/"
layers = ("core", "collectives", "checkpoint", "launcher")
include = re.compile(r'#include\s+[<"]([^>"]+)[>"]')

def includes(path):
    with open(path, errors="replace") as f:
        return {os.path.basename(m.group(1)) for m in include.finditer(f.read())}

# Headers that carry annotations, found to a fixed point over our own tree.
headers = {}
for layer in layers:
    for folder, _, names in os.walk(root + layer):
        for name in names:
            if name.endswith(".h"):
                headers.setdefault(name, []).append(os.path.join(folder, name))
annotated = {"mutex.h"}
changed = True
while changed:
    changed = False
    for name, paths in headers.items():
        if name not in annotated and any(includes(p) & annotated for p in paths):
            annotated.add(name)
            changed = True

keep = ("-I", "-isystem", "-D", "-std=")
for entry in entries:
    path = entry["file"]
    if not path.startswith(root) or not path.endswith(".cc"):
        continue
    if path[len(root):].split("/")[0] not in layers or not includes(path) & annotated:
        continue
    args = entry.get("arguments") or shlex.split(entry["command"])
    flags, i = [], 0
    while i < len(args):
        a = args[i]
        if a in ("-I", "-isystem", "-D"):
            flags += [a, args[i + 1]]
            i += 2
            continue
        if a.startswith(keep):
            flags.append(a.replace("-std=gnu++", "-std=c++"))
        i += 1
    print(shlex.join([path] + flags))
EOF

units=$(wc -l <"$build/thread-safety.units")
echo "check-thread-safety: analysing $units translation units with $clangxx"
export clangxx
# Only the analysis speaks (-Wno-everything silences every other warning); each fault is an
# error, and xargs fails when any unit does.
# shellcheck disable=SC2016
if ! xargs -P "$(nproc)" -L 1 sh -c \
  '"$clangxx" -fsyntax-only -Wno-everything -Wthread-safety -Werror=thread-safety "$@"' sh \
  <"$build/thread-safety.units"; then
  echo "check-thread-safety: FAILED (see the diagnostics above)" >&2
  exit 1
fi
echo "check-thread-safety: no fault in $units translation units"
