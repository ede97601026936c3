# The checks that the shell tests share. Source it; it defines functions and
# the counter `failures` only. A test ends with `finish`, which prints PASS or
# the number of failed checks and exits accordingly.
# shellcheck shell=bash

failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
ok() { echo "ok:   $*"; }
check() { # check <what> <shell condition>
  if eval "$2"; then ok "$1"; else fail "$1"; fi
}
expect_rc() { # expect_rc <wanted> <got> <what>
  if [ "$2" -eq "$1" ]; then ok "$3 (exit $2)"; else fail "$3: exit $2, wanted $1"; fi
}
expect_grep() { # expect_grep <extended regex> <file> <what>
  if grep -qE -- "$1" "$2"; then ok "$3"; else
    fail "$3: /$1/ not in $2"
    sed 's/^/    | /' "$2" | tail -40
  fi
}
expect_no_grep() { # expect_no_grep <extended regex> <file> <what>
  if grep -qE -- "$1" "$2"; then
    fail "$3: /$1/ is in $2"
    grep -E -- "$1" "$2" | sed 's/^/    | /' | head -5
  else ok "$3"; fi
}
expect_same_file() { # expect_same_file <a> <b> <what>
  if cmp -s "$1" "$2"; then ok "$3"; else fail "$3: $1 and $2 differ"; fi
}
summary_field() { # summary_field <json file> <python expression on s>
  python3 -c "import json,sys; s=json.load(open(sys.argv[1])); print($2)" "$1" 2>/dev/null || true
}
finish() {
  if [ "$failures" -eq 0 ]; then
    echo PASS
    exit 0
  fi
  echo "$failures check(s) failed"
  exit 1
}
