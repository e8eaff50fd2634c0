#!/bin/sh
# Fetch the KCL MultiLangDaemon jars into DEST (default ./jars), the way amazon_kclpy documents:
# its `setup.py download_jars` reads the pom.xml pinned by the package version and downloads
# each jar from Maven Central (KCL_MVN_REPO_SEARCH_URL points it at a mirror).
# Needs network access to PyPI and Maven; the Dockerfile's kcl-jars stage does the same.
set -eu
VERSION="${AMAZON_KCLPY_VERSION:-3.2.0}"
DEST="$(cd "$(dirname "${1:-./jars}")" && pwd)/$(basename "${1:-./jars}")"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
python -m pip download --no-deps --no-binary :all: "amazon_kclpy==${VERSION}"
tar xzf amazon_kclpy-*.tar.gz --strip-components=1
python -m pip install "setuptools<81"
python setup.py download_jars
mkdir -p "$DEST"
cp amazon_kclpy/jars/*.jar "$DEST/"
echo "KCL jars in $DEST; run:"
echo "  java -cp '$DEST/*' software.amazon.kinesis.multilang.MultiLangDaemon --properties-file stream-projector.properties"
