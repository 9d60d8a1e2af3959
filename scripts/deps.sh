#!/usr/bin/env bash
# Installs the system packages DOPPLER needs when they are missing: a C
# compiler for cgo, a Vulkan loader + driver for WebGPU (Mesa's lavapipe
# runs everywhere; a GPU's own driver is used when present), and Chromium
# for the browser tests (headless, WebGPU on SwiftShader).
set -euo pipefail
need=()
command -v gcc >/dev/null || need+=(gcc)
ldconfig -p 2>/dev/null | grep -q 'libvulkan.so.1' || need+=(libvulkan1)
ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 || need+=(mesa-vulkan-drivers)
[ -x "${DOPPLER_CHROMIUM:-/usr/lib/chromium/chromium}" ] || need+=(chromium)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null; then
  echo "missing system packages: ${need[*]} (install them with your package manager)" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq "${need[@]}" >/dev/null
