#!/bin/sh
# Real photographs for the engine bench's second set: OpenCV's sample
# images as Debian ships them in the package opencv-doc (OpenCV's licence;
# Debian's "+dfsg" repack removed the non-free ones). None was seen by the
# engine while it was tuned on testdata/photos, and none is upscaled: they
# are 512-1282 px wide, shrunk to fit 800x600 by the bench where larger.
# Writes them to target/bench-photos, where `cargo bench --bench engines`
# finds them (or set RETOUCH_BENCH_PHOTOS to another directory).
set -eu
root=$(cd "$(dirname "$0")/../../../.." && pwd)
out="${RETOUCH_BENCH_PHOTOS:-$root/target/bench-photos}"
version="4.6.0+dfsg-12"
photos="aloeL baboon building butterfly fruits home leuvenA messi5"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
apt-get download "opencv-doc=$version"
dpkg-deb -x opencv-doc_*.deb extracted
mkdir -p "$out"
for name in $photos; do
    cp "extracted/usr/share/doc/opencv-doc/examples/data/$name.jpg" "$out/"
done
printf '%s photos in %s\n' "$(echo $photos | wc -w)" "$out"
