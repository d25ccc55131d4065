"""Output and data locations: a local path or gs://BUCKET/PREFIX, parsed and spelled one way.

No I/O and nothing of ours but `job.errors`, so every module (the CLI's `--help` included) may import it.
"""

from __future__ import annotations

import re

from job.errors import UsageError

GCS_URL = re.compile(r"^gs://(?P<bucket>[a-z0-9][a-z0-9._-]{1,220}[a-z0-9])(?:/(?P<prefix>.*))?$")


def is_gcs(location: str) -> bool:
    return location.startswith("gs:")


def parse_gcs_url(url: str) -> tuple[str, str]:
    """Split gs://bucket/some/prefix into (bucket, "some/prefix"); reject malformed URLs.

    Every form people and Vertex AI write is accepted: gs://BUCKET, gs://BUCKET/, gs://BUCKET/PREFIX and
    gs://BUCKET/PREFIX/ (Vertex sets AIP_MODEL_DIR to <baseOutputDirectory>/model/). Empty segments
    (gs://BUCKET//PREFIX) are dropped: an object name never gets a doubled slash.
    """
    match = GCS_URL.match(url.strip())
    if not match:
        raise UsageError(
            f"malformed Cloud Storage URL {url!r}: use gs://BUCKET or gs://BUCKET/PREFIX "
            "(bucket names are 3-222 lowercase letters, digits, '.', '-' or '_')"
        )
    return match["bucket"], "/".join(segment for segment in (match["prefix"] or "").split("/") if segment)


def gcs_url(bucket: str, prefix: str) -> str:
    """The one spelling of a location: gs://bucket or gs://bucket/prefix, no trailing slash."""
    return f"gs://{bucket}/{prefix}".rstrip("/")


def check_output_location(location: str) -> None:
    """Reject what can never be an output: a malformed gs:// URL or another scheme (exit 2)."""
    if is_gcs(location):
        parse_gcs_url(location)
    elif "://" in location:
        raise UsageError(f"unsupported output {location!r}: use a local folder or gs://BUCKET/PREFIX")
