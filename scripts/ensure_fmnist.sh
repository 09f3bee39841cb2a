#!/bin/sh
# Install the Fashion-MNIST IDX files when they are missing (Debian package dataset-fashion-mnist).
DIR="$1"
FILES="train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz"
missing=0
for f in $FILES; do [ -f "$DIR/$f" ] || missing=1; done
[ "$missing" = 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && [ "$DIR" = /usr/share/datasets/fashion-mnist ]; then
    echo "Fashion-MNIST not found in $DIR: installing the Debian package dataset-fashion-mnist"
    apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null && exit 0
fi
echo "Fashion-MNIST is missing from $DIR." >&2
echo "Install it with 'sudo apt-get install dataset-fashion-mnist', or put the four IDX files" >&2
echo "($FILES) in a directory and set LDMKIT_FMNIST_DIR to it." >&2
exit 1
