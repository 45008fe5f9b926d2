#!/usr/bin/env bash
# Add Chainrule Studio to the desktop's application menu (Linux, freedesktop.org menus).
#
#   pip install chainrule-studio   (or: pip install -e . in a clone)
#   bash packaging/install-desktop-entry.sh           # for this user
#   bash packaging/install-desktop-entry.sh --remove  # take it out again
#
# Installs the launcher (packaging/chainrule-studio.desktop) and the icon shipped in the
# `studio` package into $XDG_DATA_HOME (default ~/.local/share). Each file is written to a
# temporary name beside its target, then renamed, so a menu never sees half a file.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
data="${XDG_DATA_HOME:-$HOME/.local/share}"
apps="$data/applications"
icons="$data/icons/hicolor/scalable/apps"

if [[ "${1:-}" == "--remove" ]]; then
  rm -f "$apps/chainrule-studio.desktop" "$icons/chainrule-studio.svg"
  echo "removed the Chainrule Studio launcher from $data"
  exit 0
fi
if [[ $# -gt 0 ]]; then
  echo "install-desktop-entry.sh: unknown option $1 (use --remove, or nothing)" >&2
  exit 2
fi

if ! command -v chainrule-studio >/dev/null 2>&1; then
  echo "install-desktop-entry.sh: chainrule-studio is not on PATH; install the package first (pip install chainrule-studio), or activate its virtual environment" >&2
  exit 1
fi
exe="$(command -v chainrule-studio)"
python="$(head -1 "$exe" | sed -e 's/^#!//')"
icon="$("$python" -c 'from studio.app import icon_path; print(icon_path())')"

install_atomically() {  # src dest
  mkdir -p "$(dirname "$2")"
  tmp="$(mktemp "$(dirname "$2")/.chainrule-XXXXXX")"
  cat "$1" > "$tmp"
  chmod 644 "$tmp"
  mv -f "$tmp" "$2"
}

# The launcher names the full path, so it works from a virtual environment that is not on PATH.
desktop_src="$(mktemp)"
trap 'rm -f "$desktop_src"' EXIT
exec_field="$exe"
if [[ "$exe" == *" "* ]]; then  # the desktop entry spec quotes an argument that holds spaces
  exec_field="\"$exe\""
fi
sed -e "s|^Exec=chainrule-studio$|Exec=$exec_field|" "$here/chainrule-studio.desktop" > "$desktop_src"
install_atomically "$desktop_src" "$apps/chainrule-studio.desktop"
install_atomically "$icon" "$icons/chainrule-studio.svg"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database -q "$apps" || true
echo "installed the Chainrule Studio launcher ($exe) into $data"
