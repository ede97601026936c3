#!/usr/bin/env bash
# Fails when a tracked C++ file is not formatted as .clang-format says.
# Fix with: make format
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files '*.h' '*.cc' '*.cu' '*.cuh' 2>/dev/null || true)
if [ ${#files[@]} -eq 0 ]; then
  mapfile -t files < <(find core collectives checkpoint launcher examples bench tests \
                         \( -name '*.h' -o -name '*.cc' -o -name '*.cu' \) 2>/dev/null)
fi
bad=()
for file in "${files[@]}"; do
  [ -f "$file" ] || continue
  clang-format --dry-run -Werror "$file" >/dev/null 2>&1 || bad+=("$file")
done
if [ ${#bad[@]} -gt 0 ]; then
  echo "not clang-formatted (run 'make format'):"
  printf '  %s\n' "${bad[@]}"
  exit 1
fi
echo "format: ${#files[@]} files clean"
