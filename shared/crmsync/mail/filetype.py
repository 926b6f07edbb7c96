"""A file's kind judged by its content, and checked against its name (ATT-4).

The first bytes of common formats identify them; a name whose extension names another kind
is a mismatch. Executables are never accepted, whatever they are called. Office Open XML
(docx, xlsx, pptx) and OpenDocument files are zip containers and are told apart by the
entries they must hold."""

from __future__ import annotations

import io
import zipfile

# magic prefix → kind
_MAGIC: list[tuple[bytes, str]] = [
    (b"%PDF-", "pdf"),
    (b"\x89PNG\r\n\x1a\n", "png"),
    (b"\xff\xd8\xff", "jpeg"),
    (b"GIF87a", "gif"),
    (b"GIF89a", "gif"),
    (b"Rar!\x1a\x07", "rar"),
    (b"PK\x03\x04", "zip"),
    (b"PK\x05\x06", "zip"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "ole"),  # legacy Office (doc, xls, ppt), msi
    (b"\x1f\x8b", "gzip"),
    (b"7z\xbc\xaf\x27\x1c", "7z"),
    (b"\x00\x00\x01\xba", "mpeg"),
    (b"\x00\x00\x01\xb3", "mpeg"),
    (b"ID3", "mp3"),
    (b"OggS", "ogg"),
    (b"MZ", "exe"),
    (b"\x7fELF", "elf"),
    (b"\xcf\xfa\xed\xfe", "macho"),
    (b"\xce\xfa\xed\xfe", "macho"),
    (b"\xca\xfe\xba\xbe", "macho"),
    (b"#!", "script"),
]
EXECUTABLE = frozenset({"exe", "elf", "macho", "script"})

# extension → the kinds its content may be
_EXTENSIONS: dict[str, frozenset[str]] = {
    "pdf": frozenset({"pdf"}),
    "png": frozenset({"png"}),
    "jpg": frozenset({"jpeg"}),
    "jpeg": frozenset({"jpeg"}),
    "gif": frozenset({"gif"}),
    "rar": frozenset({"rar"}),
    "zip": frozenset({"zip", "docx", "xlsx", "pptx", "odf"}),
    "docx": frozenset({"docx"}),
    "xlsx": frozenset({"xlsx"}),
    "pptx": frozenset({"pptx"}),
    "odt": frozenset({"odf"}),
    "ods": frozenset({"odf"}),
    "doc": frozenset({"ole"}),
    "xls": frozenset({"ole"}),
    "ppt": frozenset({"ole"}),
    "gz": frozenset({"gzip"}),
    "7z": frozenset({"7z"}),
    "mpeg": frozenset({"mpeg"}),
    "mpg": frozenset({"mpeg"}),
    "mp3": frozenset({"mp3"}),
    "mp4": frozenset({"mp4"}),
    "mov": frozenset({"mp4"}),
    "ogg": frozenset({"ogg"}),
    "txt": frozenset({"text"}),
    "csv": frozenset({"text"}),
    "md": frozenset({"text"}),
    "ics": frozenset({"text"}),
    "vcf": frozenset({"text"}),
    "json": frozenset({"text"}),
    "xml": frozenset({"text"}),
    "html": frozenset({"text"}),
    "htm": frozenset({"text"}),
}


class FileRefused(ValueError):
    """Why a file may not be attached; the message is shown to the user."""


def _zip_kind(head: bytes, data: bytes) -> str:
    try:
        names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    except Exception:  # any container zipfile cannot read (bad version byte: NotImplementedError)
        return "zip"
    if "[Content_Types].xml" in names:
        for prefix, kind in (("word/", "docx"), ("xl/", "xlsx"), ("ppt/", "pptx")):
            if any(n.startswith(prefix) for n in names):
                return kind
    if "mimetype" in names:
        return "odf"
    return "zip"


def sniff(data: bytes) -> str:
    """The kind of a file from its content: a name from the tables above, 'text', or 'binary'."""
    head = data[:64]
    if len(head) >= 12 and head[4:8] == b"ftyp":
        return "mp4"
    for magic, kind in _MAGIC:
        if head.startswith(magic):
            return _zip_kind(head, data) if kind == "zip" else kind
    sample = data[:8192]
    if b"\x00" in sample:
        return "binary"
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError as error:
        if error.start < len(sample) - 4:  # not merely a character cut at the sample's end
            return "binary"
    return "text"


def extension(filename: str) -> str:
    name = filename.rsplit("/", 1)[-1]
    return name.rsplit(".", 1)[-1].lower() if "." in name.strip(".") else ""


def check(filename: str, data: bytes, allowed: frozenset[str] | None = None) -> str:
    """The file's kind, or FileRefused: an executable, a name that does not match the
    content (ATT-4), or a kind the provider does not take (ATT-3)."""
    kind = sniff(data)
    if kind in EXECUTABLE:
        raise FileRefused(f"{filename}: executable files are not accepted, whatever their name")
    ext = extension(filename)
    expected = _EXTENSIONS.get(ext)
    if expected is not None and kind not in expected:
        raise FileRefused(f"{filename}: the name says .{ext} but the content is {kind}")
    if expected is None and ext and kind == "binary":
        # an extension we cannot check against unrecognised content: only plain text passes unverified
        raise FileRefused(f"{filename}: .{ext} files cannot be checked against their content")
    if allowed is not None:
        name_ok = ext in allowed
        if not name_ok:
            raise FileRefused(f"{filename}: .{ext or 'no extension'} files are not accepted here")
    return kind
