#!/bin/sh
# One job through `drove worker -- sh call.sh`: the payload (stdin) is posted to the downstream
# ($DS_URL) with the job's id and attempt; a 429 becomes exit 75 (throttled) with
# `@retry-after MS` from `Retry-After-Ms`, else from `Retry-After` (whole seconds).
out=$(curl -sS -o /dev/null -H 'content-type: application/json' --data-binary @- \
  -w '%{http_code} ms=%header{retry-after-ms} s=%header{retry-after}' \
  "$DS_URL/call?job=$DROVE_JOB_ID&att=$DROVE_ATTEMPT&w=${WORKER_NAME:-cli}") || exit 1
code=${out%% *}
ms=${out#* ms=}; ms=${ms%% s=*}
s=${out##* s=}
case "$code" in
  2??) exit 0 ;;
  429)
    if [ -n "$ms" ]; then echo "@retry-after $ms"
    elif [ -n "$s" ]; then echo "@retry-after $((s * 1000))"
    fi
    exit 75 ;;
  *) echo "downstream answered HTTP $code" >&2; exit 1 ;;
esac
