"""boto3 clients with CEMS's time-outs and retries; AWS_ENDPOINT_URL points them at the local stack."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from functools import cache
from typing import TYPE_CHECKING, Any, SupportsIndex, overload

import boto3
import botocore.session
from botocore.config import Config
from botocore.exceptions import DataNotFoundError
from botocore.loaders import JSONFileLoader, Loader

if TYPE_CHECKING:
    # Also the client types cems.wiring names: the composition root types what it builds without
    # importing the AWS SDK's stubs itself.
    from mypy_boto3_dynamodb import DynamoDBClient as DynamoDBClient
    from mypy_boto3_sqs import SQSClient as SQSClient

# Lambda handlers answer browsers and LINE within seconds, so calls fail fast and retry a little.
CLIENT_CONFIG = Config(
    connect_timeout=2,
    read_timeout=5,
    retries={"max_attempts": 4, "mode": "standard"},
    tcp_keepalive=True,
)


@cache
def dynamodb() -> DynamoDBClient:
    return _session().client("dynamodb", config=CLIENT_CONFIG)


def client(service: str, config: Config = CLIENT_CONFIG) -> Any:
    """A client of `service` from the faster-loading session (for clients made on first use)."""
    return _session().client(service, config=config)  # type: ignore[call-overload]


def _session() -> boto3.Session:
    """A session like boto3's default one, whose models load faster (see _ModelLoader): creating the
    client is most of a Lambda function's init after the imports."""
    session = botocore.session.get_session()
    # The default loader is only built here, not read; taking its search paths keeps AWS_DATA_PATH.
    default: Loader = session.get_component("data_loader")
    session.register_component(
        "data_loader",
        _ModelLoader(
            extra_search_paths=list(default.search_paths),
            include_default_search_paths=False,
            file_loader=_PlainJSONFileLoader(),
        ),
    )
    return boto3.Session(botocore_session=session)


class _PlainJSONFileLoader(JSONFileLoader):
    """botocore's model files read into plain dicts, which keep their order as OrderedDicts do;
    botocore's OrderedDict parsing takes ~3 times as long (~13 ms for endpoints.json)."""

    def load_file(self, file_path: str) -> Any:
        for suffix, opener in ((".json", open), (".json.gz", gzip.open)):
            try:
                with opener(file_path + suffix, "rb") as file:
                    return json.loads(file.read().decode("utf-8"))
            except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
                continue
        return None


class _ModelLoader(Loader):
    """botocore's Loader, but checking that a service exists looks in that service's own folder:
    botocore lists all ~440 service folders to check one name, twice per client (~20 ms)."""

    def list_available_services(self, type_name: str) -> list[str]:
        return _ServiceNames(self, type_name)


class _ServiceNames(list[str]):
    """The services that have a `type_name` model. `name in` this looks up that one service; anything
    else (such as botocore naming every service when the name is unknown) first lists them all."""

    def __init__(self, loader: Loader, type_name: str) -> None:
        super().__init__()
        self._loader = loader
        self._type_name = type_name
        self._listed = False

    def _all(self) -> list[str]:
        if not self._listed:
            self[:] = Loader.list_available_services(self._loader, self._type_name)
            self._listed = True
        return self

    def __contains__(self, name: object) -> bool:
        if isinstance(name, str) and name and "/" not in name and "\\" not in name:
            try:
                # Cached by the loader, which asks the same when it picks the newest API version.
                if self._loader.list_api_versions(name, self._type_name):
                    return True
            except DataNotFoundError:
                pass
        return list.__contains__(self._all(), name)

    def __iter__(self) -> Iterator[str]:
        return list.__iter__(self._all())

    def __len__(self) -> int:
        return list.__len__(self._all())

    @overload
    def __getitem__(self, index: SupportsIndex) -> str: ...
    @overload
    def __getitem__(self, index: slice) -> list[str]: ...
    def __getitem__(self, index: SupportsIndex | slice) -> str | list[str]:
        return list.__getitem__(self._all(), index)

    def __repr__(self) -> str:
        return list.__repr__(self._all())
