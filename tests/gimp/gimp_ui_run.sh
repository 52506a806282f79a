#!/usr/bin/env bash
# Run INSIDE the GIMP root: start a virtual X display, run the given command (gimp-console with
# the batch driver) and accept every "Replace Background" dialog that opens: screenshot it to
# /rbjob/dialog-N.png, then click its OK button. Used by the dialog test (gimp_harness ui=True).
# There is no window manager, so keyboard focus is unreliable: the click goes to OK's position
# (bottom-right corner of GimpProcedureDialog) through XTEST, which GTK accepts.
set -u
export DISPLAY=:99
Xvfb "$DISPLAY" -screen 0 1280x1024x24 -nolisten tcp >/rbjob/xvfb.log 2>&1 &
xvfb_pid=$!
for _ in $(seq 100); do [ -e /tmp/.X11-unix/X99 ] && break; sleep 0.1; done

accept_dialogs() {
    local n=0 wid geo x y w h
    while true; do
        wid=$(xdotool search --onlyvisible --name '^Replace Background$' 2>/dev/null | head -1)
        if [ -n "$wid" ]; then
            sleep 1.5  # let GTK finish drawing
            n=$((n + 1))
            python3 /rbjob/gimp_screenshot.py "/rbjob/dialog-$n.png" || true
            geo=$(xdotool getwindowgeometry --shell "$wid")
            x=$(sed -n 's/^X=//p' <<<"$geo"); y=$(sed -n 's/^Y=//p' <<<"$geo")
            w=$(sed -n 's/^WIDTH=//p' <<<"$geo"); h=$(sed -n 's/^HEIGHT=//p' <<<"$geo")
            xdotool mousemove $((x + w - 57)) $((y + h - 29)) click 1
            echo "[ui] dialog $n ${w}x${h}: clicked OK" >&2
            while xdotool search --onlyvisible --name '^Replace Background$' >/dev/null 2>&1; do sleep 0.3; done
        fi
        sleep 0.3
    done
}
accept_dialogs &
acceptor_pid=$!
"$@"
rc=$?
kill "$acceptor_pid" "$xvfb_pid" 2>/dev/null
wait 2>/dev/null
exit "$rc"
