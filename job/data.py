"""CIFAR-10 as numpy arrays, from the official pickles, an .npz, gs:// or the Keras download.

The official `cifar-10-python.tar.gz` holds `cifar-10-batches-py/{data_batch_1..5,test_batch}`: Python-2
pickles with b"data" (N×3072 uint8, 1024 red then 1024 green then 1024 blue values per row) and b"labels".
These are read directly, so a given source never touches the network. No TensorFlow here.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import pickle
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

import numpy as np
from zlib_ng import gzip_ng, zlib_ng

from job import stopping
from job.errors import DataError
from job.untrusted import MAX_DATA_BYTES, MAX_DATA_ENTRIES, MAX_PICKLE_BYTES, check_size, contained_path, npy_header
from job.uri import is_gcs

CLASS_NAMES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
NUM_CLASSES = len(CLASS_NAMES)
TRAIN_BATCHES = tuple(f"data_batch_{index}" for index in range(1, 6))
TEST_BATCH = "test_batch"
FOLDER_NAME = "cifar-10-batches-py"
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True)
class Cifar10:
    """Images N×S×S×3 uint8 and labels N×1 uint8, in the layout `keras.datasets.cifar10.load_data()` returns."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[1])


def load(source: str | None, cache_dir: Path | None = None) -> Cifar10:
    """Load CIFAR-10 from a tarball, its extracted folder, an .npz, gs://, or (None) the Keras download."""
    if source is None:
        return load_keras_download()
    if is_gcs(source):
        from job.fetch import default_cache_dir, fetch_data

        root = cache_dir or default_cache_dir()
        local = fetch_data(source, root)
        return _validated(_load_decoded_cache(local, root), source)
    return _validated(_load_local(Path(source).expanduser()), source)


# The decoded arrays of a gs:// download, kept beside it (CACHE/gcs-decoded/<bucket>/<name>/), so a retried pod
# on the same node maps them instead of inflating and unpickling the download again (docs/performance.md).
DECODED_FOLDER = "gcs-decoded"
DECODED_KEY = "key.json"  # Written last: the download it was decoded from, and each array's shape and dtype.
DECODED_FORMAT = 1
DECODED_DTYPES = {"x_train": "uint8", "y_train": "int64", "x_test": "uint8", "y_test": "int64"}
log = logging.getLogger(__name__)


def _load_decoded_cache(local: Path, cache_root: Path) -> Cifar10:
    """The download's decoded arrays, memory-mapped from the cache when they match it, else decoded and cached.

    The cache holds only .npy arrays, read with allow_pickle=False: whoever wrote the data cannot make the cache
    run code. It is written to a temporary folder renamed into place, so it is whole or absent; a cache whose
    key, shapes, dtypes or sizes do not match is decoded again and replaced, never trusted.
    """
    relative = local.relative_to(cache_root / "gcs")  # fetch_data checked every name on the way in.
    place = contained_path(cache_root / DECODED_FOLDER, str(relative), f"the decoded cache of {local}", DataError)
    key = _download_key(local)
    if (cached := _read_decoded(place, key)) is not None:
        return cached
    decoded = _validated(_load_local(local), str(local))
    _write_decoded(place, key, decoded)
    return decoded


def _download_key(local: Path) -> list[list[object]]:
    """What identifies the downloaded bytes: each file's name, size, modification time and inode.

    job.fetch replaces a file by renaming a verified download over it (a new inode and time), so a changed
    object never matches an old cache.
    """
    files = sorted(path for path in local.rglob("*") if path.is_file()) if local.is_dir() else [local]
    return [
        [str(path.relative_to(local.parent)), (status := path.stat()).st_size, status.st_mtime_ns, status.st_ino]
        for path in files
    ]


def _read_decoded(place: Path, key: list[list[object]]) -> Cifar10 | None:
    """The cached arrays (memory-mapped, read-only), or None when absent, stale or damaged (with a warning)."""
    if not (place / DECODED_KEY).exists():
        return None
    try:
        record = json.loads((place / DECODED_KEY).read_text())
        if not isinstance(record, dict) or record.get("format") != DECODED_FORMAT or record.get("source") != key:
            return None  # Another download (or format) than the one decoded: decoded again, silently.
        arrays = {name: _map_array(place / f"{name}.npy", dtype) for name, dtype in DECODED_DTYPES.items()}
        if record.get("shapes") != {name: list(array.shape) for name, array in arrays.items()}:
            raise ValueError("the arrays' shapes differ from the key's")
        return _validated(Cifar10(**arrays, source=str(place)), str(place))
    except (OSError, ValueError, DataError) as error:
        log.warning("the decoded data cache %s is damaged (%s): decoding the download again", place, error)
        return None


def _map_array(path: Path, dtype: str) -> np.ndarray:
    """A read-only memory map of a cached .npy, after checking its header and that the file holds exactly it."""
    with path.open("rb") as stream:
        shape, fortran_order, found = npy_header(stream)
        offset = stream.tell()
    size = math.prod(shape) * found.itemsize
    if found != np.dtype(dtype) or fortran_order or offset + size != path.stat().st_size:
        raise ValueError(f"{path.name} holds {found}{shape} in {path.stat().st_size} bytes, not {dtype}")
    check_size(size, MAX_DATA_BYTES, str(path), DataError)
    return np.load(path, mmap_mode="r", allow_pickle=False)


def _write_decoded(place: Path, key: list[list[object]], decoded: Cifar10) -> None:
    """Write the arrays beside the download: a temporary folder, renamed into place whole (best effort)."""
    try:
        place.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(  # Removed on the way out, with whatever is left in it.
            dir=place.parent, prefix=f".{place.name}.", suffix=".partial", ignore_cleanup_errors=True
        ) as folder:
            new, stale = Path(folder) / "new", Path(folder) / "stale"
            new.mkdir(mode=0o700)  # Private (0700), like a mkdtemp folder.
            for name, dtype in DECODED_DTYPES.items():
                with (new / f"{name}.npy").open("wb") as stream:
                    np.save(stream, np.ascontiguousarray(getattr(decoded, name), dtype=dtype), allow_pickle=False)
                    stream.flush()
                    os.fsync(stream.fileno())
            shapes = {name: list(getattr(decoded, name).shape) for name in DECODED_DTYPES}
            (new / DECODED_KEY).write_text(json.dumps({"format": DECODED_FORMAT, "source": key, "shapes": shapes}))
            if place.exists():  # Stale or damaged: moved aside into the work folder, so the rename below is atomic.
                place.rename(stale)
            new.rename(place)
    except OSError as error:  # A full or read-only cache costs the next start-up the decode, not this run.
        log.warning("could not cache the decoded data in %s (%s): the next run decodes it again", place, error)


def _load_local(path: Path) -> Cifar10:
    if not path.exists():
        raise DataError(f"data source {path} does not exist: pass cifar-10-python.tar.gz, its folder, or an .npz")
    if path.is_dir():
        return _load_folder(path)
    if path.suffix == ".npz":
        return _load_npz(path)
    return _load_tarball(path)


def _load_tarball(path: Path) -> Cifar10:
    """Read the batches in one pass over the compressed stream; members are never extracted to paths. The entry
    count and each member's declared size are checked before its bytes are inflated (a bomb is refused unread),
    and a duplicate is refused."""
    check_size(path.stat().st_size, MAX_DATA_BYTES, str(path), DataError)
    batches: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    try:
        with _tar_archive(path) as archive:
            for count, member in enumerate(archive, start=1):
                if count > MAX_DATA_ENTRIES:
                    raise DataError(f"{path} has more than {MAX_DATA_ENTRIES} entries: it is not CIFAR-10")
                check_size(member.size, MAX_PICKLE_BYTES, f"{path}:{member.name}", DataError)
                name = PurePosixPath(member.name).name
                if not member.isfile() or name not in (*TRAIN_BATCHES, TEST_BATCH):
                    continue
                if name in batches:
                    raise DataError(f"{path} holds {name} twice: use the official cifar-10-python.tar.gz")
                stream = archive.extractfile(member)
                assert stream is not None  # A regular file always has a stream.
                payload = stream.read()  # Whole, so a damaged archive is told apart from a damaged pickle.
                batches[name] = _read_batch(io.BytesIO(payload), f"{path}:{name}")
                stopping.raise_if_requested("while loading the data")
    except (tarfile.TarError, EOFError, OSError, zipfile.BadZipFile, zlib.error, zlib_ng.error) as error:  # type: ignore[misc]
        reason = str(error).splitlines()[0].rstrip(":")
        raise DataError(f"{path} is not a readable tar.gz ({reason}): download cifar-10-python.tar.gz again") from None
    missing = [name for name in (*TRAIN_BATCHES, TEST_BATCH) if name not in batches]
    if missing:
        raise DataError(f"{path} has no {missing[0]}: is it the official cifar-10-python.tar.gz?")
    return _from_batches(batches.__getitem__, str(path))


READ_BUFFER = 1 << 20  # Bytes per read when draining the rest of a gzip stream.


@contextlib.contextmanager
def _tar_archive(path: Path) -> Iterator[tarfile.TarFile]:
    """The archive, read front to back. gzip is inflated by zlib-ng straight into each member's bytes: 0.6 s for
    CIFAR-10, where tarfile's stream mode (joining and slicing every read into its own buffer) took 0.95 s."""
    with path.open("rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    if not gzipped:
        with tarfile.open(path, "r:*") as archive:
            yield archive
        return
    with gzip_ng.open(path, "rb") as inflated, tarfile.open(fileobj=inflated, mode="r:") as archive:
        yield archive
        # tarfile stops at the end-of-archive blocks; reading on to the end of the gzip stream makes it check the
        # CRC and length, so damage inside a member is refused instead of training on wrong pixels.
        while inflated.read(READ_BUFFER):
            check_size(inflated.tell(), MAX_DATA_BYTES, f"the inflated {path}", DataError)


def _load_folder(path: Path) -> Cifar10:
    folder = path / FOLDER_NAME if (path / FOLDER_NAME).is_dir() else path

    def read(name: str) -> tuple[np.ndarray, np.ndarray]:
        file = folder / name
        if not file.is_file():
            raise DataError(f"{folder} has no {name}: point --data at the extracted {FOLDER_NAME} folder")
        check_size(file.stat().st_size, MAX_PICKLE_BYTES, str(file), DataError)
        stopping.raise_if_requested("while loading the data")
        return _read_batch(file.open("rb"), f"{folder}:{name}")

    return _from_batches(read, str(folder))


def _from_batches(read: Callable[[str], tuple[np.ndarray, np.ndarray]], origin: str) -> Cifar10:
    """The batches' rows as N×32×32×3 images, the training set decoded in place into one aligned array."""
    train = [read(name) for name in TRAIN_BATCHES]
    x_train = aligned_empty((sum(len(rows) for rows, _ in train), 32, 32, 3))
    offset = 0
    for rows, _ in train:
        _rows_to_images(rows, x_train[offset : offset + len(rows)])
        offset += len(rows)
    test_rows, y_test = read(TEST_BATCH)
    x_test = _rows_to_images(test_rows, np.empty((len(test_rows), 32, 32, 3), np.uint8))
    return Cifar10(x_train, np.concatenate([labels for _, labels in train]), x_test, y_test, origin)


def _rows_to_images(rows: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Rows are channel-major (RRR…GGG…BBB…): stacking the three planes along a new last axis gives the
    N×32×32×3 layout Keras' loader makes with a transpose, at twice the speed of numpy's strided copy."""
    planes = rows.reshape(len(rows), 3, 32 * 32)
    np.stack([planes[:, channel] for channel in range(3)], axis=-1, out=images.reshape(len(rows), 32 * 32, 3))
    return images


TENSOR_ALIGNMENT = 64  # Bytes: what TensorFlow's CPU kernels need to use an array's memory as it is.


def aligned_empty(shape: tuple[int, ...]) -> np.ndarray:
    """An uninitialised uint8 array whose data starts on a TENSOR_ALIGNMENT boundary (numpy gives 16), so the
    training images become a tensor without a 150 MB copy (job.pipeline.host_tensor)."""
    size = math.prod(shape)
    padded = np.empty(size + TENSOR_ALIGNMENT, np.uint8)
    start = -padded.ctypes.data % TENSOR_ALIGNMENT
    return padded[start : start + size].reshape(shape)


# What the official pickles (and CIFAR-10-format files written by numpy 2 with protocol 2) reference: numpy's
# array reconstruction and dtype, and the codec protocol 2 uses for bytes. Nothing else may be named.
PICKLE_GLOBALS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),  # numpy 1, the official files.
        ("numpy._core.multiarray", "_reconstruct"),  # numpy 2.
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # Protocol 2's spelling of a bytes object under Python 3.
    }
)


class _PlainDataUnpickler(pickle.Unpickler):
    """Unpickles data, never code: a global other than PICKLE_GLOBALS is refused before it is looked up.

    A pickle can name any importable callable (os.system, subprocess.Popen, builtins.eval) and have it
    called while loading; whoever can write the data a job reads could then run code with the job's
    credentials. The dict, bytes, strings, lists and ints of a CIFAR-10 batch need no global at all.
    """

    def __init__(self, stream: IO[bytes], origin: str) -> None:
        super().__init__(stream, encoding="bytes")
        self.origin = origin

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in PICKLE_GLOBALS:
            raise DataError(
                f"{self.origin} is not a plain CIFAR-10 pickle: it references {module}.{name}, which could run "
                "code; use the official cifar-10-python.tar.gz or an .npz"
            )
        return super().find_class(module, name)


def load_plain_pickle(stream: IO[bytes], origin: str) -> Any:
    """Load a pickle that may hold only plain data and numpy arrays (DataError naming any other global)."""
    return _PlainDataUnpickler(stream, origin).load()


def _read_batch(stream: IO[bytes], origin: str) -> tuple[np.ndarray, np.ndarray]:
    """One pickled batch → (N×3072 uint8 rows, N×1 int64 labels)."""
    with stream:
        try:
            batch = load_plain_pickle(stream, origin)
        except DataError:
            raise
        except Exception as error:  # Truncated or foreign files raise many different errors.
            raise DataError(f"{origin} is not a CIFAR-10 pickle ({type(error).__name__}: {error})") from None
    if not isinstance(batch, dict) or b"data" not in batch or b"labels" not in batch:
        keys = sorted(batch) if isinstance(batch, dict) else type(batch).__name__
        raise DataError(f"{origin} lacks the b'data' and b'labels' keys of a CIFAR-10 batch (found {keys})")
    data = np.asarray(batch[b"data"])
    labels = np.asarray(batch[b"labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072 or len(labels) != len(data):
        raise DataError(f"{origin} holds data {data.dtype}{data.shape} and {len(labels)} labels, not N×3072 uint8")
    return data, labels.astype(np.int64).reshape(-1, 1)


def _load_npz(path: Path) -> Cifar10:
    check_size(path.stat().st_size, MAX_DATA_BYTES, str(path), DataError)
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [key for key in NPZ_KEYS if key not in archive.files]
            if missing:
                raise DataError(f"{path} lacks {', '.join(missing)}: an .npz needs x_train, y_train, x_test, y_test")
            _check_npz_sizes(archive.zip, path)
            x_train, y_train, x_test, y_test = (archive[key] for key in NPZ_KEYS)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise DataError(f"{path} is not a readable .npz ({error}): save it with numpy.savez") from None
    return Cifar10(x_train, y_train.reshape(-1, 1), x_test, y_test.reshape(-1, 1), str(path))


def _check_npz_sizes(archive: zipfile.ZipFile, path: Path) -> None:
    """Refuse arrays whose headers declare more than MAX_DATA_BYTES, before any is inflated (a zip bomb)."""
    total = 0
    for key in NPZ_KEYS:
        with archive.open(f"{key}.npy" if f"{key}.npy" in archive.namelist() else key) as member:
            shape, _, dtype = npy_header(member)  # ValueError for a member that is not an .npy array 1.0 or 2.0.
        size = math.prod(shape) * dtype.itemsize
        check_size(size, MAX_DATA_BYTES, f"{path}:{key}", DataError)
        total += size
    check_size(total, MAX_DATA_BYTES, f"the arrays of {path}", DataError)


def load_keras_download() -> Cifar10:
    """The chapter's `tf.keras.datasets.cifar10.load_data()` (downloads once into $KERAS_HOME)."""
    import keras

    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.cifar10.load_data()
    except Exception as error:  # No network, a proxy, a bad cache: all end here.
        raise DataError(
            f"could not download CIFAR-10 through Keras ({type(error).__name__}: {error}): "
            "pass --data with a local cifar-10-python.tar.gz or gs:// copy"
        ) from None
    return _validated(Cifar10(x_train, y_train, x_test, y_test, "keras.datasets.cifar10"), "keras.datasets.cifar10")


def _validated(data: Cifar10, origin: str) -> Cifar10:
    """Check shapes, dtypes and label range; convert labels to int64 N×1."""
    for name, images, labels in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        if images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2]:
            raise DataError(f"{origin}: x_{name} has shape {images.shape}, expected N×S×S×3 square RGB images")
        if images.dtype != np.uint8:
            raise DataError(f"{origin}: x_{name} is {images.dtype}, expected uint8 pixels 0-255")
        if len(labels) != len(images):
            raise DataError(f"{origin}: {len(images)} {name} images but {len(labels)} labels")
        if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
            raise DataError(f"{origin}: y_{name} has labels outside 0-{NUM_CLASSES - 1}")
    if data.x_train.shape[1:] != data.x_test.shape[1:]:
        raise DataError(f"{origin}: train images {data.x_train.shape[1:]} and test {data.x_test.shape[1:]} differ")
    return Cifar10(
        data.x_train,
        data.y_train.astype(np.int64).reshape(-1, 1),
        data.x_test,
        data.y_test.astype(np.int64).reshape(-1, 1),
        origin,
    )


def label_counts(labels: np.ndarray) -> dict[str, int]:
    """The chapter's `np.unique(y, return_counts=True)`, keyed by class name."""
    values, counts = np.unique(labels, return_counts=True)
    found = dict(zip(values.tolist(), counts.tolist(), strict=True))
    return {name: int(found.get(index, 0)) for index, name in enumerate(CLASS_NAMES)}
