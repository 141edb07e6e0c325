"""Provenance: the record of how an image was made, embedded in the file ``run.save`` writes.

PNG files carry it in an ``iTXt`` chunk with the keyword ``editgraph``; JPEG files in an
XMP packet (an APP1 segment, ``http://ns.adobe.com/xap/1.0/``) whose
``editgraph:record`` property holds the JSON. Either way the block is inserted into the
encoded stream as it is: the pixels are never decoded or re-encoded.

The file's bytes therefore differ from the generated image by that one block.
``Provenance.output_hash`` is the hash of the image as generated (the cache and the
manifest use the same hash); :func:`remove_provenance` gives those bytes back.
"""

from __future__ import annotations

import hashlib
import os
import struct
import zlib
from pathlib import Path
from xml.etree import ElementTree
from xml.sax.saxutils import escape, quoteattr

from pydantic import ValidationError

from .errors import ProvenanceError
from .records import HOSTING_FIELDS, EditRecord

__all__ = [
    "PNG_KEYWORD",
    "XMP_NAMESPACE",
    "Provenance",
    "embed_provenance",
    "provenance",
    "read_provenance",
    "remove_provenance",
]

#: The keyword of the PNG ``iTXt`` chunk that holds the record.
PNG_KEYWORD = "editgraph"
#: The XML namespace of the ``editgraph:record`` XMP property (JPEG).
XMP_NAMESPACE = "https://pypi.org/project/editgraph/ns/provenance/1.0/"

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
_XMP_EXTENSION_HEADER = b"http://ns.adobe.com/xmp/extension/\x00"
_XMP_NOTE = "http://ns.adobe.com/xmp/note/"
_EXTENSION_CHUNK = 65400  # extended-XMP bytes per segment, as the XMP specification suggests
_MAX_SEGMENT = 65533  # a JPEG segment's length field counts itself: 65535 - 2
_SOI, _SOS, _APP0, _APP1 = 0xD8, 0xDA, 0xE0, 0xE1
_STANDALONE_MARKERS = {0x01, *range(0xD0, 0xD8)}  # TEM and RSTn carry no length
#: The largest record read, after inflating a compressed iTXt chunk or joining extended
#: XMP: a record is a few kilobytes; a 1 MB block that inflates to 1 GB is refused.
MAX_RECORD_BYTES = 1024 * 1024


#: The record a saved image carries: an :class:`~editgraph.records.EditRecord`, the same
#: record the cache and the manifest keep (``eg.Provenance`` is its public name).
Provenance = EditRecord


def provenance(path: str | os.PathLike[str]) -> Provenance:
    """The record embedded in an image that ``run.save`` wrote.

    Raises ProvenanceError when the file cannot be read, carries no editgraph record, or
    carries one that cannot be read.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ProvenanceError(f"provenance: cannot read {path}: {exc.strerror or exc}") from exc
    record = read_provenance(data)
    if record is None:
        raise ProvenanceError(
            f"provenance: {path} carries no editgraph record (only the PNG and JPEG files "
            "`run.save` writes do)"
        )
    return record


def read_provenance(data: bytes) -> Provenance | None:
    """The record embedded in encoded image bytes, or None when there is none.

    Raises ProvenanceError when the image or its record is malformed.
    """
    if data.startswith(_PNG_SIGNATURE):
        text = next((_png_record_text(kind, body) for _, kind, body in _png_records(data)), None)
    elif data[:2] == b"\xff\xd8":
        _, text = _jpeg_records(data)
    else:
        return None
    if text is None:
        return None
    if len(text) > MAX_RECORD_BYTES:
        raise ProvenanceError(
            f"provenance: the embedded record is over {MAX_RECORD_BYTES:,} characters"
        )
    try:
        return EditRecord.from_json(text)
    except ValueError as exc:  # pydantic's ValidationError included
        problem = (
            f"{exc.error_count()} problem(s), first: {exc.errors()[0]['msg']}"
            if isinstance(exc, ValidationError) else str(exc)
        )
        raise ProvenanceError(
            f"provenance: the embedded editgraph record is not valid ({problem})"
        ) from exc


def embed_provenance(data: bytes, record: Provenance) -> bytes:
    """``data`` (PNG or JPEG bytes) with ``record`` inserted; other formats unchanged.

    Any earlier editgraph record is replaced. The image data itself is copied as is.
    """
    data = remove_provenance(data)
    text = record.model_dump_json(exclude=set(HOSTING_FIELDS))
    if data.startswith(_PNG_SIGNATURE):
        return _png_insert(data, _png_chunk(b"iTXt", _itxt(text)))
    if data[:2] == b"\xff\xd8":
        return _jpeg_embed(data, text, record)
    return data


def remove_provenance(data: bytes) -> bytes:
    """``data`` without its editgraph record: the bytes as generated, when saved by editgraph."""
    if data.startswith(_PNG_SIGNATURE):
        for (start, end), _, _ in reversed(_png_records(data)):
            data = data[:start] + data[end:]
    elif data[:2] == b"\xff\xd8":
        spans, _ = _jpeg_records(data)
        for start, end in reversed(spans):
            data = data[:start] + data[end:]
    return data


# ---------------------------------------------------------------------------- PNG


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def _itxt(text: str) -> bytes:
    # keyword, NUL, compression flag 0 and method 0, empty language tag and translated
    # keyword (each NUL-terminated), then the UTF-8 text.
    return PNG_KEYWORD.encode("latin-1") + b"\x00\x00\x00\x00\x00" + text.encode("utf-8")


def _png_chunks(data: bytes) -> list[tuple[int, int, bytes, bytes]]:
    """(start, end, type, body) of each chunk; ProvenanceError when the stream is cut."""
    chunks = []
    offset = len(_PNG_SIGNATURE)
    while offset + 8 <= len(data):
        (length,) = struct.unpack(">I", data[offset : offset + 4])
        kind = data[offset + 4 : offset + 8]
        end = offset + 12 + length
        if end > len(data):
            raise ProvenanceError("provenance: the PNG stream is truncated")
        chunks.append((offset, end, kind, data[offset + 8 : offset + 8 + length]))
        offset = end
        if kind == b"IEND":
            break
    return chunks


def _png_insert(data: bytes, chunk: bytes) -> bytes:
    chunks = _png_chunks(data)
    if not chunks or chunks[0][2] != b"IHDR":
        raise ProvenanceError("provenance: not a PNG stream (no IHDR chunk first)")
    after_header = chunks[0][1]
    return data[:after_header] + chunk + data[after_header:]


def _png_records(data: bytes) -> list[tuple[tuple[int, int], bytes, bytes]]:
    """(span, chunk type, body) of each editgraph text chunk; bodies are decoded on use."""
    records = []
    for start, end, kind, body in _png_chunks(data):
        if kind in (b"iTXt", b"tEXt") and body.startswith(PNG_KEYWORD.encode() + b"\x00"):
            records.append(((start, end), kind, body))
    return records


def _png_record_text(kind: bytes, body: bytes) -> str:
    if kind == b"tEXt":
        return body[len(PNG_KEYWORD) + 1 :].decode("latin-1")
    return _itxt_text(body)


def _itxt_text(body: bytes) -> str:
    """The text of an iTXt chunk; ProvenanceError when the chunk is malformed."""
    try:
        keyword_end = body.index(b"\x00")
        compressed, method = body[keyword_end + 1], body[keyword_end + 2]
        rest = body[keyword_end + 3 :]
        language_end = rest.index(b"\x00")
        translated_end = rest.index(b"\x00", language_end + 1)
    except (ValueError, IndexError):
        raise ProvenanceError("provenance: the PNG iTXt chunk is malformed") from None
    text = rest[translated_end + 1 :]
    if compressed:
        if method != 0:
            raise ProvenanceError(f"provenance: unknown iTXt compression method {method}")
        inflater = zlib.decompressobj()
        try:
            text = inflater.decompress(text, MAX_RECORD_BYTES + 1)
        except zlib.error:
            raise ProvenanceError("provenance: the compressed iTXt text does not inflate") from None
        if len(text) > MAX_RECORD_BYTES or inflater.unconsumed_tail:
            raise ProvenanceError(
                f"provenance: the compressed record inflates past {MAX_RECORD_BYTES:,} bytes"
            )
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError:
        raise ProvenanceError("provenance: the iTXt text is not UTF-8") from None


# ---------------------------------------------------------------------------- JPEG


def _jpeg_segment(marker: int, body: bytes) -> bytes:
    assert len(body) <= _MAX_SEGMENT, "callers split what does not fit"
    return bytes((0xFF, marker)) + struct.pack(">H", len(body) + 2) + body


def _jpeg_segments(data: bytes) -> list[tuple[int, int, int, bytes]]:
    """(start, end, marker, body) of each segment before the image data (SOS)."""
    segments = []
    offset = 2
    while offset + 2 <= len(data):
        if data[offset] != 0xFF:
            raise ProvenanceError("provenance: the JPEG stream is malformed")
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in _STANDALONE_MARKERS:
            offset += 2
            continue
        if marker == _SOS or offset + 4 > len(data):
            break
        (length,) = struct.unpack(">H", data[offset + 2 : offset + 4])
        end = offset + 2 + length
        if length < 2 or end > len(data):
            raise ProvenanceError("provenance: the JPEG stream is truncated")
        segments.append((offset, end, marker, data[offset + 4 : end]))
        offset = end
    return segments


def _jpeg_insert(data: bytes, segment: bytes) -> bytes:
    # After SOI and the JFIF (APP0) / Exif (APP1) segments that readers expect first.
    position = 2
    for start, end, marker, body in _jpeg_segments(data):
        if start != position:
            break
        if marker == _APP0 or (marker == _APP1 and body.startswith(b"Exif\x00")):
            position = end
            continue
        break
    return data[:position] + segment + data[position:]


def _jpeg_embed(data: bytes, text: str, record: Provenance) -> bytes:
    packet = _xmp_packet(f"<editgraph:record>{escape(text)}</editgraph:record>", record)
    if len(_XMP_HEADER) + len(packet) <= _MAX_SEGMENT:
        return _jpeg_insert(data, _jpeg_segment(_APP1, _XMP_HEADER + packet))
    # Too large for one segment (a long non-Latin prompt): XMP's standard "extended XMP"
    # (XMP specification part 3, 1.1.3.1). The main packet names the MD5 of the extended
    # one, which is split over as many APP1 segments as it needs.
    extended = _xmp_meta(f"<editgraph:record>{escape(text)}</editgraph:record>", record)
    guid = hashlib.md5(extended, usedforsecurity=False).hexdigest().upper()
    main = _xmp_packet(f"<xmpNote:HasExtendedXMP>{guid}</xmpNote:HasExtendedXMP>", record)
    segments = [_jpeg_segment(_APP1, _XMP_HEADER + main)]
    for offset in range(0, len(extended), _EXTENSION_CHUNK):
        segments.append(_jpeg_segment(_APP1, b"".join((
            _XMP_EXTENSION_HEADER, guid.encode("ascii"),
            struct.pack(">II", len(extended), offset),
            extended[offset : offset + _EXTENSION_CHUNK],
        ))))
    return _jpeg_insert(data, b"".join(segments))


def _jpeg_records(data: bytes) -> tuple[list[tuple[int, int]], str | None]:
    """Where the editgraph XMP segments are (with any extension), and the record's JSON."""
    spans: list[tuple[int, int]] = []
    text: str | None = None
    guids: set[str] = set()
    extensions: dict[str, list[tuple[int, bytes, tuple[int, int]]]] = {}
    for start, end, marker, body in _jpeg_segments(data):
        if marker != _APP1:
            continue
        if body.startswith(_XMP_HEADER):
            packet = body[len(_XMP_HEADER) :]
            if XMP_NAMESPACE.encode() not in packet:
                continue  # someone else's XMP: left alone
            spans.append((start, end))
            found, guid = _xmp_record(packet)
            text = text if text is not None else found
            if guid is not None:
                guids.add(guid)
        elif body.startswith(_XMP_EXTENSION_HEADER):
            rest = body[len(_XMP_EXTENSION_HEADER) :]
            if len(rest) < 40:
                raise ProvenanceError("provenance: an extended-XMP segment is truncated")
            guid = rest[:32].decode("ascii", "replace")
            (offset,) = struct.unpack(">I", rest[36:40])
            extensions.setdefault(guid, []).append((offset, rest[40:], (start, end)))
    for guid in guids & set(extensions):
        parts = sorted(extensions[guid], key=lambda part: part[0])
        spans += [span for _, _, span in parts]
        if text is None:
            joined = b"".join(chunk for _, chunk, _ in parts)
            if len(joined) > MAX_RECORD_BYTES:
                raise ProvenanceError(
                    f"provenance: the extended XMP is over {MAX_RECORD_BYTES:,} bytes"
                )
            text, _ = _xmp_record(joined)
    return sorted(spans), text


def _xmp_meta(properties: str, record: Provenance) -> bytes:
    return (
        '<x:xmpmeta xmlns:x="adobe:ns:meta/">'
        '<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        '<rdf:Description rdf:about="" xmlns:xmp="http://ns.adobe.com/xap/1.0/" '
        'xmlns:xmpNote="http://ns.adobe.com/xmp/note/" '
        f'xmlns:editgraph="{XMP_NAMESPACE}" '
        f"xmp:CreatorTool={quoteattr('editgraph ' + record.editgraph_version)}>"
        f"{properties}</rdf:Description></rdf:RDF></x:xmpmeta>"
    ).encode()


def _xmp_packet(properties: str, record: Provenance) -> bytes:
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'.encode()
        + _xmp_meta(properties, record)
        + b'<?xpacket end="w"?>'
    )


def _xmp_record(packet: bytes) -> tuple[str | None, str | None]:
    """The ``editgraph:record`` JSON of an XMP packet, and the GUID of its extended
    packet when the record lives there."""
    if b"<!DOCTYPE" in packet or b"<!ENTITY" in packet:
        # XMP has no DTD; one here could only be there to expand entities.
        raise ProvenanceError("provenance: the XMP packet declares a DTD, which XMP never has")
    try:
        root = ElementTree.fromstring(packet)
    except ElementTree.ParseError as exc:
        raise ProvenanceError(f"provenance: the XMP packet is not well-formed XML ({exc})") from exc
    return _property(root, XMP_NAMESPACE, "record"), _property(root, _XMP_NOTE, "HasExtendedXMP")


def _property(root: ElementTree.Element, namespace: str, name: str) -> str | None:
    """A simple XMP property, written as an element or (as XMP tools may rewrite it) as
    an attribute of ``rdf:Description``."""
    element = root.find(f".//{{{namespace}}}{name}")
    if element is not None:
        return element.text or ""
    for description in root.iter():
        value = description.get(f"{{{namespace}}}{name}")
        if value is not None:
            return value
    return None
