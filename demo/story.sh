# How the demonstrations tell their story (sourced by demo/run.sh and demo/ha.sh): headings,
# numbered steps with their reason, ok/FAILED lines, and two helpers for background processes.
# The sourcing script keeps BG_PIDS, the PIDs it started, and ends them on exit.

if [ -t 1 ]; then
  BOLD=$'\e[1m' DIM=$'\e[2m' GREEN=$'\e[32m' RED=$'\e[31m' RESET=$'\e[0m'
else
  BOLD='' DIM='' GREEN='' RED='' RESET=''
fi
case "${LC_ALL:-${LC_CTYPE:-${LANG:-}}}" in
  *UTF-8* | *utf8* | *UTF8* | *utf-8*) YES='✔' NO='✘' ;;
  *) YES='ok:' NO='FAILED:' ;;
esac
STEP=0

say() { printf '%s\n' "$*"; }
title() { printf '\n%s== %s ==%s\n' "$BOLD" "$*" "$RESET"; }
step() { # step TITLE WHY
  STEP=$((STEP + 1))
  printf '\n%s%d. %s%s\n' "$BOLD" "$STEP" "$1" "$RESET"
  printf '   %swhy: %s%s\n' "$DIM" "$2" "$RESET"
}
note() { printf '   %s\n' "$*"; }
ok() { printf '   %s%s %s%s\n' "$GREEN" "$YES" "$*" "$RESET"; }
die() { printf '\n%s%s %s%s\n' "$RED" "$NO" "$*" "$RESET" >&2; exit 1; }
# Indents what it reads (also a last line without a newline).
indent() { local l; while IFS= read -r l || [ -n "$l" ]; do printf '      %s\n' "$l"; done; }

forget_pid() { # forget_pid PID: it has ended (we waited for it)
  local keep=() p
  for p in ${BG_PIDS[@]+"${BG_PIDS[@]}"}; do [ "$p" = "$1" ] || keep+=("$p"); done
  BG_PIDS=(${keep[@]+"${keep[@]}"})
}

# wait_for SECONDS CMD...: retries CMD every 0.1 s until it succeeds or SECONDS pass.
wait_for() {
  local tries=$(($1 * 10)); shift
  while ! "$@"; do
    tries=$((tries - 1))
    [ "$tries" -gt 0 ] || return 1
    sleep 0.1
  done
}
