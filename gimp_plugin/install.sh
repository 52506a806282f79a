#!/usr/bin/env bash
# Install the "Replace Background…" GIMP 3 plug-in into the user's GIMP 3 profile(s).
# Used by `make install-gimp-plugin`; safe to run again (it replaces the previous copy).
#
#   bash gimp_plugin/install.sh              # native profile, plus Flatpak profile if present
#   GIMP3_DIRECTORY=/path bash ...           # a profile GIMP is started with (GIMP3_DIRECTORY=...)
#   bash gimp_plugin/install.sh DIR...       # explicit plug-ins folders instead
#
# GIMP 3 runs a Python plug-in only from a folder named like the plug-in's file, with the file
# executable; anything else is skipped silently. This script gets both right. It also records this
# project's folder next to the plug-in (replace_background_project.txt), so that the plug-in, with
# every option at its default, talks to this project's server (`make serve`) with its key file.
#
# The plug-in runs in GIMP's own Python and cannot import this project, yet it must speak the same
# HTTP contract as the server: the one copy of that contract, handler/contract.py, is copied into
# the installed folder as replace_background_contract.py (the repository holds no second copy).
set -euo pipefail

NAME=replace-background
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SRC="$HERE/$NAME"
PROJECT="$(dirname "$HERE")"
CONTRACT="$PROJECT/handler/contract.py"
# Git Bash on Windows: record C:\... (what GIMP's Python opens), not /c/...
if command -v cygpath >/dev/null 2>&1; then PROJECT="$(cygpath -w "$PROJECT")"; fi
FILES=("$NAME.py" replace_background_core.py)
RECORD=replace_background_project.txt
for f in "${FILES[@]}"; do
    [ -f "$SRC/$f" ] || { echo "install.sh: $SRC/$f is missing" >&2; exit 1; }
done
[ -f "$CONTRACT" ] || { echo "install.sh: $CONTRACT is missing (the plug-in needs the project's contract)" >&2; exit 1; }

profiles=()
if [ $# -gt 0 ]; then
    plugin_dirs=("$@")
else
    if [ -n "${GIMP3_DIRECTORY:-}" ]; then
        profiles+=("$GIMP3_DIRECTORY")
    else
        case "$(uname -s)" in
            Darwin) profiles+=("$HOME/Library/Application Support/GIMP/3.0") ;;
            MINGW* | MSYS* | CYGWIN*) profiles+=("${APPDATA:-$HOME/AppData/Roaming}/GIMP/3.0") ;;
            *) profiles+=("${XDG_CONFIG_HOME:-$HOME/.config}/GIMP/3.0") ;;
        esac
        # The Flatpak GIMP keeps its own profile; install there too when that app is present.
        if [ -d "$HOME/.var/app/org.gimp.GIMP" ]; then
            profiles+=("$HOME/.var/app/org.gimp.GIMP/config/GIMP/3.0")
        fi
    fi
    plugin_dirs=()
    for p in "${profiles[@]}"; do plugin_dirs+=("$p/plug-ins"); done
fi

for dir in "${plugin_dirs[@]}"; do
    dest="$dir/$NAME"
    mkdir -p "$dest"
    for f in "${FILES[@]}"; do
        cp -f "$SRC/$f" "$dest/$f"
    done
    cp -f "$CONTRACT" "$dest/replace_background_contract.py"
    printf '%s\n' "$PROJECT" > "$dest/$RECORD"
    chmod 755 "$dest" "$dest/$NAME.py"
    chmod 644 "$dest/replace_background_core.py" "$dest/replace_background_contract.py" "$dest/$RECORD"
    rm -rf "$dest/__pycache__"
    echo "installed: $dest/$NAME.py"
done

cat <<EOF

Restart GIMP 3, open a photo and look for  Filters > Enhance > Replace Background…
(or press / and type "Replace Background").

Check that GIMP registered it (a broken plug-in is skipped silently):
  - Help > Plug-in Browser, search "replace-background": python-fu-replace-background must be listed; or
  - gimp-console-3.0 -i -d -f --batch-interpreter=python-fu-eval --quit -b \\
      'from gi.repository import Gimp; print("registered:", Gimp.get_pdb().lookup_procedure("python-fu-replace-background") is not None)'
    (Flatpak: flatpak run --command=gimp-console-3.0 org.gimp.GIMP -i -d -f ... with the same arguments)

With every option at its default the plug-in uses this project's server, $PROJECT:
start it with  cd $PROJECT && make serve  (the plug-in finds its address and key file, and renews
expired keys by itself). For another server, set Server URL and Key file. See docs/GIMP.md.
EOF
