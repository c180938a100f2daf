#!/bin/sh
# The system packages the test suite needs, installed when missing (Debian/Ubuntu, as
# root or with sudo): Xvfb, the virtual display on which the live dashboard is tested;
# chromium and chromium-driver, the real browser the drawing page is tested in (about
# 300 MB; selenium drives it through /usr/bin/chromedriver, nothing downloaded); wrk,
# the load generator of scripts/bench_serving.py, and h2load (nghttp2-client), its gRPC
# one; iproute2 (ip), with which the cluster
# tests bring up loopback in a network namespace of their own.
# Called by the test command in README.md (and so by .ci/run); does nothing when all
# are present.
set -eu
missing=""
command -v Xvfb >/dev/null 2>&1 || missing="$missing xvfb"
[ -x /usr/bin/chromium ] || missing="$missing chromium"
[ -x /usr/bin/chromedriver ] || missing="$missing chromium-driver"
command -v wrk >/dev/null 2>&1 || missing="$missing wrk"
command -v h2load >/dev/null 2>&1 || missing="$missing nghttp2-client"
command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
command -v unshare >/dev/null 2>&1 || missing="$missing util-linux"
[ -z "$missing" ] && exit 0
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_test_packages: please install:$missing (no apt-get here)" >&2
    exit 1
fi
sudo=""
[ "$(id -u)" = 0 ] || sudo="sudo"
echo "install_test_packages: installing$missing" >&2
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
