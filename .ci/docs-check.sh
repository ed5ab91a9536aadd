#!/usr/bin/env bash
# Docs check (issue 16: the contract and the docs live in the repository).
#
# Fails (exit 1), naming each offence as FILE:LINE, when
#   1. a tracked file outside bench/ carries a path into the sibling `shared` directory (the
#      peers' lab stays outside the repository; outside bench/ it is named in words), or
#   2. a README, a docs/*.md file, a Markdown file at the top (ARCHITECTURE.md), a Rust doc
#      comment (`//!`, `///`) or a CLI `--help` text (string literals of `#[arg(...)]` and
#      `#[command(...)]` in crates/drove-cli/src; their doc comments fall under the Rust rule)
#      cites a document, `NAME.md` or `some/path/NAME.md`, that is not a tracked file of the
#      repository.
#
# A cited path is looked up relative to the citing file's directory and to the repository root;
# a bare name (`API.md`) is also looked up in docs/ (so `API.md` means docs/API.md). URLs are not
# citations, and neither are placeholder paths such as `bench/results/<UTC>/report.md`. Files
# under bench/ are not scanned: the benchmark scripts may name the lab outside.
#
# Usage: .ci/docs-check.sh   (from anywhere inside the repository; needs git, grep, sed)
set -euo pipefail
cd "$(git -C "$(dirname "${BASH_SOURCE[0]}")" rev-parse --show-toplevel)"

dots='..'
outside="$dots/shared"            # spelled in two parts so that this file does not carry it
failures=0
fail() {
    printf '%s\n' "$1"
    failures=$((failures + 1))
}

# ---- 1. no path into the lab outside the repository, except under bench/
while IFS= read -r hit; do
    fail "${hit%%:*}:$(cut -d: -f2 <<<"$hit"): carries a path into $outside (name it in words, or move the use under bench/)"
done < <(git grep -n -I -F -e "$outside" -- . ':(exclude)bench/**' || true)

# ---- 2. every cited document exists
declare -A tracked=()
while IFS= read -r f; do
    tracked["$f"]=1
done < <(git ls-files)

# Normalises a repository-relative path (a/./b/../c -> a/c); prints nothing when it leaves the
# repository.
normalise() {
    local IFS=/ part out=()
    for part in $1; do
        case "$part" in
            '' | .) ;;
            ..) if ((${#out[@]} == 0)); then return; fi; unset 'out[${#out[@]}-1]' ;;
            *) out+=("$part") ;;
        esac
    done
    printf '%s\n' "${out[*]}"
}

# Whether document path $2, cited from file $1, is a tracked file.
resolves() {
    local from_dir cand path
    from_dir=$(dirname "$1")
    [[ "$2" == /* ]] && return 1        # an absolute path is outside the repository
    for cand in "$from_dir/$2" "$2"; do
        path=$(normalise "$cand")
        [[ -n "$path" && -n "${tracked[$path]:-}" ]] && return 0
    done
    if [[ "$2" != */* && -n "${tracked[docs/$2]:-}" ]]; then
        return 0
    fi
    return 1
}

doc_token='[A-Za-z0-9_.<>/-]*[A-Za-z0-9_-]\.md\b'

# Checks the citations in one line of text: $1 file, $2 line number, $3 what kind of text.
check_text() {
    local file=$1 line=$2 what=$3 text token
    # URLs are not citations.
    text=$(sed -E 's#[A-Za-z][A-Za-z0-9+.-]*://[^[:space:])>"`]*##g' <<<"$4")
    while IFS= read -r token; do
        [[ -z "$token" || "$token" == *'<'* || "$token" == *'>'* ]] && continue
        if ! resolves "$file" "$token"; then
            fail "$file:$line: $what cites $token, which is not in the repository"
        fi
    done < <(grep -oE "$doc_token" <<<"$text" || true)
}

# READMEs, docs/*.md and the Markdown files at the top of the repository.
while IFS= read -r hit; do
    file=${hit%%:*}; rest=${hit#*:}; line=${rest%%:*}; text=${rest#*:}
    check_text "$file" "$line" "the document" "$text"
done < <(git grep -n -I -E '[A-Za-z0-9_-]\.md' -- \
    ':(glob)*.md' ':(glob)**/README*.md' ':(glob)docs/*.md' ':(exclude)bench/**' || true)

# Rust doc comments.
while IFS= read -r hit; do
    file=${hit%%:*}; rest=${hit#*:}; line=${rest%%:*}; text=${rest#*:}
    check_text "$file" "$line" "a doc comment" "$text"
done < <(git grep -n -I -E '^[[:space:]]*//[/!].*[A-Za-z0-9_-]\.md' -- '*.rs' ':(exclude)bench/**' || true)

# The CLI's --help texts given as attribute strings (about = "...", help = "...", ...).
while IFS= read -r hit; do
    file=${hit%%:*}; rest=${hit#*:}; line=${rest%%:*}; text=${rest#*:}
    strings=$(grep -oE '"([^"\\]|\\.)*"' <<<"$text" || true)
    check_text "$file" "$line" "a --help text" "$strings"
done < <(git grep -n -I -E '#\[(arg|command|clap)\(.*[A-Za-z0-9_-]\.md' -- 'crates/drove-cli/src' || true)

if ((failures > 0)); then
    printf '\ndocs check: %d problem(s)\n' "$failures"
    exit 1
fi
echo "docs check: ok (no path into $outside outside bench/; every cited document is in the repository)"
