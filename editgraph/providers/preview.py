"""Preview: an offline, free, deterministic provider that draws what an edit was given."""

from __future__ import annotations

import asyncio
import colorsys
import contextlib
import hashlib
import io
import json
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont, ImageOps

from ..colours import HEX_COLOUR
from ..errors import ProviderError
from ..requests import EditRequest, GeneratedImage, Reference, media_type_of
from .registry import register

__all__ = ["Preview"]

_LABEL = "PREVIEW \u2014 no model was called"

# "image #123" names a reference, not a colour (as in structured prompts).
_ENDS_WITH_IMAGE_WORD = re.compile(r"\bimages?\s*$", re.IGNORECASE)
_MAX_SWATCHES = 12

_INK = (28, 28, 32)
_MUTED_INK = (84, 84, 92)
_PAPER = (255, 255, 255)

# Code points the font of ImageFont.load_default(size=...) (a subset of Aileron) can
# draw; anything else would render as a box, so it is approximated first.
_DRAWABLE = frozenset(
    [*range(0x20, 0x7F), 0xA9, 0xAB, 0xB0, 0xB1, 0xB4, 0xB7, 0xBB, 0x2018, 0x2019]
    + [0x201C, 0x201D, 0x2026, 0x2039, 0x203A, 0x2044, 0x2122]
)
_APPROXIMATIONS = {
    "\u2013": "-",
    "\u2014": "-",
    "\u2212": "-",
    "\u00d7": "x",
    "\u2192": "->",
    "\u00a0": " ",
    "\t": "    ",
    "\u00df": "ss",
    "\u00e6": "ae",
    "\u00c6": "AE",
    "\u00f8": "o",
    "\u00d8": "O",
    "\u0153": "oe",
    "\u0152": "OE",
}


class Preview:
    """A provider that calls no model: it draws the request it was given.

    The image, at the requested size and format, shows the references as numbered
    thumbnails ("image 1", "image 2", ...), the rewritten prompt, a swatch for every hex
    colour the prompt names, and the model, seed and size. Its background tint follows
    the seed. The same request always gives the same bytes, so it is a free, offline
    stand-in for checking a graph's wiring, its prompts and its cache behaviour.

    The edit of a region edit (``NAME.edit``, whose image 1 is ``NAME.crop``) shows the
    crop it was given, tinted with the prompt's first hex colour (else the seed's hue)
    and labelled, so the composite shows exactly which pixels the edit replaced.
    """

    name = "preview"

    def __repr__(self) -> str:
        return "Preview()"

    async def generate(self, request: EditRequest) -> GeneratedImage:
        """Draw ``request`` as an image; raise ProviderError if a reference won't decode."""
        # Rendering takes a few milliseconds of CPU, much of it in Pillow code that
        # releases the GIL: a worker thread keeps the event loop free for other edits.
        data = await asyncio.to_thread(_render_preview, request)
        media_type = media_type_of(request.output_format) or "application/octet-stream"
        return GeneratedImage(data=data, media_type=media_type)


@dataclass(frozen=True)
class _Box:
    """A rectangle of the canvas: left, top, width, height."""

    x: int
    y: int
    w: int
    h: int


class _Fonts:
    """The built-in font at any pixel size, loaded once per render (not shared by threads)."""

    def __init__(self) -> None:
        self._by_size: dict[int, ImageFont.FreeTypeFont] = {}

    def __call__(self, size: int) -> ImageFont.FreeTypeFont:
        font = self._by_size.get(size)
        if font is None:
            default = ImageFont.load_default(size=size)
            if not isinstance(default, ImageFont.FreeTypeFont):
                raise ProviderError("the preview provider needs Pillow built with FreeType")
            # The basic layout engine gives the same pixels with or without libraqm.
            font = default.font_variant(layout_engine=ImageFont.Layout.BASIC)
            self._by_size[size] = font
        return font


def _render_preview(request: EditRequest) -> bytes:
    """Draw the preview image of ``request`` and encode it in its output format."""
    if _is_region_edit(request):
        return _render_region_preview(request)
    width, height = request.width, request.height
    # One "unit" is a pixel at 1024x768; a narrow side of the canvas limits it.
    unit = max(0.3, min(math.sqrt(width * height) / 887, min(width, height) / 320))
    pad = max(4, round(16 * unit))
    fonts = _Fonts()
    label_font = fonts(max(9, round(15 * unit)))
    caption_font = fonts(max(9, round(16 * unit)))
    footer_font = fonts(max(8, round(13 * unit)))

    background, accent = _seed_colours(request.seed)
    canvas = Image.new("RGB", (width, height), background)
    draw = ImageDraw.Draw(canvas)

    header_h = _line_height(label_font) + pad
    draw.rectangle((0, 0, width, header_h), fill=accent)
    _draw_header(draw, _Box(pad, 0, width - 2 * pad, header_h), label_font)

    footer_h = _line_height(footer_font) + pad
    footer = _Box(pad, height - footer_h, width - 2 * pad, footer_h)
    _draw_footer(draw, request, footer, footer_font)

    top, bottom = header_h + pad, footer.y - pad // 2
    available = max(0, bottom - top)
    colours = _hex_colours(request.prompt)
    band_h = min(round(available * 0.14), round(84 * unit)) if colours else 0
    refs_h = round(available * 0.46) if request.references else 0
    if refs_h:
        refs = _Box(pad, top, width - 2 * pad, refs_h)
        _draw_references(canvas, draw, request, refs, caption_font)
        top += refs_h + pad
    if band_h:
        band = _Box(pad, bottom - band_h, width - 2 * pad, band_h)
        _draw_swatches(draw, colours, band, fonts(max(8, min(round(15 * unit), band_h // 3))))
        bottom = band.y - pad
    prompt_box = _Box(pad, top, width - 2 * pad, bottom - top)
    _draw_prompt(draw, _readable_prompt(request.prompt), prompt_box, fonts, unit)
    return _encode(canvas, request.output_format)


def _is_region_edit(request: EditRequest) -> bool:
    """True for the edit of a region edit: ``NAME.edit`` whose image 1 is ``NAME.crop``."""
    base, dot, last = request.node.rpartition(".")
    return (
        bool(dot) and last == "edit" and bool(request.references)
        and request.references[0].source == f"{base}.crop"
        and request.references[0].data is not None
    )


def _render_region_preview(request: EditRequest) -> bytes:
    """The crop a region edit was given, tinted and labelled, at the requested size."""
    crop = request.references[0]
    assert crop.data is not None
    width, height = request.width, request.height
    shown = _thumbnail(crop.data, width, height, request.node, "reference image 1 (the crop)")
    if shown.size != (width, height):
        shown = shown.resize((width, height), Image.Resampling.BICUBIC)
    colours = _hex_colours(request.prompt)
    tint = colours[0][1] if colours else _seed_colours(request.seed)[1]
    canvas = Image.blend(shown, Image.new("RGB", (width, height), tint), 0.45)
    draw = ImageDraw.Draw(canvas)
    font = _Fonts()(max(10, round(min(width, height) / 28)))
    band = _line_height(font) + 8
    draw.rectangle((0, 0, width, band), fill=tint)
    luminance = 0.299 * tint[0] + 0.587 * tint[1] + 0.114 * tint[2]
    draw.text((8, 4), _fit_line(_drawable(_LABEL + " (region edit)"), font, width - 16),
              font=font, fill=_INK if luminance > 140 else _PAPER)
    return _encode(canvas, request.output_format)


def _seed_colours(seed: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
    """A pale background and a dark accent of one hue picked by the seed."""
    digest = hashlib.sha256(str(seed).encode()).digest()
    hue = int.from_bytes(digest[:2], "big") / 65536
    return _hls(hue, 0.92, 0.5), _hls(hue, 0.28, 0.45)


def _hls(hue: float, lightness: float, saturation: float) -> tuple[int, int, int]:
    red, green, blue = colorsys.hls_to_rgb(hue, lightness, saturation)
    return round(red * 255), round(green * 255), round(blue * 255)


def _draw_header(draw: ImageDraw.ImageDraw, box: _Box, font: ImageFont.FreeTypeFont) -> None:
    """The "no model was called" label.

    Nothing outside the cache key (node name, source paths) is drawn: two edits with the
    same key share one image.
    """
    label = _drawable(_LABEL)
    y = box.y + (box.h - _line_height(font)) // 2
    draw.text((box.x, y), label, font=font, fill=_PAPER)


def _draw_footer(
    draw: ImageDraw.ImageDraw, request: EditRequest, box: _Box, font: ImageFont.FreeTypeFont
) -> None:
    """Model id, seed, size, format and any sampling parameters, in one small line."""
    parts = [request.model, f"seed {request.seed}", f"{request.width}x{request.height}"]
    if request.steps is not None:
        parts.append(f"steps {request.steps}")
    if request.guidance is not None:
        parts.append(f"guidance {request.guidance:g}")
    parts.append(request.output_format)
    line = _fit_line(_drawable(" \u00b7 ".join(parts)), font, box.w)
    draw.text(
        (box.x, box.y + (box.h - _line_height(font)) // 2), line, font=font, fill=_MUTED_INK
    )


def _draw_references(
    canvas: Image.Image,
    draw: ImageDraw.ImageDraw,
    request: EditRequest,
    box: _Box,
    font: ImageFont.FreeTypeFont,
) -> None:
    """Each reference as a thumbnail in order, captioned "image N" and its source."""
    count = len(request.references)
    gap = max(4, box.w // 60)
    cell_w = max(1, (box.w - gap * (count - 1)) // count)
    caption_h = _line_height(font) + gap // 2
    image_h = max(1, box.h - caption_h)
    for index, reference in enumerate(request.references):
        cell = _Box(box.x + index * (cell_w + gap), box.y, cell_w, image_h)
        if reference.data is None:
            _draw_placeholder(draw, reference, cell, font)
        else:
            name = f"reference image {index + 1} ({reference.source})"
            thumbnail = _thumbnail(reference.data, cell.w, cell.h, request.node, name)
            x = cell.x + (cell.w - thumbnail.width) // 2
            y = cell.y + (cell.h - thumbnail.height) // 2
            draw.rectangle(
                (x - 1, y - 1, x + thumbnail.width, y + thumbnail.height), fill=_INK
            )
            canvas.paste(thumbnail, (x, y))
        caption = _fit_line(
            f"image {index + 1} \u00b7 {reference.hash[:8]}", font, cell_w
        )
        draw.text(
            (cell.x + cell_w // 2, cell.y + image_h + gap // 2),
            caption,
            font=font,
            fill=_INK,
            anchor="ma",
        )


def _thumbnail(data: bytes, width: int, height: int, node: str, name: str) -> Image.Image:
    """Decode a reference at about the size it is shown, cheaply, as RGB."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            image.draft("RGB", (width, height))  # JPEG: decode at 1/2, 1/4 or 1/8 scale
            image.load()
            ImageOps.exif_transpose(image, in_place=True)
            return _fit_image(_flatten(image), width, height)
    # Pillow reports undecodable bytes as any of these, depending on the format.
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise ProviderError(
            f"node {node!r}: {name} is not a readable image: {exc}",
            node=node,
        ) from exc


def _flatten(image: Image.Image) -> Image.Image:
    """``image`` as RGB, transparent parts shown over white."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, _PAPER + (255,))
        flat.alpha_composite(rgba)
        return flat.convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def _fit_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """``image`` scaled up or down to fit ``width`` x ``height``, keeping its shape."""
    scale = min(width / image.width, height / image.height)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    return image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)


def _draw_placeholder(
    draw: ImageDraw.ImageDraw, reference: Reference, box: _Box, font: ImageFont.FreeTypeFont
) -> None:
    """A box for a reference known only by its URL (the preview fetches nothing)."""
    draw.rectangle(
        (box.x, box.y, box.x + box.w - 1, box.y + box.h - 1),
        fill=(236, 236, 240),
        outline=_MUTED_INK,
        width=max(1, box.w // 160),
    )
    lines = ["not downloaded", reference.hash[:8]]
    line_h = _line_height(font)
    lines = lines[: max(1, box.h // line_h)]
    y = box.y + (box.h - line_h * len(lines)) // 2
    for line in lines:
        draw.text((box.x + box.w // 2, y), line, font=font, fill=_MUTED_INK, anchor="ma")
        y += line_h


def _hex_colours(prompt: str) -> list[tuple[str, tuple[int, int, int]]]:
    """The distinct hex colours the prompt names, in order, with their RGB values."""
    found: dict[str, tuple[int, int, int]] = {}
    for match in HEX_COLOUR.finditer(prompt):
        if _ENDS_WITH_IMAGE_WORD.search(prompt, 0, match.start()):
            continue
        digits = match.group(1).upper()
        if len(digits) == 3:
            digits = "".join(digit * 2 for digit in digits)
        code = "#" + match.group(1).upper()
        if code not in found:
            found[code] = (int(digits[0:2], 16), int(digits[2:4], 16), int(digits[4:6], 16))
    return list(found.items())[:_MAX_SWATCHES]


def _draw_swatches(
    draw: ImageDraw.ImageDraw,
    colours: Sequence[tuple[str, tuple[int, int, int]]],
    box: _Box,
    font: ImageFont.FreeTypeFont,
) -> None:
    """One solid swatch per colour across the band, its code written inside it."""
    gap = max(2, box.w // 120)
    share = (box.w - gap * (len(colours) - 1)) // len(colours)
    swatch_w = max(1, min(share, box.h * 4))
    for index, (code, rgb) in enumerate(colours):
        x = box.x + index * (swatch_w + gap)
        draw.rectangle((x, box.y, x + swatch_w - 1, box.y + box.h - 1), fill=rgb, outline=_INK)
        luminance = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
        ink = _INK if luminance > 140 else _PAPER
        text_y = box.y + box.h - _line_height(font) - max(2, box.h // 10)
        draw.text(
            (x + max(3, box.h // 8), text_y),
            _fit_line(code, font, swatch_w - 4),
            font=font,
            fill=ink,
        )


def _readable_prompt(prompt: str) -> str:
    """The prompt as shown: a structured (JSON) prompt pretty-printed, in drawable text."""
    prompt = prompt.replace("\r\n", "\n").replace("\r", "\n")
    if prompt.lstrip().startswith(("{", "[")):
        with contextlib.suppress(json.JSONDecodeError):  # else shown as plain text
            prompt = json.dumps(json.loads(prompt), indent=2, ensure_ascii=False)
    return _drawable(prompt)


def _draw_prompt(
    draw: ImageDraw.ImageDraw, text: str, box: _Box, fonts: _Fonts, unit: float
) -> None:
    """The prompt wrapped in the largest size that fits the box, else cut with an ellipsis."""
    if box.h <= 0 or box.w <= 0:
        return
    smallest = max(9, round(12 * unit))
    size = max(smallest, round(30 * unit))
    while True:
        font = fonts(size)
        line_h = _line_height(font)
        lines = _wrap(text, font, box.w)
        if len(lines) * line_h <= box.h or size == smallest:
            break
        size = max(smallest, int(size * 0.85))
    fitting = box.h // line_h
    if fitting == 0:
        return
    if len(lines) > fitting:
        lines = lines[:fitting]
        lines[-1] = _fit_line(lines[-1] + " \u2026", font, box.w)
    y = box.y
    for line in lines:
        draw.text((box.x, y), line, font=font, fill=_INK)
        y += line_h


def _wrap(text: str, font: ImageFont.FreeTypeFont, width: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels; keeps each line's indent, splits long words."""
    widths: dict[str, float] = {}

    def measure(piece: str) -> float:
        if piece not in widths:
            widths[piece] = font.getlength(piece)
        return widths[piece]

    space = measure(" ")
    lines: list[str] = []
    for paragraph in text.split("\n"):
        words = paragraph.lstrip(" ")
        indent = paragraph[: len(paragraph) - len(words)]
        indent_w = measure(indent)
        if indent_w > width / 2:
            indent, indent_w = "", 0.0
        line, line_w, has_word = indent, indent_w, False
        for word in words.split(" "):
            needed = measure(word) + (space if has_word else 0.0)
            if line_w + needed <= width:
                line += f" {word}" if has_word else word
                line_w += needed
                has_word = True
                continue
            if has_word:
                lines.append(line)
            while indent_w + measure(word) > width and len(word) > 1:
                head = _fit_line(word, font, width - indent_w, ellipsis=False) or word[0]
                lines.append(indent + head)
                word = word[len(head) :]
            line, line_w, has_word = indent + word, indent_w + measure(word), True
        lines.append(line)
    return lines


def _fit_line(
    text: str, font: ImageFont.FreeTypeFont, width: float, *, ellipsis: bool = True
) -> str:
    """``text`` cut to ``width`` pixels, ending in an ellipsis if cut (unless told not to)."""
    if font.getlength(text) <= width:
        return text
    mark = "\u2026" if ellipsis else ""
    low, high = 0, len(text)
    while low < high:  # the longest prefix that fits together with its mark
        middle = (low + high + 1) // 2
        if font.getlength(text[:middle].rstrip() + mark) <= width:
            low = middle
        else:
            high = middle - 1
    head = text[:low].rstrip()
    return head + mark if head else ""


def _drawable(text: str) -> str:
    """``text`` in characters the built-in font has: accents dropped, dashes as '-'."""
    if all(ord(char) in _DRAWABLE or char == "\n" for char in text):
        return text
    out: list[str] = []
    for char in text:
        if ord(char) in _DRAWABLE or char == "\n":
            out.append(char)
        elif char in _APPROXIMATIONS:
            out.append(_APPROXIMATIONS[char])
        else:
            base = "".join(
                part for part in unicodedata.normalize("NFKD", char) if ord(part) in _DRAWABLE
            )
            out.append(base or "?")
    return "".join(out)


def _line_height(font: ImageFont.FreeTypeFont) -> int:
    """The distance from one baseline to the next, with a little leading."""
    ascent, descent = font.getmetrics()
    return round((ascent + descent) * 1.15)


def _encode(image: Image.Image, output_format: str) -> bytes:
    """Encode as JPEG (quality 90), PNG or WebP; each is byte-for-byte reproducible."""
    buffer = io.BytesIO()
    if output_format == "png":
        image.save(buffer, format="PNG", compress_level=1)
    elif output_format == "webp":
        image.save(buffer, format="WEBP", quality=90)
    else:
        image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


register("preview", Preview)
