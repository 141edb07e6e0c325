"""Local operations: pure Pillow functions that run in the graph, cached like edits.

``@eg.operation(version="1")`` turns a function ``f(images, **params) -> PIL.Image`` into
an :class:`Operation`: its key is sha256 over its qualified name, its version, its
parameters (canonical JSON) and its inputs' content hashes, and its output is stored as
PNG, so changing a parameter or bumping the version re-runs it and only what depends on
it. The built-ins (``crop``, ``resize``, ``pad``, ``composite``, ``grid``,
``mask_from_alpha``, ``box_mask``) are used as ``g.op(eg.ops.crop, car, box=(...))``.

Masks: a mask is an image whose pixels at least half white (``>= 128`` once converted
to greyscale) are "in the mask". Feathering softens a mask outward: a pixel at Euclidean
distance ``d`` from the mask gets ``255 * (1 - d / feather)`` (rounded), and every pixel
at ``feather`` or farther gets exactly 0, so compositing through it leaves those pixels
untouched.
"""

from __future__ import annotations

import functools
import inspect
import io
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal, get_type_hints

from PIL import Image, ImageChops, ImageColor, ImageOps
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model
from pydantic_core import PydanticSerializationError, to_jsonable_python

from .errors import GraphError, OperationError
from .keys import canonical_json, content_hash
from .requests import SCHEMA_VERSION

__all__ = [
    "MAX_FEATHER",
    "MAX_OUTPUT_PIXELS",
    "Operation",
    "box_mask",
    "composite",
    "crop",
    "encode_png",
    "feather_mask",
    "grid",
    "mask_from_alpha",
    "operation",
    "pad",
    "resize",
]

#: The widest feather supported: distances are computed in 8-bit images, 255 meaning "far".
MAX_FEATHER = 254

#: The largest image an operation may make: a source's default limit (``max_source_pixels``).
MAX_OUTPUT_PIXELS = 40_000_000

_FAR = 255
_RESAMPLE = Image.Resampling.LANCZOS

ImageFunction = Callable[..., Image.Image]


class Operation:
    """A pure image function registered with :func:`operation`: callable, and a graph node.

    ``name`` is the function's qualified name (module and qualname) and ``version`` the
    version it was declared with: both are part of every key. Calling the operation
    directly (``eg.ops.crop([image], box=(0, 0, 10, 10))``) checks the parameters and
    runs it, exactly as the graph does.
    """

    def __init__(self, function: ImageFunction, *, version: str, inputs: tuple[int, int | None]):
        self.function = function
        self.name = f"{function.__module__}.{function.__qualname__}"
        self.version = version
        self.min_inputs, self.max_inputs = inputs
        self._parameters = _parameter_model(function, self.name)
        functools.update_wrapper(self, function)

    def __repr__(self) -> str:
        return f"<Operation {self.name} version={self.version!r}>"

    def __call__(self, images: Sequence[Image.Image], /, **params: Any) -> Image.Image:
        checked = self.check_parameters(params)
        self.check_inputs(len(images))
        return self.apply(images, checked)

    def check_parameters(self, params: Mapping[str, Any], node: str | None = None) -> dict[str, Any]:
        """The parameters validated against the function's signature, as plain JSON.

        Raises GraphError naming the node (or the operation) and the field.
        """
        where = f"node {node!r}" if node is not None else f"operation {self.name}"
        try:
            validated = self._parameters.model_validate(dict(params))
        except ValidationError as exc:
            error = exc.errors()[0]
            field = ".".join(str(part) for part in error["loc"]) or "parameters"
            message = error["msg"]
            if error["type"] == "extra_forbidden":
                known = ", ".join(self._parameters.model_fields) or "none"
                message = f"unknown parameter of {self.name} (it takes: {known})"
            elif error["type"] == "missing":
                raise GraphError(f"{where}: {field}: required by {self.name}; pass {field}=...") from None
            raise GraphError(f"{where}: {field}: {message}, got {error.get('input')!r}") from None
        plain = {}
        for field in self._parameters.model_fields:
            try:
                plain[field] = to_jsonable_python(getattr(validated, field))
                canonical_json(plain[field])
            except (TypeError, PydanticSerializationError):
                raise GraphError(
                    f"{where}: {field}: {type(getattr(validated, field)).__name__} has no "
                    "canonical JSON form; pass numbers, strings, lists or dicts"
                ) from None
        width, height = plain.get("width"), plain.get("height")
        if isinstance(width, int) and isinstance(height, int) and (
            width * height > MAX_OUTPUT_PIXELS
        ):
            raise GraphError(
                f"{where}: width: {width} x {height} = {width * height:,} pixels is more than "
                f"an operation may make ({MAX_OUTPUT_PIXELS:,}); FLUX.2 works at up to "
                "1920 x 1920"
            )
        return plain

    def check_inputs(self, count: int, node: str | None = None) -> None:
        """Raise GraphError when ``count`` inputs is not what this operation takes."""
        low, high = self.min_inputs, self.max_inputs
        if low <= count and (high is None or count <= high):
            return
        where = f"node {node!r}" if node is not None else f"operation {self.name}"
        wanted = (
            f"at least {low}" if high is None else f"{low}" if low == high else f"{low} to {high}"
        )
        raise GraphError(f"{where}: inputs: {self.name} takes {wanted} input image(s), got {count}")

    def key(self, parameters: Mapping[str, Any], input_hashes: Sequence[str]) -> str:
        """The content-hash key of this operation applied to inputs with these hashes."""
        material = {
            "schema": SCHEMA_VERSION,
            "operation": self.name,
            "version": self.version,
            "parameters": dict(parameters),
            "inputs": list(input_hashes),
        }
        return content_hash(canonical_json(material))

    def apply(self, images: Sequence[Image.Image], parameters: Mapping[str, Any]) -> Image.Image:
        """Run the function on ``images`` with checked parameters; OperationError if it fails."""
        values = self._parameters.model_validate(dict(parameters))
        arguments = {field: getattr(values, field) for field in self._parameters.model_fields}
        try:
            result = self.function(list(images), **arguments)
        except OperationError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure of the function is reported as such
            raise OperationError(f"{self.name} failed: {type(exc).__name__}: {exc}") from exc
        if not isinstance(result, Image.Image):
            raise OperationError(
                f"{self.name} returned {type(result).__name__}, not a PIL.Image.Image"
            )
        _check_output_size(self.name, result.size)
        return result

    def render(self, inputs: Sequence[bytes], parameters: Mapping[str, Any]) -> bytes:
        """Decode ``inputs``, apply the operation, and return its output as PNG bytes."""
        images = []
        for number, data in enumerate(inputs, 1):
            try:
                images.append(decode_upright(data))
            except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
                raise OperationError(f"input {number} is not a readable image: {exc}") from exc
        return encode_png(self.apply(images, parameters))


def decode_upright(data: bytes) -> Image.Image:
    """``data`` decoded and turned as its EXIF orientation says (a phone photo stored on
    its side is shown upright by every viewer): what an operation works on. Its PNG
    output carries no orientation, so it stays upright downstream."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        ImageOps.exif_transpose(image, in_place=True)
        return image


def operation(
    version: str, *, inputs: int | tuple[int, int | None] | None = None
) -> Callable[[ImageFunction], Operation]:
    """Register ``f(images: list[PIL.Image.Image], **params) -> PIL.Image.Image`` as an op.

    ``version`` is part of the key: bump it when the function's output changes, and the
    cache re-runs it (and only what depends on it). ``inputs`` is the number of input
    images it takes: an int, a ``(min, max)`` pair with ``max`` None for no limit, or
    None for any number. Parameters are checked against the function's type hints
    (pydantic) when the node is declared.
    """
    if not isinstance(version, str) or not version.strip():
        raise GraphError(f"operation: version: must be a non-empty str, got {version!r}")
    if inputs is None:
        bounds: tuple[int, int | None] = (0, None)
    elif isinstance(inputs, int):
        bounds = (inputs, inputs)
    else:
        bounds = inputs

    def register(function: ImageFunction) -> Operation:
        return Operation(function, version=version, inputs=bounds)

    return register


def _parameter_model(function: ImageFunction, name: str) -> type[BaseModel]:
    """A pydantic model of the function's parameters after the first (the images)."""
    signature = inspect.signature(function)
    parameters = list(signature.parameters.values())
    if not parameters or parameters[0].kind not in (
        inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD
    ):
        raise GraphError(f"operation {name}: its first parameter must take the list of images")
    hints = get_type_hints(function, include_extras=True)
    fields: dict[str, Any] = {}
    for parameter in parameters[1:]:
        if parameter.kind in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD):
            raise GraphError(
                f"operation {name}: *{parameter.name} / **{parameter.name}: name every "
                "parameter, so that it can be checked and hashed"
            )
        default = ... if parameter.default is inspect.Parameter.empty else parameter.default
        fields[parameter.name] = (hints.get(parameter.name, Any), default)
    config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)
    model: type[BaseModel] = create_model(
        f"{function.__qualname__}_parameters", __config__=config, **fields
    )
    return model


#: The modes Pillow writes as PNG as they are; any other is converted first.
_PNG_MODES = frozenset({"1", "L", "LA", "P", "RGB", "RGBA", "I;16", "I;16B"})


def _png_mode(image: Image.Image) -> Image.Image:
    """``image`` in a mode PNG stores: CMYK, YCbCr, LAB and HSV become RGB; modes with
    alpha (PA, La, RGBa) RGBA; 32-bit and float greyscale (I, F) 8-bit L."""
    if image.mode in _PNG_MODES:
        return image
    if image.mode in ("PA", "RGBa"):
        return image.convert("RGBA")
    if image.mode == "La":
        return image.convert("LA")
    if image.mode.startswith("I") or image.mode == "F":
        return _eight_bit(image).convert("L")
    return image.convert("RGB")


def encode_png(image: Image.Image) -> bytes:
    """``image`` as PNG bytes, written with Pillow's default settings (deterministic).

    An image in a mode PNG cannot hold (a CMYK result of an operation, say) is converted
    first (see ``_png_mode``) rather than failing the node.
    """
    buffer = io.BytesIO()
    _png_mode(image).save(buffer, format="PNG")
    return buffer.getvalue()


# ---------------------------------------------------------------------- parameter types


def _check_box(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    x0, y0, x1, y1 = box
    if x0 < 0 or y0 < 0:
        raise ValueError("a box's left and top must be >= 0")
    if x1 <= x0 or y1 <= y0:
        raise ValueError("a box is (left, top, right, bottom) with right > left and bottom > top")
    return box


def _check_colour(colour: str | tuple[int, ...]) -> str | tuple[int, ...]:
    if isinstance(colour, str):
        ImageColor.getrgb(colour)  # ValueError for an unknown name or a bad hex code
        return colour
    if len(colour) not in (3, 4) or not all(0 <= channel <= 255 for channel in colour):
        raise ValueError("a colour is a name, a hex code, or 3 or 4 channels from 0 to 255")
    return colour


Box = Annotated[tuple[int, int, int, int], AfterValidator(_check_box)]
Colour = Annotated[str | tuple[int, ...], AfterValidator(_check_colour)]
Size = Annotated[int, Field(ge=1, le=20_000)]
Feather = Annotated[int, Field(ge=0, le=MAX_FEATHER)]


def _fill(colour: str | tuple[int, ...], mode: str) -> tuple[int, ...] | int:
    """``colour`` as a fill value for an image of ``mode``."""
    rgba = ImageColor.getrgb(colour) if isinstance(colour, str) else tuple(colour)
    if len(rgba) == 3:
        rgba = (*rgba, 255)
    if mode == "RGBA":
        return tuple(rgba)
    if mode == "L":
        grey: int = Image.new("RGB", (1, 1), tuple(rgba[:3])).convert("L").getpixel((0, 0))  # type: ignore[assignment]
        return grey
    return tuple(rgba[:3])


def _eight_bit(image: Image.Image) -> Image.Image:
    """A 16-bit greyscale image (``I;16*``, or ``I`` holding 16-bit values) as ``L``,
    scaled (65535 -> 255), not clipped: Pillow's own conversion turns every value
    above 255 white."""
    if image.mode.startswith("I;16") or image.mode == "I" and image.getextrema()[1] > 255:  # type: ignore[operator]
        return image.convert("I").point(lambda value: value * (1 / 257)).convert("L")
    return image


def _working_mode(image: Image.Image) -> Image.Image:
    """``image`` in a mode every built-in handles: RGB, RGBA or L."""
    if image.mode in ("RGB", "RGBA", "L"):
        return image
    image = _eight_bit(image)
    if image.mode == "L":
        return image
    has_alpha = image.mode in ("LA", "PA", "La", "RGBa") or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")


def _inside(box: tuple[int, int, int, int], image: Image.Image, what: str) -> None:
    right, bottom = box[2], box[3]
    if right > image.width or bottom > image.height:
        raise OperationError(
            f"{what} {box} reaches outside the {image.width}x{image.height} image; "
            f"keep right <= {image.width} and bottom <= {image.height}"
        )


# ---------------------------------------------------------------------- feathering


def _shifted(image: Image.Image, dx: int, dy: int, fill: int) -> Image.Image:
    """``image`` moved by (dx, dy); uncovered pixels are ``fill``."""
    canvas = Image.new("L", image.size, fill)
    canvas.paste(image, (dx, dy))
    return canvas


def _ramp(distance: float, feather: int) -> int:
    return 0 if distance >= feather else round(255 * (1 - distance / feather))


def feather_mask(mask: Image.Image, feather: int) -> Image.Image:
    """The feathered alpha of ``mask``: 255 in it, falling linearly to 0 at ``feather`` px.

    A pixel is in the mask when it is at least half white. Distances are exact
    Euclidean distances (a separable two-pass transform bounded by ``feather``), so a
    pixel at ``feather`` px or farther from the mask is exactly 0.
    """
    if not 0 <= feather <= MAX_FEATHER:
        raise OperationError(f"feather must be from 0 to {MAX_FEATHER}, got {feather}")
    inside = _eight_bit(mask).convert("L").point(lambda value: 255 if value >= 128 else 0)
    area = inside.getbbox()
    if feather == 0 or area is None:
        return inside
    # Only the mask's bounding box and a feather's width around it can be nonzero.
    near = (max(0, area[0] - feather), max(0, area[1] - feather),
            min(inside.width, area[2] + feather), min(inside.height, area[3] + feather))
    alpha = Image.new("L", inside.size, 0)
    alpha.paste(_feathered(inside.crop(near), feather), near[:2])
    return alpha


def _feathered(inside: Image.Image, feather: int) -> Image.Image:
    """The feathered alpha of a 0/255 mask, by a separable distance transform."""
    # Pass 1: g = vertical distance to the nearest mask pixel in the same column (capped).
    vertical = inside.point(lambda value: 0 if value else _FAR)
    for step in range(1, feather + 1):
        marked = inside.point(lambda value, step=step: step if value else _FAR)
        vertical = ImageChops.darker(vertical, _shifted(marked, 0, step, _FAR))
        vertical = ImageChops.darker(vertical, _shifted(marked, 0, -step, _FAR))
    # Pass 2: alpha = max over dx of ramp(sqrt(dx^2 + g(x + dx)^2)) (the ramp falls with
    # distance, so the largest alpha belongs to the nearest mask pixel).
    alpha = Image.new("L", inside.size, 0)
    for dx in range(-feather, feather + 1):
        table = [_ramp(math.hypot(dx, g), feather) if g != _FAR else 0 for g in range(256)]
        alpha = ImageChops.lighter(alpha, _shifted(vertical.point(table), -dx, 0, 0))
    return alpha


def _check_output_size(what: str, size: tuple[int, int]) -> None:
    """OperationError when an image of ``size`` is larger than ``MAX_OUTPUT_PIXELS``."""
    width, height = size
    if width * height > MAX_OUTPUT_PIXELS:
        raise OperationError(
            f"{what}: its output would be {width} x {height} = {width * height:,} pixels, more "
            f"than an operation may make ({MAX_OUTPUT_PIXELS:,}); make it smaller"
        )


def _box_image(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, box)
    return mask


# ---------------------------------------------------------------------- built-ins


@operation(version="1", inputs=1)
def crop(images: list[Image.Image], box: Box, width: Size | None = None,
         height: Size | None = None) -> Image.Image:
    """Cut ``box`` = (left, top, right, bottom) out of the image.

    With ``width`` and ``height`` the cut-out is then scaled to that size (Lanczos).
    """
    (image,) = images
    _inside(box, image, "crop: box")
    if (width is None) != (height is None):
        raise OperationError("crop: give both width and height to scale the cut-out, or neither")
    cut = _working_mode(image).crop(box)
    if width is not None and height is not None and cut.size != (width, height):
        cut = cut.resize((width, height), _RESAMPLE)
    return cut


@operation(version="1", inputs=1)
def resize(images: list[Image.Image], width: Size, height: Size,
           fit: Literal["cover", "contain", "fill"] = "cover") -> Image.Image:
    """Scale to ``width`` x ``height``.

    ``cover`` fills the whole size and crops the overflow evenly from both sides;
    ``contain`` fits the whole image inside the size, so one side may come out shorter
    (pad it to the exact size with ``pad``); ``fill`` stretches to exactly that size.
    """
    (image,) = images
    image = _working_mode(image)
    if fit == "fill":
        return image.resize((width, height), _RESAMPLE)
    scale_x, scale_y = width / image.width, height / image.height
    scale = max(scale_x, scale_y) if fit == "cover" else min(scale_x, scale_y)
    scaled_size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    if fit == "contain":
        scaled_size = (min(scaled_size[0], width), min(scaled_size[1], height))
        return image.resize(scaled_size, _RESAMPLE)
    scaled_size = (max(scaled_size[0], width), max(scaled_size[1], height))
    scaled = image.resize(scaled_size, _RESAMPLE)
    left, top = (scaled.width - width) // 2, (scaled.height - height) // 2
    return scaled.crop((left, top, left + width, top + height))


@operation(version="1", inputs=1)
def pad(images: list[Image.Image], width: Size, height: Size,
        colour: Colour = "white") -> Image.Image:
    """Centre the image on a ``width`` x ``height`` canvas of ``colour``."""
    (image,) = images
    image = _working_mode(image)
    if image.width > width or image.height > height:
        raise OperationError(
            f"pad: the image is {image.width}x{image.height}, larger than {width}x{height}; "
            "resize it first (fit='contain')"
        )
    canvas = Image.new(image.mode, (width, height), _fill(colour, image.mode))
    canvas.paste(image, ((width - image.width) // 2, (height - image.height) // 2))
    return canvas


@operation(version="1", inputs=(2, 3))
def composite(images: list[Image.Image], box: Box | None = None,
              feather: Feather = 0) -> Image.Image:
    """Lay image 2 (the overlay) over image 1 (the base), optionally through image 3 (a mask).

    The overlay is scaled to ``box`` (default: the whole base) and pasted there. With a
    mask (the base's size), only the mask's pixels take the overlay: with ``feather=0``
    the mask is used as it is, as an alpha channel; with ``feather > 0`` its edge is
    softened outward over ``feather`` px. Without a mask, ``feather`` blends the overlay's
    own edges in over that width. An overlay with an alpha channel is also laid through
    it. Pixels where the resulting alpha is 0, and everything outside ``box``, keep the
    base's exact values.
    """
    base, overlay = _working_mode(images[0]), _working_mode(images[1])
    mask = images[2] if len(images) == 3 else None
    box = box or (0, 0, base.width, base.height)
    _inside(box, base, "composite: box")
    x0, y0, x1, y1 = box
    size = (x1 - x0, y1 - y0)
    if overlay.size != size:
        overlay = overlay.resize(size, _RESAMPLE)
    if mask is not None:
        if mask.size != base.size:
            raise OperationError(
                f"composite: the mask is {mask.width}x{mask.height} but the base is "
                f"{base.width}x{base.height}; a mask must have the base's size"
            )
        if feather == 0:
            alpha = _eight_bit(mask).convert("L").crop(box)
        else:
            # Only the box and a feather's width around it can reach the box.
            near = (max(0, x0 - feather), max(0, y0 - feather),
                    min(base.width, x1 + feather), min(base.height, y1 + feather))
            soft = feather_mask(mask.crop(near), feather)
            alpha = soft.crop((x0 - near[0], y0 - near[1], x1 - near[0], y1 - near[1]))
    else:
        inner = (feather, feather, size[0] - feather, size[1] - feather)
        if inner[2] <= inner[0] or inner[3] <= inner[1]:
            raise OperationError(
                f"composite: feather {feather} is too wide for a {size[0]}x{size[1]} overlay"
            )
        alpha = feather_mask(_box_image(size, inner), feather)
    if overlay.mode == "RGBA":
        alpha = ImageChops.multiply(alpha, overlay.getchannel("A"))
    if base.mode not in ("RGB", "RGBA"):
        base = base.convert("RGB")
    overlay = overlay.convert(base.mode)
    result = base.copy()
    region = base.crop(box)
    result.paste(Image.composite(overlay, region, alpha), (x0, y0))
    return result


@operation(version="1", inputs=(1, None))
def grid(images: list[Image.Image], columns: Size | None = None,
         gap: Annotated[int, Field(ge=0, le=2_000)] = 8,
         background: Colour = "white") -> Image.Image:
    """Lay the inputs out left to right, top to bottom, ``columns`` per row (default: one row).

    Every cell is as large as the largest input; each image is centred in its cell;
    ``gap`` px of ``background`` separate the cells and frame the sheet.
    """
    count = len(images)
    columns = min(columns or count, count)
    rows = math.ceil(count / columns)
    cell_w = max(image.width for image in images)
    cell_h = max(image.height for image in images)
    size = (columns * cell_w + (columns + 1) * gap, rows * cell_h + (rows + 1) * gap)
    _check_output_size("grid", size)  # before allocating it
    has_alpha = any(_working_mode(image).mode == "RGBA" for image in images)
    mode = "RGBA" if has_alpha else "RGB"
    sheet = Image.new(mode, size, _fill(background, mode))
    for index, image in enumerate(images):
        row, column = divmod(index, columns)
        left = gap + column * (cell_w + gap) + (cell_w - image.width) // 2
        top = gap + row * (cell_h + gap) + (cell_h - image.height) // 2
        tile = _working_mode(image).convert(mode)
        sheet.paste(tile, (left, top), tile if mode == "RGBA" else None)
    return sheet


@operation(version="1", inputs=1)
def mask_from_alpha(images: list[Image.Image]) -> Image.Image:
    """The image's alpha channel as a greyscale mask (all white when it has none)."""
    (image,) = images
    image = _working_mode(image)
    if image.mode == "RGBA":
        return image.getchannel("A")
    return Image.new("L", image.size, 255)


@operation(version="1", inputs=0)
def box_mask(images: list[Image.Image], width: Size, height: Size, box: Box,
             feather: Feather = 0) -> Image.Image:
    """A ``width`` x ``height`` mask: white inside ``box``, feathered outward over ``feather`` px."""
    if box[2] > width or box[3] > height:
        raise OperationError(f"box_mask: box {box} reaches outside the {width}x{height} mask")
    return feather_mask(_box_image((width, height), box), feather)
