"""Where a study's files live: a path on a pyarrow filesystem, the same one Ray Tune writes through, so a local
or NFS folder and an object-store URI (s3://, gs://, abfs://, hdfs://) hold petseg's own files beside Tune's.

Read and written like a pathlib.Path (`/`, read_text, write_text, exists, unlink); never imports Ray.
"""
from __future__ import annotations

import functools
import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import pyarrow.fs

from ..errors import StudyError

# Where each object store's client looks for credentials and the endpoint, named when a write fails.
CREDENTIALS = {
    "s3": "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or AWS_PROFILE, an instance role), AWS_DEFAULT_REGION, "
          "and AWS_ENDPOINT_URL for an S3-compatible server that is not AWS (MinIO, Ceph, R2)",
    "gs": "GOOGLE_APPLICATION_CREDENTIALS (or the node's service account)",
    "abfs": "AZURE_STORAGE_ACCOUNT_NAME / AZURE_STORAGE_ACCOUNT_KEY (or a managed identity)",
}


@functools.lru_cache(maxsize=None)
def _from_uri(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    # One filesystem per URI in a process: resolving an S3 URI may ask the server for the bucket's region,
    # and Tune then gets the very filesystem petseg reads and writes through.
    return pyarrow.fs.FileSystem.from_uri(uri)


@dataclass(frozen=True)
class Location:
    """A file or folder on a pyarrow filesystem: `path` as that filesystem names it, `scheme` "" when local."""

    filesystem: pyarrow.fs.FileSystem
    path: str
    scheme: str = ""

    @classmethod
    def at(cls, where: str | os.PathLike) -> "Location":
        """The location `where` names: a folder (relative to the working directory, ~ expanded) or a URI that
        pyarrow (and so Ray Tune) opens; an unusable URI is a StudyError naming it."""
        where = str(where)
        if "://" not in where:
            return cls(pyarrow.fs.LocalFileSystem(), str(Path(where).expanduser().resolve()))
        try:
            filesystem, path = _from_uri(where)
        except (ValueError, OSError) as err:  # pyarrow's ArrowInvalid is a ValueError, its I/O errors OSErrors
            raise StudyError(f"storage path {where} cannot be opened: {err}; give a folder or a URI Ray Tune "
                             "accepts, e.g. s3://bucket/petseg or gs://bucket/petseg") from err
        if isinstance(filesystem, pyarrow.fs.LocalFileSystem):  # file:///...
            return cls(filesystem, path)
        return cls(filesystem, path.rstrip("/"), where.split("://", 1)[0])

    @property
    def is_local(self) -> bool:
        """Whether this is a folder or file of this machine's filesystem (local disk, NFS or another mount)."""
        return not self.scheme

    def __truediv__(self, name: str) -> "Location":
        return Location(self.filesystem, f"{self.path.rstrip('/')}/{name}", self.scheme)

    def __str__(self) -> str:
        return self.path if self.is_local else f"{self.scheme}://{self.path}"

    def exists(self) -> bool:
        """Whether a file or folder is there."""
        return self.filesystem.get_file_info(self.path).type != pyarrow.fs.FileType.NotFound

    def is_dir(self) -> bool:
        """Whether a folder (an object-store prefix holding objects) is there."""
        return self.filesystem.get_file_info(self.path).type == pyarrow.fs.FileType.Directory

    def read_bytes(self) -> bytes:
        """The file's content."""
        with self.filesystem.open_input_stream(self.path) as stream:
            return stream.read()

    def read_text(self) -> str:
        """The file's content as UTF-8 text."""
        return self.read_bytes().decode()

    def write_bytes(self, data: bytes) -> None:
        """Write the file whole (its folder is created where the filesystem has folders)."""
        if self.is_local:
            self.filesystem.create_dir(str(PurePosixPath(self.path).parent), recursive=True)
        with self.filesystem.open_output_stream(self.path) as stream:
            stream.write(data)

    def write_text(self, text: str) -> None:
        """Write the file whole as UTF-8 text."""
        self.write_bytes(text.encode())

    def unlink(self) -> None:
        """Delete the file."""
        self.filesystem.delete_file(self.path)


def check_writable(folder: Location | Path, what: str) -> None:
    """Prove a file can be written in `folder`, or raise StudyError naming it (and, for an object store, where its
    credentials come from); leaves no file behind, nor a local folder it had to create."""
    folder = folder if isinstance(folder, Location) else Location.at(folder)
    if folder.is_local:
        _check_local_folder(Path(folder.path), what)
        return
    probe = folder / f".petseg-write-test-{os.getpid()}"
    try:
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise StudyError(f"cannot write to {what} {folder}: {err}; {access_help(folder)}") from err


def access_help(location: Location) -> str:
    """What to check when an object store refuses or cannot be reached: the bucket and the client's variables."""
    credentials = CREDENTIALS.get(location.scheme, "the credential variables of its client")
    return (f"check that the bucket exists and that this machine (and every Ray node) can reach and write it: "
            f"{credentials}")


def _check_local_folder(folder: Path, what: str) -> None:
    created = next((p for p in [folder, *folder.parents] if p.parent.exists()), folder)
    created = None if created.exists() else created
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".petseg-write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise StudyError(f"cannot write to {what} {folder}: {err.strerror}; choose a writable folder") from err
    finally:
        if created is not None and created.is_dir():
            shutil.rmtree(created)
