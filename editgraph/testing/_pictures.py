"""The fakes' pictures: joined from pre-encoded JPEG blocks, so an answer costs no drawing.

Both fakes answer with these: FakeTogether (JPEG and PNG) and FakeBFL (JPEG, PNG and
WebP). A picture is deterministic in its render key (a digest of everything that decides
it) and shows the references it was given.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import io
import json
import random
import re
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from PIL import Image, ImageDraw, ImageFont, ImageOps

__all__ = [
    "Animated",
    "Orientation",
    "ReferenceTiles",
    "Tile",
    "UnreadableImage",
    "check_reading",
    "decode_tile",
    "is_quick",
    "render",
    "render_key",
    "result_tile",
]


#: How a fake reads a reference's EXIF orientation tag: as a viewer does ("honour"), or
#: not at all ("ignore"). Whether FLUX.2's services read it is not documented.
Orientation = Literal["ignore", "honour"]
#: How a fake reads an animated reference: its first frame, or a refusal (as a service
#: that takes only stills might answer). Not documented either.
Animated = Literal["first_frame", "refuse"]
ORIENTATIONS: Final = ("ignore", "honour")
ANIMATED: Final = ("first_frame", "refuse")


def check_reading(exif_orientation: str, animated_references: str) -> None:
    """ValueError unless both are settings a fake knows."""
    if exif_orientation not in ORIENTATIONS:
        raise ValueError(f"exif_orientation must be 'ignore' or 'honour', got {exif_orientation!r}")
    if animated_references not in ANIMATED:
        raise ValueError(
            f"animated_references must be 'first_frame' or 'refuse', got {animated_references!r}"
        )


def render_key(inputs: Mapping[str, object]) -> str:
    """Hex digest of everything that decides a picture (canonical JSON of ``inputs``)."""
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


# A picture is a base (gradient and shapes: one of _LOOKS per size, drawn once) under a
# caption band (the prompt in 16-pixel character cells, then cells coloured by 144 bits
# of the request's digest, so any change of the request shows) and, with references,
# their thumbnails in 64-pixel cells along the bottom.
#
# Why cells of 16 pixels: a JPEG at 4:2:0 is coded in 16 x 16 blocks (MCUs), and with a
# restart marker after every block, each block's bytes stand alone and can be moved to
# any place of a scan coded with the same tables. So each base, one sheet of character
# cells, one sheet of colour cells and each reference's tile are encoded once, and a JPEG
# answer is only joined from those bytes: about 0.05 ms, where encoding the two bands it
# changes cost about 0.3 ms and a whole 1024 x 768 encode several. PNG answers (and a
# JPEG whose pieces would not fit) are drawn and encoded whole from the same cells, so
# both formats show the same picture.
_LOOKS: Final = 16
_CELL: Final = 16  # one JPEG block (MCU) at 4:2:0 subsampling
_TILE_CELLS: Final = 4  # a reference's tile: 4 x 4 cells
_TILE: Final = _TILE_CELLS * _CELL
_SWATCHES: Final = 8  # colour cells per caption row, at the right
_PALETTE_LEVELS: Final = 8  # per channel: 512 colours, 9 bits of the digest per cell
_JPEG_QUALITY: Final = 70
_FIRST_GLYPH, _END_GLYPH = 32, 127  # printable ASCII; the glyph sheet's cell i is byte 32 + i
# Bytes outside it read as "?".
_PRINTABLE: Final = bytes(
    code if _FIRST_GLYPH <= code < _END_GLYPH else ord("?") for code in range(256)
)
_RESTART: Final = re.compile(rb"\xff[\xd0-\xd7]")
_MARKERS: Final = tuple(bytes((0xFF, 0xD0 + index)) for index in range(8))
_END_OF_IMAGE: Final = b"\xff\xd9"

def _look(key: str) -> int:
    """Which base a render key draws on."""
    return int(key[:2], 16) % _LOOKS


@dataclass(frozen=True)
class _Scan:
    """A baseline JPEG with a restart marker after every block, cut into its blocks."""

    header: bytes  # SOI up to and including the start of scan
    tables: bytes  # quantisation and Huffman tables: blocks move only between equal ones
    blocks: tuple[bytes, ...]  # each block's entropy-coded bytes, in raster order


def _encoded_scan(image: Image.Image) -> _Scan | None:
    """``image`` as a JPEG cut into its blocks; None if the encoder did not cut it so."""
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=_JPEG_QUALITY, subsampling="4:2:0",
               restart_marker_blocks=1)
    data = out.getvalue()
    position, tables = 2, []
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        length = int.from_bytes(data[position + 2 : position + 4], "big")
        if marker in (0xC4, 0xDB):  # Huffman and quantisation tables
            tables.append(data[position : position + 2 + length])
        position += 2 + length
        if marker == 0xDA:  # start of scan: the entropy-coded blocks follow
            blocks = tuple(_RESTART.split(data[position : data.rindex(_END_OF_IMAGE)]))
            if len(blocks) != (image.width // _CELL) * (image.height // _CELL):
                return None
            return _Scan(data[:position], b"".join(tables), blocks)
    return None


def _closed_each(blocks: Sequence[bytes], first: int, total: int) -> list[bytes]:
    """Blocks numbered ``first``... each followed by its restart marker, the image's last
    block by the end-of-image marker."""
    pieces = [block + _MARKERS[index & 7] for index, block in enumerate(blocks, start=first)]
    if first + len(blocks) == total:
        pieces[-1] = blocks[-1] + _END_OF_IMAGE
    return pieces


def _closed(blocks: Sequence[bytes], first: int, total: int) -> bytes:
    """``_closed_each``, joined."""
    return b"".join(_closed_each(blocks, first, total))


class Tile:
    """A reference as a result shows it: its thumbnail on a black 64 x 64 cell."""

    def __init__(self, thumbnail: Image.Image) -> None:
        small = thumbnail.copy()
        small.thumbnail((_TILE - 8, _TILE - 8))
        self.image = Image.new("RGB", (_TILE, _TILE))
        self.image.paste(small, (4, _TILE - small.height - 4))
        self._scan: _Scan | None = None

    @property
    def is_encoded(self) -> bool:
        return self._scan is not None

    def scan(self) -> _Scan | None:
        """Its 16 blocks, encoded on first use."""
        if self._scan is None:
            self._scan = _encoded_scan(self.image)
        return self._scan


@dataclass(frozen=True)
class _Caption:
    """The caption band: the prompt's bytes (one per cell, on both rows), then a blank
    cell, then on each row ``_SWATCHES`` palette colours from the digest."""

    text: bytes
    colours: tuple[int, ...]  # 2 x _SWATCHES: the top row's, then the bottom row's


def _caption(width: int, prompt: str, digest: bytes) -> _Caption:
    # The prompt and a blank cell fill what the swatches leave of a row; a picture too
    # narrow for both shows the swatches alone (as many as fit).
    room = width // _CELL - _SWATCHES
    text = prompt.encode("ascii", "replace").translate(_PRINTABLE)[: max(0, room - 1)]
    bits = int.from_bytes(digest, "big")
    return _Caption(
        text.ljust(max(0, room)),
        tuple([(bits >> shift) & 0x1FF for shift in _SWATCH_SHIFTS]),
    )


_SWATCH_SHIFTS: Final = tuple(9 * index for index in range(2 * _SWATCHES))


def render(
    width: int, height: int, output_format: str, prompt: str, key: str, tiles: Sequence[Tile]
) -> bytes:
    """Cheap, varied, deterministic picture: a base, the prompt, digest colours, references.

    ``output_format``: ``jpeg`` (joined from encoded blocks when it can be), ``png`` or
    ``webp`` (drawn from the same cells and encoded whole).
    """
    look = _look(key)
    caption = _caption(width, prompt, bytes.fromhex(key))
    # References' tiles fill the bottom band, where there is room for it below the caption.
    tiles = tiles[: width // _TILE] if height >= 2 * _CELL + _TILE else []
    if output_format == "jpeg":
        spliced = _spliced_jpeg(width, height, look, caption, tiles)
        if spliced is not None:
            return spliced
    image = _base_picture(width, height, look).copy()
    glyphs, palette = _glyph_sheet(), _palette_sheet()
    for row in range(2):
        top = row * _CELL
        for column, code in enumerate(caption.text):
            left = (code - _FIRST_GLYPH) * _CELL
            image.paste(glyphs.crop((left, top, left + _CELL, top + _CELL)), (column * _CELL, top))
        for offset, colour in enumerate(caption.colours[row * _SWATCHES : (row + 1) * _SWATCHES]):
            cell = palette.crop((colour * _CELL, 0, (colour + 1) * _CELL, _CELL))
            image.paste(cell, ((len(caption.text) + offset) * _CELL, top))
    for index, tile in enumerate(tiles):
        image.paste(tile.image, (index * _TILE, height - _TILE))
    out = io.BytesIO()
    if output_format == "png":
        image.save(out, format="PNG", compress_level=1)
    elif output_format == "webp":
        image.save(out, format="WEBP", quality=_JPEG_QUALITY, method=0)
    else:
        image.save(out, format="JPEG", quality=_JPEG_QUALITY)
    return out.getvalue()


@functools.lru_cache(maxsize=2 * _LOOKS)
def _base_picture(width: int, height: int, look: int) -> Image.Image:
    """Look ``look`` of a ``width`` x ``height`` base: a gradient and a few shapes."""
    rng = random.Random(look)

    def colour() -> tuple[int, int, int]:
        return (rng.randrange(256), rng.randrange(256), rng.randrange(256))

    # Draw small, then scale up.
    scale = 96 / max(width, height)
    small = (max(1, round(width * scale)), max(1, round(height * scale)))
    gradient = rng.choice([Image.linear_gradient, Image.radial_gradient])("L")
    mask = gradient.rotate(rng.choice([0, 90, 180, 270])).resize(small)
    canvas = Image.composite(Image.new("RGB", small, colour()), Image.new("RGB", small, colour()), mask)
    draw = ImageDraw.Draw(canvas)
    for _ in range(rng.randint(3, 7)):
        xs = sorted(rng.randrange(small[0] + 1) for _ in range(2))
        ys = sorted(rng.randrange(small[1] + 1) for _ in range(2))
        box = (xs[0], ys[0], xs[1], ys[1])
        shape = rng.randrange(3)
        if shape == 0:
            draw.ellipse(box, fill=colour())
        elif shape == 1:
            draw.rectangle(box, fill=colour())
        else:
            draw.polygon([(rng.randrange(small[0]), rng.randrange(small[1])) for _ in range(3)], fill=colour())
    return canvas.resize((width, height), Image.Resampling.BILINEAR)


@functools.lru_cache(maxsize=1)
def _glyph_sheet() -> Image.Image:
    """White printable ASCII on black, one character per 16 x 32 cell, left to right."""
    # Pillow's bitmap font drawn at half size and doubled: legible 22-pixel text.
    half = Image.new("L", ((_END_GLYPH - _FIRST_GLYPH) * _CELL // 2, _CELL), 0)
    draw = ImageDraw.Draw(half)
    font = ImageFont.load_default_imagefont()
    for code in range(_FIRST_GLYPH, _END_GLYPH):
        draw.text(((code - _FIRST_GLYPH) * _CELL // 2 + 1, 2), chr(code), fill=255, font=font)
    return half.resize((half.width * 2, 2 * _CELL), Image.Resampling.NEAREST).convert("RGB")


@functools.lru_cache(maxsize=1)
def _palette_sheet() -> Image.Image:
    """The 512 colours of the digest cells, one 16 x 16 cell each, left to right."""
    levels = [round(level * 255 / (_PALETTE_LEVELS - 1)) for level in range(_PALETTE_LEVELS)]
    sheet = Image.new("RGB", (_PALETTE_LEVELS**3 * _CELL, _CELL))
    draw = ImageDraw.Draw(sheet)
    for index in range(_PALETTE_LEVELS**3):
        red, green, blue = index >> 6, (index >> 3) & 7, index & 7
        fill = (levels[red], levels[green], levels[blue])
        draw.rectangle((index * _CELL, 0, (index + 1) * _CELL - 1, _CELL - 1), fill=fill)
    return sheet


@dataclass(frozen=True)
class _EncodedBase:
    """A base's blocks, and the rows an answer takes unchanged, already joined."""

    scan: _Scan
    middle: bytes  # the rows between the caption band and the tiles' band
    bottom: bytes  # the tiles' band without tiles, ending the image
    closed_bottom: tuple[bytes, ...]  # the same blocks one by one, each with its marker


@functools.lru_cache(maxsize=2 * _LOOKS)
def _encoded_base(width: int, height: int, look: int) -> _EncodedBase | None:
    scan = _encoded_scan(_base_picture(width, height, look))
    _ENCODED_BASES.add((width, height, look))
    if scan is None:
        return None
    columns, total = width // _CELL, len(scan.blocks)
    middle_start, bottom_start = 2 * columns, total - _TILE_CELLS * columns
    closed_bottom = _closed_each(scan.blocks[bottom_start:], bottom_start, total)
    return _EncodedBase(
        scan,
        _closed(scan.blocks[middle_start:bottom_start], middle_start, total),
        b"".join(closed_bottom),
        tuple(closed_bottom),
    )


# Which bases _encoded_base has made (a hint only: the cache may have dropped one since).
_ENCODED_BASES: set[tuple[int, int, int]] = set()
# Whether _sheet_blocks has made its sheets (it keeps them: its cache holds one entry).
_SHEETS_MADE = False


@dataclass(frozen=True)
class _Sheets:
    """The glyph and palette cells' blocks, each already followed by each of the 8 restart
    markers (a block's marker depends on its place): joining a caption is then lookups."""

    tables: bytes
    #: glyphs[marker][row][byte]: the top (row 0) or bottom (row 1) half of that character.
    glyphs: tuple[tuple[tuple[bytes, ...], ...], ...]
    #: palette[marker][colour]
    palette: tuple[tuple[bytes, ...], ...]


@functools.lru_cache(maxsize=1)
def _sheet_blocks() -> _Sheets | None:
    """The glyph and palette sheets' blocks, encoded once."""
    global _SHEETS_MADE
    glyphs, palette = _encoded_scan(_glyph_sheet()), _encoded_scan(_palette_sheet())
    _SHEETS_MADE = True
    if glyphs is None or palette is None or glyphs.tables != palette.tables:
        return None
    width = _END_GLYPH - _FIRST_GLYPH
    blank = _MARKERS[0]  # never used: _PRINTABLE maps every byte into the sheet
    return _Sheets(
        glyphs.tables,
        tuple(
            tuple(
                tuple(
                    glyphs.blocks[row * width + code - _FIRST_GLYPH] + marker
                    if _FIRST_GLYPH <= code < _END_GLYPH else blank
                    for code in range(256)
                )
                for row in range(2)
            )
            for marker in _MARKERS
        ),
        tuple(tuple(block + marker for block in palette.blocks) for marker in _MARKERS),
    )


def is_quick(
    width: int, height: int, output_format: str, key: str, tiles: Sequence[Tile]
) -> bool:
    """Whether ``render`` is only joining bytes already encoded (no drawing, no encoding):
    then it is cheaper done at once than handed to a thread."""
    return (
        output_format == "jpeg"
        and _splices(width, height)
        and (width, height, _look(key)) in _ENCODED_BASES
        and _SHEETS_MADE
        and all(tile.is_encoded for tile in tiles[: width // _TILE])
    )


def _splices(width: int, height: int) -> bool:
    """Whether a picture of this size has whole caption rows and a tiles' band to join."""
    return width // _CELL > _SWATCHES and height // _CELL >= 2 + _TILE_CELLS


def result_tile(width: int, height: int, key: str) -> Tile:
    """The tile a result of ``key`` shows when it comes back as a reference: its base's
    thumbnail, known without decoding it."""
    return _base_tile(width, height, _look(key))


@functools.lru_cache(maxsize=2 * _LOOKS)
def _base_tile(width: int, height: int, look: int) -> Tile:
    thumbnail = _base_picture(width, height, look).copy()
    thumbnail.thumbnail((64, 64))
    return Tile(thumbnail)


def _spliced_jpeg(
    width: int, height: int, look: int, caption: _Caption, tiles: Sequence[Tile]
) -> bytes | None:
    """The answer joined from encoded blocks; None if some pieces were coded differently
    (or the picture is too small to hold the caption's rows and the tiles' band)."""
    if not _splices(width, height):
        return None
    base, sheets = _encoded_base(width, height, look), _sheet_blocks()
    if base is None or sheets is None or sheets.tables != base.scan.tables:
        return None
    columns, total = width // _CELL, len(base.scan.blocks)
    parts = [base.scan.header]
    for row in range(2):
        start = row * columns
        parts += [sheets.glyphs[(start + column) & 7][row][code]
                  for column, code in enumerate(caption.text)]
        start += len(caption.text)
        parts += [sheets.palette[(start + offset) & 7][colour]
                  for offset, colour in enumerate(caption.colours[row * _SWATCHES : (row + 1) * _SWATCHES])]
    parts.append(base.middle)
    if not tiles:
        parts.append(base.bottom)
    else:
        bottom_start = total - _TILE_CELLS * columns
        bottom = list(base.closed_bottom)
        for position, tile in enumerate(tiles):
            scan = tile.scan()
            if scan is None or scan.tables != base.scan.tables:
                return None
            for row in range(_TILE_CELLS):
                at = row * columns + position * _TILE_CELLS
                blocks = scan.blocks[row * _TILE_CELLS : (row + 1) * _TILE_CELLS]
                bottom[at : at + _TILE_CELLS] = _closed_each(blocks, bottom_start + at, total)
        parts += bottom
    return b"".join(parts)


class UnreadableImage(Exception):
    """A reference that does not decode as an image; ``index`` is its place in the request."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(reason)
        self.index = index


def decode_tile(
    data: bytes, index: int = 0, *, exif_orientation: Orientation = "ignore",
    animated_references: Animated = "first_frame",
) -> tuple[Tile, tuple[int, int]]:
    """A reference decoded whole (as a service reads it) into the tile a result shows,
    encoded, and its pixel size (as read: turned when its EXIF orientation is honoured);
    ``UnreadableImage`` if it is no image, or an animation refused."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            if animated_references == "refuse" and getattr(image, "n_frames", 1) > 1:
                raise UnreadableImage(index, "animated images are not supported; send a still")
            width, height = image.size
            image.draft("RGB", (64, 64))
            image.load()
            if exif_orientation == "honour" and image.getexif().get(0x0112) in (5, 6, 7, 8):
                width, height = height, width  # read turned on its side
            if exif_orientation == "honour":
                ImageOps.exif_transpose(image, in_place=True)
            size = (width, height)
            thumbnail = image.convert("RGB")
    except (OSError, ValueError, SyntaxError, EOFError, Image.DecompressionBombError) as exc:
        raise UnreadableImage(index, str(exc)) from exc
    thumbnail.thumbnail((64, 64))
    tile = Tile(thumbnail)
    tile.scan()
    return tile, size


def _decode_all(
    references: Sequence[tuple[int, bytes]], exif_orientation: Orientation = "ignore",
    animated_references: Animated = "first_frame",
) -> list[tuple[Tile, tuple[int, int]]]:
    return [decode_tile(data, index, exif_orientation=exif_orientation,
                        animated_references=animated_references) for index, data in references]


class ReferenceTiles:
    """References' tiles and sizes by content hash, the most recently used kept.

    A chain of edits sends the same upstream bytes again and again: each is decoded once
    (results the fake made itself, never: ``remember``). Touched on the server's loop only.
    """

    def __init__(
        self, entries: int = 256, *, exif_orientation: Orientation = "ignore",
        animated_references: Animated = "first_frame",
    ) -> None:
        self._entries = entries
        self._reading: tuple[Orientation, Animated] = (exif_orientation, animated_references)
        self._known: OrderedDict[str, tuple[Tile, tuple[int, int]]] = OrderedDict()

    def remember(self, digest: str, tile: Tile, size: tuple[int, int]) -> None:
        """Know the bytes of hash ``digest`` as ``tile`` of ``size`` without decoding them."""
        self._known[digest] = (tile, size)
        self._trim()

    def knows(self, digest: str) -> bool:
        """Whether the bytes of hash ``digest`` are known (remembered or decoded)."""
        return digest in self._known

    async def of(
        self, references: Sequence[bytes], hashes: Sequence[str]
    ) -> list[tuple[Tile, tuple[int, int]]]:
        """Each reference's tile and size, decoding (in a worker thread) those not known;
        ``UnreadableImage`` for the first that is no image."""
        missing = [(index, data) for index, (data, digest) in enumerate(zip(references, hashes))
                   if digest not in self._known]
        if missing:
            decoded = await asyncio.to_thread(_decode_all, missing, *self._reading)
            for (index, _), known in zip(missing, decoded):
                self._known[hashes[index]] = known
        found = []
        for digest in hashes:
            self._known.move_to_end(digest)
            found.append(self._known[digest])
        self._trim()
        return found

    def _trim(self) -> None:
        while len(self._known) > self._entries:
            self._known.popitem(last=False)
