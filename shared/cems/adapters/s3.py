"""S3 adapter: the scenario bucket, uploaded scenario files read as of their event and reports written."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from cems.scenario.loader import REPORTS_PREFIX, ObjectEvent

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client


class ScenarioFiles:
    """The scenario bucket: reading uploaded files and writing reports."""

    def __init__(self, client: S3Client) -> None:
        self.client = client

    def read(self, event: ObjectEvent, max_bytes: int) -> bytes | None:
        """The object's bytes as of the event (its version, else only if the etag still matches);
        None when it has changed or gone since. Raises ValueError when it is over `max_bytes`."""
        request: dict[str, Any] = {"Bucket": event.bucket, "Key": event.key}
        if event.version_id:
            request["VersionId"] = event.version_id
        elif event.etag:
            request["IfMatch"] = f'"{event.etag}"'
        try:
            answer = self.client.get_object(**request)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchKey", "NoSuchVersion", "PreconditionFailed", "412", "404", "AccessDenied"):
                return None
            raise
        body = answer["Body"]
        try:
            if int(answer.get("ContentLength", 0)) > max_bytes:
                raise ValueError(f"{answer['ContentLength']} bytes")
            data: bytes = body.read(max_bytes + 1)
        finally:
            body.close()
        if len(data) > max_bytes:
            raise ValueError(f"more than {max_bytes} bytes")
        return data

    def read_report(self, bucket: str, name: str, max_bytes: int = 1_000_000) -> dict[str, Any] | None:
        """The loader's last report on `scenarios/<name>.json` (None: there is none)."""
        from botocore.exceptions import ClientError as BotoClientError

        try:
            answer = self.client.get_object(Bucket=bucket, Key=f"{REPORTS_PREFIX}{name}.json")
        except BotoClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise
        body = answer["Body"]
        try:
            data: bytes = body.read(max_bytes + 1)
        finally:
            body.close()
        if len(data) > max_bytes:  # the loader writes far less; a file this big was not its own
            raise ValueError(f"the report is more than {max_bytes} bytes")
        report: dict[str, Any] = json.loads(data)
        return report

    def write_report(self, bucket: str, name: str, report: dict[str, Any], text: str) -> str:
        key = f"{REPORTS_PREFIX}{name}.json"
        self.client.put_object(
            Bucket=bucket,
            Key=key,
            Body=json.dumps(report, ensure_ascii=False, indent=2).encode("utf-8"),
            ContentType="application/json; charset=utf-8",
        )
        self.client.put_object(
            Bucket=bucket,
            Key=f"{REPORTS_PREFIX}{name}.txt",
            Body=(text + "\n").encode("utf-8"),
            ContentType="text/plain; charset=utf-8",
        )
        return key
