#!/usr/bin/env bash
# Build the modelfn Lambda layer as a cross-platform build does (manylinux wheels for CPython 3.12 on x86_64,
# unpacked without byte-compiling, plus the runtime package without __pycache__) and print what Lambda counts
# against its 250 MB unzipped limit: the whole layer, and the modelfn package alone with its line count.
#
#   tools/layer_size.sh [TREE] [OUT]
#     TREE  a checkout holding layers/modelfn (default: this repository), e.g. an old commit's `git worktree`
#     OUT   an empty folder to build in and keep (default: a temporary one, removed afterwards)
#   PYTHON  the interpreter whose pip builds (default: this repository's .venv, else python3); needs the index
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
tree="$(cd "${1:-$here}" && pwd)"
layer_src="$tree/layers/modelfn"
[[ -f "$layer_src/requirements.txt" && -d "$layer_src/modelfn" ]] || {
    echo "layer_size: $layer_src has no requirements.txt and modelfn/" >&2
    exit 2
}
if [[ -n "${2:-}" ]]; then
    out="$2"
    mkdir -p "$out"
    [[ -z "$(ls -A "$out")" ]] || { echo "layer_size: $out is not empty" >&2; exit 2; }
else
    out="$(mktemp -d)"
    trap 'rm -rf "$out"' EXIT
fi
if [[ -n "${PYTHON:-}" ]]; then
    python="$PYTHON"
elif [[ -x "$here/.venv/bin/python" ]]; then
    python="$here/.venv/bin/python"
else
    python=python3
fi

# Lambda's python3.12 runs on Amazon Linux 2023 (glibc 2.34): every manylinux wheel up to manylinux_2_34 runs
# there. pip does not widen an explicit --platform to older glibc versions, so each is named (manylinux2014 is the
# legacy name of 2_17, and some wheels carry only that one); onnxruntime publishes manylinux_2_28 wheels, orjson
# manylinux_2_17 ones.
platforms=()
for minor in $(seq 34 -1 17); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
platforms+=(--platform manylinux2014_x86_64)

# SAM's python3.12 layer build: the requirements and the ContentUri's code, both under python/
site="$out/python"
"$python" -m pip install --quiet --disable-pip-version-check --no-warn-conflicts --no-compile \
    --target "$site" "${platforms[@]}" --python-version 3.12 --implementation cp \
    --only-binary=:all: -r "$layer_src/requirements.txt"
tar -C "$layer_src" --exclude=__pycache__ --exclude='*.pyc' -cf - modelfn | tar -C "$site" -xf -

# bytes and files of a tree, as unzipped (regular files only)
measure() { find "$1" -type f -printf '%s\n' | awk '{ b += $1; n++ } END { printf "%d %d\n", b, n }'; }
mib() { awk -v b="$1" 'BEGIN { printf "%.2f", b / 1048576 }'; }

read -r layer_bytes layer_files < <(measure "$site")
read -r pkg_bytes pkg_files < <(measure "$site/modelfn")
pkg_lines=$(find "$site/modelfn" -type f -name '*.py' -exec cat {} + | wc -l)

echo "tree:            $tree ($(git -C "$tree" rev-parse --short HEAD 2>/dev/null || echo 'not a git checkout'))"
echo "layer unzipped:  $(mib "$layer_bytes") MiB ($layer_bytes bytes, $layer_files files; Lambda's limit, function included: 250 MiB)"
echo "modelfn package: $(mib "$pkg_bytes") MiB ($pkg_bytes bytes, $pkg_files files, $pkg_lines lines of Python)"
echo "largest entries of the layer (MiB):"
for entry in "$site"/*; do
    read -r bytes _ < <(measure "$entry")
    printf '%s\t%s\n' "$bytes" "${entry##*/}"
done | sort -rn | head -8 | while IFS=$'\t' read -r bytes name; do printf '  %8s  %s\n' "$(mib "$bytes")" "$name"; done
