#!/usr/bin/env bash
# Install the Debian packages the renderers need, when missing.
# As root: apt-get update, then install. Otherwise: print the exact command and carry on.
set -euo pipefail
packages=(chromium chromium-driver texlive-latex-base texlive-pictures texlive-latex-extra
          poppler-utils bubblewrap fonts-dejavu-core)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
command="apt-get install -y --no-install-recommends ${missing[*]}"
if [ "$(id -u)" -eq 0 ]; then
  echo "installing system packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $command -qq
else
  echo "missing system packages for the renderers; as root run:"
  echo "  apt-get update && $command"
fi
