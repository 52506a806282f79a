# Batch driver executed INSIDE GIMP 3 by the python-fu-eval interpreter (in the GIMP root):
#   gimp-console-3.0 -i -d -f --batch-interpreter=python-fu-eval \
#       -b 'exec(open("/rbjob/gimp_driver.py").read())' --quit
# It reads the job file named by $RB_JOB (JSON, written by gimp_harness.py), and for each case:
# loads the photo, prepares the layer (crop/offset, greyscale, precision, alpha, old mask,
# selection), records the image state, calls python-fu-replace-background NON-INTERACTIVELY
# through the PDB, records the state again, dumps the layer mask as raw bytes and exports the
# composite as PNG. Results go to $RB_JOB's folder as results.json after every case, so a crash
# still leaves the finished cases behind. It raises (never sys.exit) only for a broken harness.
"""GIMP-side test driver for the Replace Background plug-in (runs in GIMP's Python)."""

import hashlib
import json
import os
import struct
import time
import traceback

import gi

gi.require_version("Gimp", "3.0")
gi.require_version("Gegl", "0.4")
gi.require_version("Babl", "0.1")
from gi.repository import Babl, Gegl, Gimp, Gio  # noqa: E402

PROC = "python-fu-replace-background"
JOB = os.environ.get("RB_JOB", "/rbjob/job.json")
OUT_DIR = os.path.dirname(JOB)


def pixels(drawable, fmt="R'G'B'A u8"):
    """All pixels of a drawable, in its own coordinates."""
    w, h = drawable.get_width(), drawable.get_height()
    rect = Gegl.Rectangle.new(0, 0, w, h)
    return bytes(drawable.get_buffer().get(rect, 1.0, fmt, Gegl.AbyssPolicy.CLAMP))


# 1.0 in each component type GIMP stores, as the bytes of an opaque alpha value
OPAQUE = {
    "u8": b"\xff",
    "u16": b"\xff" * 2,
    "u32": b"\xff" * 4,
    "half": struct.pack("=e", 1.0),
    "float": struct.pack("=f", 1.0),
    "double": struct.pack("=d", 1.0),
}


def stored_pixels(drawable: Gimp.Drawable, opaque_alpha: bool = False) -> bytes:
    """The drawable's pixels exactly as GIMP stores them: read in its own format, so a plain copy.

    Reading in any other format goes through a babl conversion, and babl picks each conversion
    path per process by TIMING the candidates (a path slower than the reference one is dropped),
    then any path within its error tolerance (about 5e-6) is legal. On a busy machine the same
    pixels then read back with different last bits from one GIMP start to the next, and between
    two source formats in one start: "R'G'B' u8" (before the plug-in adds alpha) and
    "R'G'B'A u8" (after) did not always give the same "R'G'B'A float" bytes, which made the
    before/after digests of an untouched layer differ now and then.

    ``opaque_alpha`` splices in an alpha channel of 1.0 when the drawable has none, here rather
    than through babl, so that adding an (opaque) alpha channel alone is not a pixel change.
    """
    fmt = drawable.get_format()
    encoding = Babl.format_get_encoding(fmt)  # e.g. "R'G'B' u8", "RGBA float", "Y u16"
    if Babl.format(encoding) != fmt:  # only for a non-sRGB image: the name would drop its space
        raise RuntimeError(f"{drawable.get_name()!r} is not in sRGB: its format cannot be named to read it as stored")
    data = pixels(drawable, encoding)
    if not opaque_alpha or Babl.format_has_alpha(fmt):
        return data
    one = OPAQUE[encoding.rsplit(" ", 1)[1]]
    size = len(one)
    src_stride = Babl.format_get_bytes_per_pixel(fmt)
    dst_stride = src_stride + size
    count = len(data) // src_stride
    out = bytearray(count * dst_stride)
    for k in range(src_stride):
        out[k::dst_stride] = data[k::src_stride]
    for k in range(size):
        out[src_stride + k::dst_stride] = one[k:k + 1] * count
    return bytes(out)


def digest(data):
    return hashlib.sha256(data).hexdigest()[:16]


def describe_layers(container_layers):
    """Everything a user could see or a script could read about the layers, recursively."""
    out = []
    for layer in container_layers:
        entry = {
            "id": layer.get_id(),
            "name": layer.get_name(),
            "offsets": list(layer.get_offsets()[1:]),
            "size": [layer.get_width(), layer.get_height()],
            "visible": layer.get_visible(),
            "opacity": round(layer.get_opacity(), 4),
            "mode": int(layer.get_mode()),
            "has_alpha": layer.has_alpha(),
            # the stored bytes: exact at any precision, and the same in every GIMP start
            "pixels": digest(stored_pixels(layer, opaque_alpha=True)),
            "mask": None,
        }
        mask = layer.get_mask()
        if mask is not None:
            entry["mask"] = {
                "pixels": digest(stored_pixels(mask)),
                "apply": layer.get_apply_mask(),
                "show": layer.get_show_mask(),
                "edit": layer.get_edit_mask(),
            }
        if layer.is_group_layer():
            entry["children"] = describe_layers(layer.get_children())
        out.append(entry)
    return out


def describe(image):
    sel = Gimp.Selection.bounds(image)
    return {
        "size": [image.get_width(), image.get_height()],
        "base_type": int(image.get_base_type()),
        "precision": int(image.get_precision()),
        "layers": describe_layers(image.get_layers()),
        "selected": [lyr.get_id() for lyr in image.get_selected_layers()],
        "selection": [bool(sel[1]), *sel[2:]],
        "channels": [c.get_name() for c in image.get_channels()],
    }


PRECISIONS = {
    "u16-linear": Gimp.Precision.U16_LINEAR,
    "float-linear": Gimp.Precision.FLOAT_LINEAR,
    "u16-non-linear": Gimp.Precision.U16_NON_LINEAR,
    "half-linear": Gimp.Precision.HALF_LINEAR,
}


def prepare(image, setup):
    """Apply a case's set-up to the freshly loaded image; return the layer to run on."""
    layer = image.get_layers()[0]
    if setup.get("scale"):
        image.scale(*setup["scale"])
    if setup.get("gray"):
        image.convert_grayscale()
    if setup.get("precision"):
        image.convert_precision(PRECISIONS[setup["precision"]])
    if setup.get("crop_layer"):
        x, y, w, h = setup["crop_layer"]
        layer.resize(w, h, -x, -y)  # keep the region (x, y, w, h) of the layer
    if setup.get("offsets"):
        layer.set_offsets(*setup["offsets"])
    if setup.get("alpha"):
        layer.add_alpha()
    if setup.get("old_mask"):
        mask = layer.create_mask(Gimp.AddMaskType.BLACK)
        layer.add_mask(mask)
        w, h = mask.get_width(), mask.get_height()
        buf = mask.get_buffer()
        buf.set(Gegl.Rectangle.new(0, 0, w // 2, h), "Y u8", b"\xc8" * ((w // 2) * h))
        buf.flush()
    if setup.get("under_layer"):  # a second layer under the photo, to see that it is left alone
        under = Gimp.Layer.new(image, "under", image.get_width(), image.get_height(),
                               Gimp.ImageType.RGB_IMAGE if image.get_base_type() == Gimp.ImageBaseType.RGB
                               else Gimp.ImageType.GRAY_IMAGE, 100.0, Gimp.LayerMode.NORMAL)
        image.insert_layer(under, None, 1)
        under.fill(Gimp.FillType.WHITE)
    if setup.get("select"):
        image.select_rectangle(Gimp.ChannelOps.REPLACE, *setup["select"])
    for rect in setup.get("select_more", []):  # more separate parts of the selection
        image.select_ellipse(Gimp.ChannelOps.ADD, *rect)
    if setup.get("delete_file"):  # e.g. a key file that vanished since the last run
        os.remove(setup["delete_file"])
    if setup.get("lock"):
        layer.set_lock_content(True)
    image.set_selected_layers([layer])
    if setup.get("group"):  # run on a layer group holding the photo
        group = Gimp.GroupLayer.new(image, "group")
        image.insert_layer(group, None, 0)
        image.reorder_item(layer, group, 0)
        image.set_selected_layers([group])
        layer = group
    image.clean_all()
    return layer


RUN_MODES = {
    "noninteractive": Gimp.RunMode.NONINTERACTIVE,
    "interactive": Gimp.RunMode.INTERACTIVE,  # needs a display: see gimp_ui_run.sh
    "last-vals": Gimp.RunMode.WITH_LAST_VALS,
}


def set_args(config, image, layer, args, run_mode="noninteractive"):
    config.set_property("run-mode", RUN_MODES[run_mode])
    config.set_property("image", image)
    config.set_core_object_array("drawables", [layer])
    for name, value in args.items():
        if name in ("key-file", "background-image"):
            value = Gio.File.new_for_path(value) if value else None
        elif name == "background-color":
            value = Gegl.Color.new(value)
        config.set_property(name, value)


def run_case(proc, case):
    name = case["name"]
    res = {"name": name, "ok": False}
    image = Gimp.file_load(Gimp.RunMode.NONINTERACTIVE, Gio.File.new_for_path(case["input"]))
    try:
        layer = prepare(image, case.get("setup", {}))
        res["layer"] = {
            "id": layer.get_id(),
            "offsets": list(layer.get_offsets()[1:]),
            "size": [layer.get_width(), layer.get_height()],
            "image_size": [image.get_width(), image.get_height()],
        }
        # exactly the pixels the plug-in reads and sends, for the test to ask the server itself
        with open(os.path.join(OUT_DIR, name + ".layer.rgba"), "wb") as fh:
            fh.write(pixels(layer))
        res["before"] = describe(image)

        config = proc.create_config()
        set_args(config, image, layer, case.get("args", {}), case.get("run_mode", "noninteractive"))
        t0 = time.monotonic()
        result = proc.run(config)
        res["seconds"] = round(time.monotonic() - t0, 3)
        status = result.index(0)
        res["status"] = status.value_nick if hasattr(status, "value_nick") else str(status)
        if status == Gimp.PDBStatusType.SUCCESS:
            rl, bl = result.index(1), result.index(2)
            res["result_layer"] = rl.get_id() if rl else None
            res["background_layer"] = bl.get_id() if bl else None
            target = rl or layer
            mask = target.get_mask()
            if mask is not None:
                with open(os.path.join(OUT_DIR, name + ".mask.y8"), "wb") as fh:
                    fh.write(pixels(mask, "Y u8"))
                res["mask_size"] = [mask.get_width(), mask.get_height()]
            if bl is not None:
                with open(os.path.join(OUT_DIR, name + ".background.rgba"), "wb") as fh:
                    fh.write(pixels(bl))
                res["background_size"] = [bl.get_width(), bl.get_height()]
            with open(os.path.join(OUT_DIR, name + ".result.rgba"), "wb") as fh:
                fh.write(pixels(target))  # the person layer's own pixels (a masked copy for Edge=colours)
            res["result_offsets"] = list(target.get_offsets()[1:])
            res["result_size"] = [target.get_width(), target.get_height()]
            res["result_has_mask"] = mask is not None
            res["result_pixels"] = digest(pixels(target, "R'G'B'A u8"))
            out = os.path.join(OUT_DIR, name + ".png")
            if not Gimp.file_save(Gimp.RunMode.NONINTERACTIVE, image, Gio.File.new_for_path(out), None):
                raise RuntimeError("file_save failed for " + out)
            res["export"] = out
        else:
            res["error"] = result.index(1) if result.length() > 1 else None
        res["after"] = describe(image)
        res["undo_dirty"] = image.is_dirty()
        res["ok"] = True
    except Exception:
        res["traceback"] = traceback.format_exc()
    finally:
        image.delete()
    return res


def main():
    with open(JOB) as fh:
        job = json.load(fh)
    proc = Gimp.get_pdb().lookup_procedure(PROC)
    results = {"registered": proc is not None, "gimp_version": Gimp.version(), "cases": []}
    if proc is not None:
        results["arguments"] = [p.name for p in proc.get_arguments()]
        results["menu_paths"] = list(proc.get_menu_paths())
        results["menu_label"] = proc.get_menu_label()
        results["image_types"] = proc.get_image_types()
    path = os.path.join(OUT_DIR, "results.json")
    with open(path, "w") as fh:
        json.dump(results, fh, indent=1)
    if proc is None:
        return
    for case in job["cases"]:
        results["cases"].append(run_case(proc, case))
        with open(path + ".tmp", "w") as fh:
            json.dump(results, fh, indent=1)
        os.replace(path + ".tmp", path)
    print("DRIVER-DONE", len(results["cases"]), "cases", flush=True)


main()
