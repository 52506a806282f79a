#!/usr/bin/env bash
# Install the "Replace Background…" GIMP 3 plug-in into the user's GIMP 3 profile(s).
# Used by `make install-gimp-plugin`; safe to run again (it replaces the previous copy).
#
#   bash gimp_plugin/install.sh              # native profile, plus Flatpak profile if present
#   GIMP3_DIRECTORY=/path bash ...           # a profile GIMP is started with (GIMP3_DIRECTORY=...)
#   bash gimp_plugin/install.sh DIR...       # explicit plug-ins folders instead
#
# GIMP 3 runs a Python plug-in only from a folder named like the plug-in's file, with the file
# executable; anything else is skipped silently. This script gets both right.
set -euo pipefail

NAME=replace-background
SRC="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/$NAME"
FILES=("$NAME.py" replace_background_core.py)
for f in "${FILES[@]}"; do
    [ -f "$SRC/$f" ] || { echo "install.sh: $SRC/$f is missing" >&2; exit 1; }
done

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
    chmod 755 "$dest" "$dest/$NAME.py"
    chmod 644 "$dest/replace_background_core.py"
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

The plug-in talks to the replace-background server (default http://127.0.0.1:8080): start it with
\`make serve\`; its inference key is in serve/key_file.json (Key file option). See docs/GIMP.md.
EOF
