"""The edit: the prepared answer arranged in the user's image, one function per Output, and its rollback.

GIMP offers plug-ins no "undo" call, and the caller wraps the edit in one undo group, so a failure
half-way through must be reverted by hand: ``Edit`` records each change it makes and ``rollback``
reverts them newest first, leaving the image looking and structured exactly as before. Nothing here
talks to the server or can fail for want of input: ``replace_background_prepare`` did all that first.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import gi

gi.require_version("Gimp", "3.0")
from gi.repository import Gimp  # noqa: E402
from replace_background_pixels import Progress, log, read_pixels, write_pixels  # noqa: E402
from replace_background_prepare import Answer, Background  # noqa: E402

BACKGROUND_LAYER_NAME = "Background (Replace Background)"
# Test hook: REPLACE_BACKGROUND_FAULT=edit raises in the middle of the edit, so the tests can prove
# that a failure half-way through leaves the image as it was. Never set by users.
FAULT_ENV = "REPLACE_BACKGROUND_FAULT"


class Edit:
    """Applies the prepared mask/background to the user's image and can undo its own steps.

    GIMP offers plug-ins no 'undo' call, so every change is recorded here and reverted in
    reverse order on failure: the image then looks and is structured exactly as before.
    """

    def __init__(self, image: Gimp.Image, layer: Gimp.Layer) -> None:
        self.image = image
        self.layer = layer
        self.parent = layer.get_parent()
        self.selected = list(image.get_selected_layers())
        self.created: list[Gimp.Layer] = []
        self.added_alpha = False
        self.added_mask = False
        self.old_mask: tuple[bytes, bool, bool, bool] | None = None
        self.hid_layer = False

    def position(self, item: Gimp.Item) -> int:
        return self.image.get_item_position(item)

    def insert(self, new: Gimp.Layer, position: int) -> Gimp.Layer:
        self.image.insert_layer(new, self.parent, position)
        self.created.append(new)
        return new

    def person_layer(self, colours: Gimp.Layer | None) -> Gimp.Layer:
        """A copy of the photo layer, directly above it, without its old mask; with ``colours`` (Edge=
        colours), the pixels where the matte is soft hold the person's own colours instead of the photo's."""
        copy = self.layer.copy()
        self.insert(copy, self.position(self.layer))
        copy.set_visible(True)
        if copy.get_mask() is not None:
            copy.remove_mask(Gimp.MaskApplyMode.DISCARD)
        if colours is None:
            return copy
        edge = Gimp.Layer.new_from_drawable(colours, self.image)
        self.insert(edge, self.position(copy))
        edge.set_offsets(*self.layer.get_offsets()[1:])
        edge.set_visible(True)
        edge.set_opacity(100.0)
        edge.set_mode(Gimp.LayerMode.NORMAL)
        merged = self.image.merge_down(edge, Gimp.MergeType.CLIP_TO_BOTTOM_LAYER)
        self.forget(copy, edge)
        self.created.append(merged)
        return merged

    def forget(self, *layers: Gimp.Layer) -> None:
        self.created = [c for c in self.created if all(c.get_id() != x.get_id() for x in layers)]

    def background_layer(self, background: Background | None, below: Gimp.Layer) -> Gimp.Layer | None:
        """Insert the background directly under ``below``, at the photo layer's offsets and size."""
        if background is None:  # transparent
            return None
        w, h = self.layer.get_width(), self.layer.get_height()
        ox, oy = self.layer.get_offsets()[1:]
        if background.layer is None:  # colour
            gray = self.image.get_base_type() == Gimp.ImageBaseType.GRAY
            kind = Gimp.ImageType.GRAY_IMAGE if gray else Gimp.ImageType.RGB_IMAGE
            bg = Gimp.Layer.new(self.image, BACKGROUND_LAYER_NAME, w, h, kind, 100.0, Gimp.LayerMode.NORMAL)
            self.insert(bg, self.position(below) + 1)
            Gimp.context_push()
            try:
                Gimp.context_set_background(background.color)
                bg.fill(Gimp.FillType.BACKGROUND)
            finally:
                Gimp.context_pop()
        else:
            bg = Gimp.Layer.new_from_drawable(background.layer, self.image)
            bg.set_name(BACKGROUND_LAYER_NAME)
            self.insert(bg, self.position(below) + 1)
        bg.set_offsets(ox, oy)
        bg.set_visible(True)
        return bg

    def set_mask(self, target: Gimp.Layer, mask: bytes, record: bool) -> None:
        """Give ``target`` a layer mask holding ``mask`` (replacing any mask it had)."""
        old = target.get_mask()
        if old is not None:
            if record:
                self.old_mask = (
                    read_pixels(old, "Y float", 4, lambda _f: None),
                    target.get_apply_mask(),
                    target.get_show_mask(),
                    target.get_edit_mask(),
                )
            target.remove_mask(Gimp.MaskApplyMode.DISCARD)
        if not target.has_alpha():
            target.add_alpha()
            self.added_alpha = record
        new = target.create_mask(Gimp.AddMaskType.WHITE)
        target.add_mask(new)
        self.added_mask = record
        write_pixels(new, "Y u8", mask)  # layer masks are linear: "Y u8" keeps soft edges exact

    def rollback(self) -> None:
        """Revert every recorded change, newest first; keep going if one step fails."""
        steps: list[tuple[str, Callable[[], object]]] = []
        image, lyr = self.image, self.layer
        for item in reversed(self.created):
            steps.append(("remove a created layer", lambda item=item: item.is_valid() and image.remove_layer(item)))
        if self.added_mask:
            discard = Gimp.MaskApplyMode.DISCARD
            steps.append(("remove the new mask", lambda: lyr.get_mask() and lyr.remove_mask(discard)))
        if self.added_alpha:
            steps.append(("remove the added alpha channel", lyr.flatten))
        if self.old_mask is not None:
            steps.append(("restore the old mask", self._restore_old_mask))
        if self.hid_layer:
            steps.append(("show the layer again", lambda: lyr.set_visible(True)))
        steps.append(("restore the layer selection", lambda: self.image.set_selected_layers(self.selected)))
        for what, step in steps:
            try:
                step()
            except Exception as exc:
                log(f"rollback: could not {what}: {exc}")
        self.created.clear()

    def _restore_old_mask(self) -> None:
        data, apply_mask, show_mask, edit_mask = self.old_mask
        mask = self.layer.create_mask(Gimp.AddMaskType.WHITE)
        self.layer.add_mask(mask)
        write_pixels(mask, "Y float", data)
        self.layer.set_apply_mask(apply_mask)
        self.layer.set_show_mask(show_mask)
        self.layer.set_edit_mask(edit_mask)



def fault_point(name: str) -> None:
    """Raise here when the test hook names this point (``FAULT_ENV``)."""
    if os.environ.get(FAULT_ENV) == name:
        raise RuntimeError(f"fault injected at {name!r} ({FAULT_ENV})")


def apply_edit(image: Gimp.Image, layer: Gimp.Layer, answer: Answer, background: Background | None, output: str,
               progress: Progress) -> tuple[Gimp.Layer, Gimp.Layer | None]:
    """Change the user's image; returns (layer holding the person, background layer or None)."""
    edit = Edit(image, layer)
    progress.stage("building the layers", 0.7, 1.0)
    try:
        if output == "mask" and answer.colours is None:
            result, bg = mask_on_photo(edit, answer, background, progress)
        elif output == "mask":
            result, bg = mask_on_person_copy(edit, answer, background, progress)
        else:
            result, bg = composite(edit, answer, background, output, progress)
        image.set_selected_layers([result])
        progress(1.0)
        return result, bg
    except Exception:
        edit.rollback()
        raise


def mask_on_photo(edit: Edit, answer: Answer, background: Background | None,
                  progress: Progress) -> tuple[Gimp.Layer, Gimp.Layer | None]:
    """Output=mask: the mask on the photo layer itself, the background layer under it."""
    bg = edit.background_layer(background, below=edit.layer)
    progress(0.4)
    edit.set_mask(edit.layer, answer.mask, record=True)
    progress(0.9)
    fault_point("edit")
    return edit.layer, bg


def mask_on_person_copy(edit: Edit, answer: Answer, background: Background | None,
                        progress: Progress) -> tuple[Gimp.Layer, Gimp.Layer | None]:
    """Output=mask with the person's edge colours: the mask on a copy that holds them, the photo hidden.

    As in other editors, where decontaminated colours always go to a new masked layer: changing the
    photo's own pixels would not be non-destructive. The photo layer stays, untouched, under the copy.
    """
    layer = edit.layer
    result = edit.person_layer(answer.colours)
    progress(0.3)
    edit.set_mask(result, answer.mask, record=False)
    bg = edit.background_layer(background, below=result)
    progress(0.9)
    fault_point("edit")
    result.set_name(f"{layer.get_name()} (person)")
    layer.set_visible(False)
    edit.hid_layer = True
    return result, bg


def composite(edit: Edit, answer: Answer, background: Background | None, output: str,
              progress: Progress) -> tuple[Gimp.Layer, None]:
    """Output=new-layer (the composite above the hidden photo) or apply (the composite replaces the photo)."""
    image, layer = edit.image, edit.layer
    copy = edit.person_layer(answer.colours)  # directly above the original
    edit.set_mask(copy, answer.mask, record=False)
    progress(0.3)
    bg = edit.background_layer(background, below=copy)
    progress(0.5)
    if bg is not None:
        result = image.merge_down(copy, Gimp.MergeType.EXPAND_AS_NECESSARY)
        edit.forget(copy, bg)
        edit.created.append(result)
    else:
        copy.remove_mask(Gimp.MaskApplyMode.APPLY)
        result = copy
    progress(0.8)
    fault_point("edit")
    if output == "apply":
        name = layer.get_name()
        image.remove_layer(layer)  # the last real step: nothing after it may fail
        try:
            result.set_name(name)  # only now is the name free (else GIMP makes it "name #1")
        except Exception as exc:
            log("could not rename the result layer:", exc)
    else:
        result.set_name(f"{layer.get_name()} (background replaced)")
        layer.set_visible(False)
        edit.hid_layer = True
    return result, None
