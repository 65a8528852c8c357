# How the demonstrations tell their story (sourced by demo/run.sh and demo/ha.sh): headings,
# numbered steps with their reason, ok/FAILED lines, background processes and the end.
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

# stop_background [SECONDS]: ends every process in BG_PIDS by its PID: SIGTERM, then SIGKILL
# (said) for one still running SECONDS (default 3) later.
stop_background() {
  local pid waited limit=$((${1:-3} * 10))
  for pid in ${BG_PIDS[@]+"${BG_PIDS[@]}"}; do kill -TERM "$pid" 2>/dev/null; done
  for pid in ${BG_PIDS[@]+"${BG_PIDS[@]}"}; do
    waited=0
    while kill -0 "$pid" 2>/dev/null && [ "$waited" -lt "$limit" ]; do sleep 0.1; waited=$((waited + 1)); done
    if kill -0 "$pid" 2>/dev/null; then
      printf 'cleanup: process %s did not stop on SIGTERM within %s s; killing it\n' "$pid" "${1:-3}" >&2
      kill -KILL "$pid" 2>/dev/null
    fi
    wait "$pid" 2>/dev/null
  done
}

# end_story STATUS: removes the work directory WORK, says so if the story stopped early, exits.
end_story() {
  local rc=$1
  cd /
  [ -n "$WORK" ] && rm -rf -- "$WORK"
  if [ "$rc" -ne 0 ] && [ -n "$WORK" ]; then
    printf '\n%sThe demonstration stopped early (exit status %s); everything it set up was removed.%s\n' \
      "$RED" "$rc" "$RESET" >&2
  fi
  exit "$rc"
}
