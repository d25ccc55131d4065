"""`GcsStore` and `fetch_data` against a real Cloud Storage API (fake-gcs-server), no mocks."""

from __future__ import annotations

import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import requests
from google.api_core import exceptions as api_exceptions
from google.auth import exceptions as auth_exceptions

from job import data
from job.errors import EXIT_DATA, EXIT_OUTPUT, DataError, OutputError, UsageError
from job.fetch import fetch_data
from job.gcs import GcsStore, gcs_errors, metadata_unreachable
from job.storage import open_store
from tests.gcs_fixtures import FakeGcsServer, client_for
from tests.helpers import write_tarball


def make_run_folder(root: Path) -> dict[str, bytes]:
    """A small run folder: nested files, an empty file and one file large enough for a resumable upload."""
    files = {
        "config.json": b'{"api": "symbolic"}',
        "model/saved_model.pb": b"\x08\x01" * 1000,
        "model/variables/variables.data-00000-of-00001": np.random.default_rng(0).bytes(9 * 1024 * 1024),
        "model/variables/variables.index": b"",
        "tensorboard/train/events.out.tfevents.1": b"event",
    }
    for key, content in files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    return files


def test_write_then_read_round_trips(gcs_bucket: str) -> None:
    store = open_store(f"gs://{gcs_bucket}/runs")
    store.write_bytes("run-1/metrics.jsonl", b'{"kind": "epoch"}\n')
    store.write_bytes("run-1/metrics.jsonl", b'{"kind": "epoch"}\n{"kind": "epoch"}\n')
    assert store.read_bytes("run-1/metrics.jsonl") == b'{"kind": "epoch"}\n{"kind": "epoch"}\n'
    assert store.child("run-1").read_bytes("metrics.jsonl") == store.read_bytes("run-1/metrics.jsonl")
    assert store.read_bytes("run-1/summary.json") is None
    assert store.is_copy(Path("staging"))  # No folder of its own: a gs:// run is staged in a local copy.
    assert store.child("run-1").url == f"gs://{gcs_bucket}/runs/run-1"


def test_create_only_refuses_to_clobber(gcs_bucket: str) -> None:
    store = open_store(f"gs://{gcs_bucket}/runs/run-1")
    store.write_bytes("summary.json", b'{"first": true}', create_only=True)
    with pytest.raises(OutputError) as raised:
        store.write_bytes("summary.json", b'{"second": true}', create_only=True)
    assert raised.value.exit_code == EXIT_OUTPUT
    assert "already exists" in str(raised.value) and f"gs://{gcs_bucket}/runs/run-1/summary.json" in str(raised.value)
    assert store.read_bytes("summary.json") == b'{"first": true}'


def test_racing_publishers_cannot_both_win(gcs_bucket: str) -> None:
    store = open_store(f"gs://{gcs_bucket}/runs/run-1")
    outcomes: list[str] = []
    start = threading.Barrier(6)

    def publish(index: int) -> None:
        start.wait()
        try:
            store.write_bytes("summary.json", f'{{"job": {index}}}'.encode(), create_only=True)
            outcomes.append(f"won {index}")
        except OutputError:
            outcomes.append("refused")

    threads = [threading.Thread(target=publish, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    winners = [outcome for outcome in outcomes if outcome.startswith("won")]
    assert len(winners) == 1 and outcomes.count("refused") == 5
    assert store.read_bytes("summary.json") == f'{{"job": {winners[0].split()[1]}}}'.encode()


@pytest.mark.usefixtures("gcs_server")  # The server this test talks to, not whichever an earlier test left set.
def test_missing_bucket_fails_with_one_clear_line() -> None:
    with pytest.raises(OutputError) as raised:
        open_store("gs://no-such-bucket-here/runs").check_writable()
    message = str(raised.value)
    assert raised.value.exit_code == EXIT_OUTPUT
    assert message.startswith("bucket no-such-bucket-here does not exist") and "\n" not in message


@pytest.mark.usefixtures("gcs_server")
def test_missing_bucket_on_write_and_list() -> None:
    store = open_store("gs://no-such-bucket-here/runs")
    for action in (lambda: store.write_bytes("a", b"x"), lambda: store.list_keys()):
        with pytest.raises(OutputError, match="bucket no-such-bucket-here does not exist"):
            action()


def test_check_writable_leaves_nothing_behind(gcs_bucket: str) -> None:
    store = open_store(f"gs://{gcs_bucket}/runs")
    store.check_writable()
    assert store.list_keys() == []


def test_upload_tree_round_trips_with_download_tree(gcs_bucket: str, tmp_path: Path) -> None:
    files = make_run_folder(tmp_path / "staging")
    store = open_store(f"gs://{gcs_bucket}/runs/run-1")
    store.upload_tree("", tmp_path / "staging")
    assert store.list_keys() == sorted(files)
    assert store.list_keys("model") == sorted(key for key in files if key.startswith("model/"))

    assert store.download_tree("model", tmp_path / "restored") == 3
    for key in ("model/saved_model.pb", "model/variables/variables.index"):
        assert (tmp_path / "restored" / key.removeprefix("model/")).read_bytes() == files[key]
    restored = tmp_path / "restored" / "variables/variables.data-00000-of-00001"
    assert restored.read_bytes() == files["model/variables/variables.data-00000-of-00001"]


def test_listing_a_folder_excludes_siblings_sharing_its_name(gcs_bucket: str) -> None:
    store = open_store(f"gs://{gcs_bucket}/run")
    store.write_bytes("model/saved_model.pb", b"graph")
    store.write_bytes("model.keras", b"zip")
    assert store.list_keys("model") == ["model/saved_model.pb"]
    assert store.download_tree("missing", Path("/nonexistent")) == 0


def test_delete_prefix_deletes_blob_by_blob(gcs_bucket: str, tmp_path: Path) -> None:
    make_run_folder(tmp_path)
    runs = open_store(f"gs://{gcs_bucket}/runs")
    runs.upload_tree("run-1", tmp_path)
    runs.write_bytes("run-10/config.json", b"{}")  # Shares the "run-1" string prefix; must survive.
    runs.delete_prefix("run-1")
    assert runs.list_keys() == ["run-10/config.json"]


def test_server_going_away_mid_upload_fails_quickly(dying_gcs_server: FakeGcsServer, tmp_path: Path) -> None:
    bucket = dying_gcs_server.create_bucket()
    for index in range(40):
        (tmp_path / f"shard-{index:02d}").write_bytes(np.random.default_rng(index).bytes(2 * 1024 * 1024))
    store = open_store(f"gs://{bucket}/runs/run-1")

    def kill_after_first_object() -> None:
        listing = f"{dying_gcs_server.url}/storage/v1/b/{bucket}/o"
        while b'"name"' not in urllib.request.urlopen(listing, timeout=5).read():
            time.sleep(0.005)
        dying_gcs_server.kill()

    killer = threading.Thread(target=kill_after_first_object)
    killer.start()
    started = time.monotonic()
    with pytest.raises(OutputError) as raised:
        store.upload_tree("", tmp_path)
    killer.join()
    message = str(raised.value)
    assert time.monotonic() - started < 6, "one shared 2 s retry budget should bound the whole upload"
    assert raised.value.exit_code == EXIT_OUTPUT and "\n" not in message
    assert message.startswith(f"gave up uploading 40 files to gs://{bucket}/runs/run-1/"), message
    assert "Connection refused" in message, message


def test_no_credentials_is_one_line_naming_the_fixes(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing-key.json"))
    with pytest.raises(OutputError) as raised:
        open_store("gs://some-bucket/runs")
    message = str(raised.value)
    assert message.startswith("no Google credentials") and "\n" not in message
    assert "GOOGLE_APPLICATION_CREDENTIALS" in message and "application-default login" in message


def test_bad_retry_deadline_is_a_usage_error(gcs_bucket: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOB_GCS_RETRY_DEADLINE", "soon")
    with pytest.raises(UsageError, match="JOB_GCS_RETRY_DEADLINE"):
        open_store(f"gs://{gcs_bucket}/runs")


def tiny_cifar(rows: int = 20) -> data.Cifar10:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(rows, 32, 32, 3), dtype=np.uint8)
    labels = (np.arange(rows) % 10).astype(np.uint8).reshape(-1, 1)
    return data.Cifar10(images, labels, images[:10], labels[:10], source="test")


def test_cifar_tarball_is_read_from_gcs_through_the_cache(
    gcs_server: FakeGcsServer, gcs_bucket: str, tmp_path: Path
) -> None:
    original = tiny_cifar()
    write_tarball(original, tmp_path / "cifar-10-python.tar.gz")
    bucket = client_for(gcs_server).bucket(gcs_bucket)
    bucket.blob("data/cifar-10-python.tar.gz").upload_from_filename(tmp_path / "cifar-10-python.tar.gz")

    loaded = data.load(f"gs://{gcs_bucket}/data/cifar-10-python.tar.gz", cache_dir=tmp_path / "cache")
    np.testing.assert_array_equal(loaded.x_train, original.x_train)
    np.testing.assert_array_equal(loaded.y_test, original.y_test)
    cached = tmp_path / "cache" / "gcs" / gcs_bucket / "data" / "cifar-10-python.tar.gz"
    assert cached.read_bytes() == (tmp_path / "cifar-10-python.tar.gz").read_bytes()


def test_fetch_reuses_a_verified_copy_and_replaces_a_bad_or_stale_one(
    gcs_server: FakeGcsServer, gcs_bucket: str, tmp_path: Path
) -> None:
    blob = client_for(gcs_server).bucket(gcs_bucket).blob("data/set.npz")
    blob.upload_from_string(b"version one")
    url = f"gs://{gcs_bucket}/data/set.npz"
    cached = fetch_data(url, tmp_path)
    first = cached.stat()

    assert fetch_data(url, tmp_path) == cached
    assert (cached.stat().st_ino, cached.stat().st_mtime_ns) == (first.st_ino, first.st_mtime_ns), "re-downloaded"

    cached.write_bytes(b"version 0ne")  # Same size, different bytes: only the checksum can tell.
    assert fetch_data(url, tmp_path).read_bytes() == b"version one"

    blob.upload_from_string(b"version two")  # A new generation of the object.
    assert fetch_data(url, tmp_path).read_bytes() == b"version two"
    assert [path.name for path in cached.parent.iterdir()] == ["set.npz"], "temporary files left behind"


def test_fetch_downloads_a_folder_prefix(gcs_server: FakeGcsServer, gcs_bucket: str, tmp_path: Path) -> None:
    bucket = client_for(gcs_server).bucket(gcs_bucket)
    for name in ("data_batch_1", "test_batch", "batches.meta"):
        bucket.blob(f"data/cifar-10-batches-py/{name}").upload_from_string(name.encode())
    bucket.blob("data/cifar-10-batches-py-old/data_batch_1").upload_from_string(b"not this one")

    folder = fetch_data(f"gs://{gcs_bucket}/data/cifar-10-batches-py", tmp_path)
    assert folder == tmp_path / "gcs" / gcs_bucket / "data" / "cifar-10-batches-py"
    assert sorted(path.name for path in folder.iterdir()) == ["batches.meta", "data_batch_1", "test_batch"]
    assert (folder / "test_batch").read_bytes() == b"test_batch"


def test_fetch_of_a_missing_object_is_a_data_error(gcs_bucket: str, tmp_path: Path) -> None:
    with pytest.raises(DataError) as raised:
        fetch_data(f"gs://{gcs_bucket}/data/cifar-10-python.tar.gz", tmp_path)
    assert raised.value.exit_code == EXIT_DATA
    assert str(raised.value).startswith(f"data source gs://{gcs_bucket}/data/cifar-10-python.tar.gz does not exist")


@pytest.mark.usefixtures("gcs_server")
def test_fetch_from_a_missing_bucket_is_a_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="bucket no-such-bucket-here does not exist"):
        fetch_data("gs://no-such-bucket-here/cifar-10-python.tar.gz", tmp_path)


def test_store_shares_its_client_with_children(gcs_bucket: str) -> None:
    store = open_store(f"gs://{gcs_bucket}/runs")
    assert isinstance(store, GcsStore)
    assert store.child("a").child("b")._client is store._client
    assert store.child("a").child("b").url == f"gs://{gcs_bucket}/runs/a/b"


def test_create_only_tolerates_its_own_earlier_attempt(gcs_bucket: str) -> None:
    """A retried create whose first attempt landed (response lost) sees a 412 for its own bytes: success."""
    store = open_store(f"gs://{gcs_bucket}/runs/run-1")
    store.write_bytes("summary.json", b'{"same": true}', create_only=True)
    store.write_bytes("summary.json", b'{"same": true}', create_only=True)
    assert store.read_bytes("summary.json") == b'{"same": true}'


def test_permission_denied_names_bucket_object_and_role() -> None:
    with pytest.raises(OutputError) as raised, gcs_errors("uploading", "gs://locked/runs/r1/model.keras", "locked"):
        raise api_exceptions.Forbidden("POST http://x/upload: caller does not have storage.objects.create access")
    message = str(raised.value)
    assert message.startswith("permission denied uploading gs://locked/runs/r1/model.keras (HTTP 403 Forbidden: caller")
    assert "roles/storage.objectUser on bucket locked" in message and "\n" not in message


def chained(error: Exception, cause: BaseException) -> Exception:
    error.__cause__ = cause
    return error


def test_only_a_silent_metadata_server_counts_as_not_ready(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refused connections, timeouts and 5xx from the metadata server are retryable; its refusals are not."""
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    refused = chained(auth_exceptions.TransportError("connect"), requests.ConnectionError("[Errno 111] refused"))
    assert metadata_unreachable(chained(auth_exceptions.RefreshError("token"), refused))
    assert metadata_unreachable(auth_exceptions.TransportError("Compute Engine Metadata server unavailable."))
    assert metadata_unreachable(auth_exceptions.DefaultCredentialsError("Your default credentials were not found."))
    forbidden = auth_exceptions.TransportError("Failed to retrieve token. Status: 403 Response: no IAM binding")
    assert not metadata_unreachable(chained(auth_exceptions.RefreshError("token"), forbidden))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", "/nowhere/key.json")  # A named key file: a setting.
    assert not metadata_unreachable(auth_exceptions.DefaultCredentialsError("File /nowhere/key.json was not found."))


TRANSIENT_OR_NOT = [
    (api_exceptions.TooManyRequests("slow down"), True),
    (api_exceptions.ServiceUnavailable("try later"), True),
    (api_exceptions.InternalServerError("oops"), True),
    (api_exceptions.GatewayTimeout("late"), True),
    (api_exceptions.from_http_status(408, "request timeout"), True),
    (ConnectionResetError("reset by peer"), True),
    (requests.ConnectionError("refused"), True),
    (requests.ReadTimeout("read timed out"), True),
    (auth_exceptions.TransportError(requests.ConnectionError("metadata refused")), True),
    (api_exceptions.NotFound("no such object"), False),
    (api_exceptions.Forbidden("denied"), False),
    (api_exceptions.PreconditionFailed("generation changed"), False),
    (auth_exceptions.TransportError("not an exception"), False),
    (ValueError("a bug"), False),
]


@pytest.mark.parametrize(
    ("error", "transient"), TRANSIENT_OR_NOT, ids=[type(error).__name__ for error, _ in TRANSIENT_OR_NOT]
)
def test_transient_errors_are_those_the_storage_library_retries(error: Exception, transient: bool) -> None:
    """Our predicate uses public names only; it must still agree with the library's own (private) one, so an
    upgrade of google-cloud-storage that changes what is retried fails here."""
    from google.cloud.storage.retry import _should_retry

    from job.gcs import is_transient

    assert is_transient(error) is transient
    assert _should_retry(error) is transient
