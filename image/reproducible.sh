#!/usr/bin/env bash
# Builds the release binary twice and fails unless both are bit for bit
# the same (`make reproducible`; image/image_test.go runs it too).
#
#   image/reproducible.sh [WORKDIR]
#
# Each build runs `make release` in its own clean clone of HEAD (so only
# committed source counts), at paths of different lengths (so -trimpath is
# what keeps them equal), with separate output folders; the second build
# also starts from an empty Go build cache, so a cached object cannot hide a
# difference. WORKDIR (default: a temporary folder, removed afterwards)
# keeps the two binaries as WORKDIR/a/keywarden and WORKDIR/b/keywarden.
# Prints "revision <commit>", "sha256 a <digest>" and "sha256 b <digest>".
set -euo pipefail
root=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
rev=$(git -C "$root" rev-parse HEAD)
if [ $# -ge 1 ]; then
  work=$1
  mkdir -p "$work"
else
  work=$(mktemp -d)
  trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT
fi
src_a=$work/a/src
src_b=$work/b/another/much/longer/path/to/the/source
echo "reproducible: building $rev twice" >&2
echo "revision $rev"
for d in "$src_a" "$src_b"; do
  rm -rf "$d"
  git clone -q --no-checkout "$root" "$d"
  git -C "$d" -c advice.detachedHead=false checkout -q "$rev"
done
make -s -C "$src_a" release OUT="$work/a" >/dev/null
GOCACHE=$work/b/gocache make -s -C "$src_b" release OUT="$work/b" >/dev/null
a=$(sha256sum "$work/a/keywarden" | cut -d' ' -f1)
b=$(sha256sum "$work/b/keywarden" | cut -d' ' -f1)
echo "sha256 a $a"
echo "sha256 b $b"
if [ "$a" != "$b" ]; then
  echo "reproducible: FAIL: the two release builds differ (compare them with \`go version -m\` and diffoscope)" >&2
  exit 1
fi
echo "reproducible: OK, both builds are $a" >&2
