"""The backup archive: one tar (optionally gzip or xz), `SHA256SUMS` and `manifest.json` first.

`SHA256SUMS` (the `sha256sum -c` format) covers every other member, the manifest included;
the manifest lists each part and each file with its size and checksum. Reading verifies
every byte against both before anything is restored.
"""

import grp
import hashlib
import json
import lzma
import os
import pwd
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Literal

FORMAT = "windowrate-backup"
VERSION = 1
SUMS = "SHA256SUMS"
MANIFEST = "manifest.json"
PREFIX = "windowrate-backup-"
SUFFIXES = {"gz": ".tar.gz", "xz": ".tar.xz", "none": ".tar"}
Compression = Literal["gz", "xz", "none"]
_CHUNK = 1 << 20
_PROGRESS_BYTES = 64 << 20

Progress = Callable[[str], None]


class ArchiveError(Exception):
    """The archive is unreadable, damaged or not a WindowRate backup."""


def sha256_file(path: Path) -> str:
    """Return the hex SHA-256 of a file."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def walk_files(root: Path) -> Iterator[Path]:
    """Yield every regular file under `root`, sorted, as paths relative to it."""
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            if full.is_file() and not full.is_symlink():
                yield full.relative_to(root)


@dataclass(frozen=True)
class Written:
    """An archive written: where, how big, how many files."""

    path: Path
    bytes: int
    files: int


def write_archive(
    staging: Path,
    manifest: dict[str, Any],
    out: Path,
    compression: Compression,
    progress: Progress = lambda _m: None,
) -> Written:
    """Checksum every file of `staging`, add the manifest and SHA256SUMS, tar it to `out`.

    Written to `out` + `.partial`, fsynced, then renamed: a failed run leaves no archive.
    """
    files = {str(PurePosixPath(*rel.parts)): staging / rel for rel in walk_files(staging)}
    manifest["files"] = {
        name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for name, p in files.items()
    }
    manifest_bytes = json.dumps(manifest, ensure_ascii=False, indent=2).encode("utf-8")
    (staging / MANIFEST).write_bytes(manifest_bytes)
    sums = {MANIFEST: hashlib.sha256(manifest_bytes).hexdigest()}
    sums.update({name: meta["sha256"] for name, meta in manifest["files"].items()})
    sums_text = "".join(f"{digest}  {name}\n" for name, digest in sums.items())
    (staging / SUMS).write_text(sums_text, encoding="utf-8")
    partial = out.with_name(out.name + ".partial")
    mode: Any = {"gz": "w:gz", "xz": "w:xz", "none": "w"}[compression]
    # 0600 from the start: the archive holds keys and the services' passwords.
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as raw:
        with tarfile.open(fileobj=raw, mode=mode, format=tarfile.PAX_FORMAT) as tar:
            total = sum(m["bytes"] for m in manifest["files"].values())
            done = step = 0
            for name in (SUMS, MANIFEST, *files):
                tar.add(staging / name, arcname=name, recursive=False)
                done += manifest["files"].get(name, {}).get("bytes", 0)
                if done - step >= _PROGRESS_BYTES:
                    step = done
                    progress(f"  {done / 1e6:.0f}/{total / 1e6:.0f} MB")
        raw.flush()
        os.fsync(raw.fileno())
    partial.replace(out)
    dfd = os.open(out.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)
    return Written(out, out.stat().st_size, len(files) + 2)


def _chown(path: Path, user: str, group: str) -> None:
    """Give a file its owner by name, as the archive recorded it, when that user exists here."""
    try:
        uid = pwd.getpwnam(user).pw_uid
        gid = grp.getgrnam(group).gr_gid if group else -1
    except KeyError:
        return  # restored as root; the part's directory owner still applies
    os.chown(path, uid, gid)


def _safe_name(name: str) -> PurePosixPath:
    """Return a member name as a relative path; refuse absolute paths and `..`."""
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or not p.parts:
        raise ArchiveError(
            f"归档中有不安全的路径 / unsafe path in the archive: {name!r}; "
            "this is not a WindowRate backup"
        )
    return p


def _parse_sums(text: str) -> dict[str, str]:
    """Parse SHA256SUMS lines `<hex>  <name>`."""
    sums: dict[str, str] = {}
    for line in text.splitlines():
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name:
            raise ArchiveError(
                "SHA256SUMS 已损坏 / SHA256SUMS is damaged: the archive cannot be trusted; "
                "use another backup"
            )
        sums[name] = digest
    return sums


def extract_verified(archive: Path, dest: Path, progress: Progress) -> dict[str, Any]:
    """Extract `archive` into the empty directory `dest`, verify every checksum, return manifest.

    Raises ArchiveError naming what is wrong (unreadable, a file whose checksum differs, a
    file missing or unlisted, a manifest of another format or version).
    """
    if not archive.is_file():
        raise ArchiveError(f"找不到归档 / no archive at {archive}: give the path of a .tar file")
    hashes: dict[str, str] = {}
    total = step = 0
    try:
        with tarfile.open(archive, "r:*") as tar:
            for member in tar:
                name = _safe_name(member.name)
                if member.isdir():
                    continue
                if not member.isfile():
                    raise ArchiveError(
                        f"归档中有非普通文件 / the archive holds a non-regular file {member.name!r}"
                    )
                target = dest.joinpath(*name.parts)
                target.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                if src is None:
                    raise ArchiveError(f"cannot read {member.name!r}")
                h = hashlib.sha256()
                fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as out:
                    while chunk := src.read(_CHUNK):
                        h.update(chunk)
                        out.write(chunk)
                os.chmod(target, member.mode & 0o777)
                if os.geteuid() == 0 and member.uname:
                    _chown(target, member.uname, member.gname)
                hashes[str(name)] = h.hexdigest()
                total += member.size
                if total - step >= _PROGRESS_BYTES:
                    step = total
                    progress(f"  校验 / verified {total / 1e6:.0f} MB")
    except (tarfile.TarError, zlib.error, lzma.LZMAError, EOFError, OSError) as exc:
        raise ArchiveError(
            f"归档无法读取（已损坏？）/ the archive cannot be read (damaged?): {exc}; "
            "use another backup"
        ) from exc
    if SUMS not in hashes or MANIFEST not in hashes:
        raise ArchiveError(
            f"这不是 WindowRate 备份 / {archive} is not a WindowRate backup "
            f"(no {SUMS} or {MANIFEST})"
        )
    sums = _parse_sums((dest / SUMS).read_text(encoding="utf-8", errors="replace"))
    bad = sorted(n for n, d in sums.items() if hashes.get(n) not in (None, d))
    missing = sorted(n for n in sums if n not in hashes)
    extra = sorted(n for n in hashes if n not in sums and n != SUMS)
    if bad or missing or extra:
        what = "; ".join(
            f"{label}: {', '.join(names[:5])}"
            for label, names in (
                ("checksum differs", bad),
                ("missing", missing),
                ("not listed", extra),
            )
            if names
        )
        raise ArchiveError(
            f"校验失败，归档已损坏 / checksum verification failed, the archive is damaged "
            f"({what}); nothing was restored: use another backup"
        )
    try:
        manifest: dict[str, Any] = json.loads((dest / MANIFEST).read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ArchiveError(f"manifest.json unreadable: {exc}") from exc
    if manifest.get("format") != FORMAT or manifest.get("version") != VERSION:
        raise ArchiveError(
            f"不支持的备份格式 / unsupported backup format {manifest.get('format')!r} "
            f"version {manifest.get('version')!r} (this WindowRate reads {FORMAT} {VERSION})"
        )
    listed = {n: m["sha256"] for n, m in manifest.get("files", {}).items()}
    if listed != {n: d for n, d in sums.items() if n != MANIFEST}:
        raise ArchiveError(
            "manifest 与 SHA256SUMS 不一致 / the manifest and SHA256SUMS disagree; "
            "use another backup"
        )
    return manifest
