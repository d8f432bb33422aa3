"""Dataset files on disk: finding them (also inside the official archive or
as ``NAME.xz`` copies), verifying their SHA-1, downloading what is missing,
and the error that says what to do when none of that works. The datasets
themselves (names, decoding, normalisation) are in :mod:`byzsgd.data`."""
import hashlib
import lzma
import os
import shutil
import tarfile
import tempfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path

__all__ = ["cache_root", "DataError", "read_verified"]


class DataError(RuntimeError):
    """A dataset is missing or corrupt; the message says what to do."""


@dataclass(frozen=True)
class _File:
    name: str
    sha1: str
    urls: tuple = ()


@dataclass(frozen=True)
class _Dataset:
    title: str
    folder: str
    train: tuple           # _File entries, in reading order
    test: tuple
    decode: object         # callable({name: bytes}, files) -> (uint8 NCHW, int32)
    mean: tuple            # per channel, of pixel / 255
    std: tuple
    subdirs: tuple = ("",)
    archive: object = None  # _File of an archive holding the files, or None
    home: str = ""


def _url(url):
    """``mxnet:PATH`` is PATH in the repository gluon's MNIST/CIFAR10 download
    from (``$MXNET_GLUON_REPO`` overrides it, read at download time)."""
    if not url.startswith("mxnet:"):
        return url
    repo = os.environ.get("MXNET_GLUON_REPO",
                          "https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/")
    return f"{repo.rstrip('/')}/{url[len('mxnet:'):]}"


def _sha1(blob):
    return hashlib.sha1(blob).hexdigest()


def cache_root():
    """Where byzsgd keeps files it can rebuild: $BYZSGD_CACHE, else ~/.cache/byzsgd."""
    return Path(os.environ.get("BYZSGD_CACHE", Path.home() / ".cache" / "byzsgd"))


def _read_xz(path, cache, sha1):
    """Bytes of ``path`` (an ``.xz`` file), decompressed once into ``cache``.

    Copies kept xz-compressed (e.g. CIFAR-10 on a read-only share) are read
    without asking the user to unpack them. A cached copy is used only if it
    has the expected SHA-1; otherwise it is decompressed again.
    """
    if cache.is_file():
        blob = cache.read_bytes()
        if _sha1(blob) == sha1:
            return blob
    try:
        blob = lzma.decompress(path.read_bytes())
    except lzma.LZMAError as err:
        raise DataError(f"cannot decompress {path}: {err}; replace it with an intact "
                        f"copy or put the decompressed file beside it") from None
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache.parent, prefix=f".{cache.name}.")
        with os.fdopen(fd, "wb") as out:
            out.write(blob)
        os.replace(tmp, cache)
    except OSError:
        pass  # no writable cache: decompress again next time
    return blob


def _read_present(info, folder, files):
    """{name: bytes} of the files found in the folder, its subdirs (also as
    ``NAME.xz``) or the archive."""
    blobs = {}
    for f in files:
        for sub in info.subdirs:
            path = folder / sub / f.name
            if path.is_file():
                blobs[f.name] = path.read_bytes()
                break
            packed = path.with_name(f.name + ".xz")
            if packed.is_file():
                cache = cache_root() / _sha1(str(packed.resolve()).encode())[:12] / f.name
                blobs[f.name] = _read_xz(packed, cache, f.sha1)
                break
    missing = {f.name for f in files} - set(blobs)
    if missing and info.archive and (folder / info.archive.name).is_file():
        blobs.update(_read_archive(folder / info.archive.name, missing))
    return blobs


def _read_archive(path, wanted):
    try:
        with tarfile.open(path) as tar:
            return {Path(m.name).name: tar.extractfile(m).read() for m in tar.getmembers()
                    if m.isfile() and Path(m.name).name in wanted}
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"cannot read {path}: {err}; delete it (it will be downloaded "
                        f"again when online) or replace it with the official file") from None


def _download(url, dest, sha1):
    """Fetch ``url`` into ``dest`` atomically; verify ``sha1`` when given. A
    failed download leaves no folder behind that it created (a mistyped
    --data-dir would otherwise gain an empty mnist/)."""
    created = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as resp:
            shutil.copyfileobj(resp, out, 1 << 20)
        got = _sha1(Path(tmp).read_bytes())
        if sha1 and got != sha1:
            raise DataError(f"{url} has SHA-1 {got}, expected {sha1}")
        os.replace(tmp, dest)
    except BaseException:
        os.unlink(tmp)
        for folder in created:   # deepest first; stops at one that is not empty
            try:
                folder.rmdir()
            except OSError:
                break
        raise


def _fetch_missing(info, folder, missing):
    """Download the missing files (or the archive holding them); errors as text."""
    targets = [info.archive] if info.archive else missing
    errors = []
    for f in targets:
        for url in map(_url, f.urls):
            try:
                _download(url, folder / f.name, f.sha1)
                break
            except Exception as err:  # noqa: BLE001 - any failure means "not downloaded"
                errors.append(f"{url}: {type(err).__name__}: {err}")
        else:
            return errors
    return []


def _missing_message(info, folder, missing, errors):
    where = [str(folder / sub) for sub in info.subdirs]
    archive = (f", or the official archive {info.archive.name} in {folder}"
               if info.archive else "")
    return (f"{info.title} files missing: {', '.join(f.name for f in missing)} "
            f"(looked in {' and '.join(where)}{archive}). "
            f"Download: {'; '.join(errors) or 'done, but it did not provide them'}.\n"
            f"Ways out: put the official files there ({info.home}); or point "
            f"--data-dir or BYZSGD_DATA to a folder holding mnist/, fashion-mnist/ "
            f"and cifar10/; or run once online so byzsgd downloads them into {folder}.")


def read_verified(info, folder, files, download):
    blobs = _read_present(info, folder, files)
    missing = [f for f in files if f.name not in blobs]
    if missing:
        errors = (_fetch_missing(info, folder, missing) if download
                  else ["downloads disabled"])
        blobs = _read_present(info, folder, files)
        missing = [f for f in files if f.name not in blobs]
    if missing:
        raise DataError(_missing_message(info, folder, missing, errors))
    for f in files:
        got = _sha1(blobs[f.name])
        if got != f.sha1:
            raise DataError(
                f"{info.title} file {f.name} in {folder} has SHA-1 {got}, expected "
                f"{f.sha1}: it is corrupt or from another release. Delete it (it will "
                f"be downloaded again when online) or replace it with the official file "
                f"({info.home}).")
    return blobs
