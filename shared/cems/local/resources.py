"""Creates the template's tables, queues and buckets on the local AWS endpoint (moto in server mode).

Each is named after its logical id (buckets in lower case, as S3 requires), with the template's keys,
indexes, streams, TTL, queue attributes and dead-letter queues. Creation is idempotent, so a stack
restarted against a moto server that is still running keeps its data.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from cems.adapters.dynamodb.items import error_code
from cems.local.cfn import ACCOUNT_ID, REGION, Template

LOCAL_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def local_client(service: str, endpoint_url: str | None) -> Any:
    """A client for the local endpoint (None: moto's in-process mock, for tests)."""
    return boto3.client(
        service,  # type: ignore[call-overload]
        endpoint_url=endpoint_url,
        region_name=REGION,
        config=Config(retries={"max_attempts": 2, "mode": "standard"}),
        **LOCAL_CREDENTIALS,
    )


def bucket_name(logical_id: str) -> str:
    return logical_id.lower()


def create_resources(template: Template, endpoint_url: str) -> list[str]:
    """Creates every supported resource; fills template.refs/attributes; returns what was created."""
    created: list[str] = []
    dynamodb = local_client("dynamodb", endpoint_url)
    for name, resource in template.resources_of_type("AWS::DynamoDB::Table").items():
        create_table(dynamodb, template, name, resource.get("Properties", {}))
        created.append(f"table {name}")
    sqs = local_client("sqs", endpoint_url)
    queues = template.resources_of_type("AWS::SQS::Queue")
    # Dead-letter queues first: a queue's RedrivePolicy names its DLQ's ARN.
    for name in sorted(queues, key=lambda n: "RedrivePolicy" in queues[n].get("Properties", {})):
        _create_queue(sqs, template, name, queues[name].get("Properties", {}))
        created.append(f"queue {name}")
    s3 = local_client("s3", endpoint_url)
    for name in template.resources_of_type("AWS::S3::Bucket"):
        _create_bucket(s3, template, name)
        created.append(f"bucket {bucket_name(name)}")
    sesv2 = local_client("sesv2", endpoint_url)
    for name, resource in template.resources_of_type("AWS::SES::ConfigurationSet").items():
        set_name = _create_configuration_set(sesv2, template, name, resource.get("Properties", {}))
        created.append(f"SES configuration set {set_name}")
    sns = local_client("sns", endpoint_url)
    for name in template.resources_of_type("AWS::SNS::Topic"):
        arn = sns.create_topic(Name=name)["TopicArn"]  # idempotent
        template.refs[name] = arn
        template.attributes[(name, "TopicArn")] = arn
        template.attributes[(name, "TopicName")] = name
        created.append(f"topic {name}")
    created += _create_user_pools(template, local_client("cognito-idp", endpoint_url))
    for name in template.resources_of_type("AWS::Serverless::Function"):
        template.refs[name] = name
        template.attributes[(name, "Arn")] = f"arn:aws:lambda:{REGION}:{ACCOUNT_ID}:function:{name}"
    return created


def create_table(client: Any, template: Template, name: str, props: dict[str, Any]) -> None:
    """One table as the template declares it (keys, indexes, stream, TTL), under `name`."""
    props = template.resolve(props)
    request: dict[str, Any] = {
        "TableName": name,
        "KeySchema": props["KeySchema"],
        "AttributeDefinitions": props["AttributeDefinitions"],
        "BillingMode": "PAY_PER_REQUEST",
    }
    on_demand = props.get("BillingMode") == "PAY_PER_REQUEST"
    for index_kind in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        if index_kind in props:
            request[index_kind] = [
                {k: v for k, v in index.items() if not (on_demand and k == "ProvisionedThroughput")}
                for index in props[index_kind]
            ]
    if not on_demand:
        request["BillingMode"] = "PROVISIONED"
        request["ProvisionedThroughput"] = props["ProvisionedThroughput"]
    if "StreamSpecification" in props:
        request["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
    try:
        description = client.create_table(**request)["TableDescription"]
    except client.exceptions.ResourceInUseException:
        description = client.describe_table(TableName=name)["Table"]
    ttl = props.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled"):
        client.update_time_to_live(
            TableName=name, TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True}
        )
    template.refs[name] = name
    template.attributes[(name, "Arn")] = description["TableArn"]
    if "LatestStreamArn" in description:
        template.attributes[(name, "StreamArn")] = description["LatestStreamArn"]


_QUEUE_ATTRIBUTES = (
    "DelaySeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "VisibilityTimeout",
    "FifoQueue",
    "ContentBasedDeduplication",
)


def _create_queue(client: Any, template: Template, name: str, props: dict[str, Any]) -> None:
    props = template.resolve(props)
    attributes = {
        k: str(props[k]).lower() if isinstance(props[k], bool) else str(props[k])
        for k in _QUEUE_ATTRIBUTES
        if k in props
    }
    if "RedrivePolicy" in props:
        attributes["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
    queue_name = f"{name}.fifo" if props.get("FifoQueue") else name
    url = client.create_queue(QueueName=queue_name, Attributes=attributes)["QueueUrl"]
    arn = client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    template.refs[name] = url
    template.attributes[(name, "Arn")] = arn
    template.attributes[(name, "QueueName")] = queue_name
    template.attributes[(name, "QueueUrl")] = url


def _create_configuration_set(client: Any, template: Template, name: str, props: dict[str, Any]) -> str:
    """The set by its template name (its event destinations stay in the template: moto publishes no
    SES events; the local stack plays them with `POST /_local/ses/<event>`)."""
    set_name = str(template.resolve(props.get("Name", name)))
    try:
        client.create_configuration_set(ConfigurationSetName=set_name)
    except ClientError as exc:  # a restarted stack against a running moto server
        if error_code(exc) not in ("AlreadyExistsException", "ConfigurationSetAlreadyExists"):
            raise
    template.refs[name] = set_name
    return set_name


def _create_bucket(client: Any, template: Template, name: str) -> None:
    bucket = bucket_name(name)
    with contextlib.suppress(
        client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists
    ):
        client.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": REGION})
    template.refs[name] = bucket
    template.attributes[(name, "Arn")] = f"arn:aws:s3:::{bucket}"
    template.attributes[(name, "DomainName")] = f"{bucket}.s3.amazonaws.com"


def _create_user_pools(template: Template, cognito: Any) -> list[str]:
    """Cognito user pools, their app clients and groups (the operators and their roles), in moto's
    Cognito, which issues tokens signed with keys it serves as JWKS, as Cognito does."""
    created = []
    for name, resource in template.resources_of_type("AWS::Cognito::UserPool").items():
        props = template.resolve(resource.get("Properties", {}))
        pool_name = str(props.get("UserPoolName", name))
        # Idempotent across restarts of the stack on one moto server: reuse a pool of the same name.
        pools = cognito.list_user_pools(MaxResults=60)["UserPools"]
        existing = [pool["Id"] for pool in pools if pool["Name"] == pool_name]
        pool_id = existing[0] if existing else cognito.create_user_pool(PoolName=pool_name)["UserPool"]["Id"]
        template.refs[name] = pool_id
        template.attributes[(name, "Arn")] = f"arn:aws:cognito-idp:{REGION}:{ACCOUNT_ID}:userpool/{pool_id}"
        template.attributes[(name, "ProviderName")] = f"cognito-idp.{REGION}.amazonaws.com/{pool_id}"
        created.append(f"user pool {pool_name}")
    for name, resource in template.resources_of_type("AWS::Cognito::UserPoolClient").items():
        props = template.resolve(resource.get("Properties", {}))
        pool_id = str(props["UserPoolId"])
        client_name = str(props.get("ClientName", name))
        clients = cognito.list_user_pool_clients(UserPoolId=pool_id, MaxResults=60)["UserPoolClients"]
        existing = [client["ClientId"] for client in clients if client["ClientName"] == client_name]
        client_id = (
            existing[0]
            if existing
            else cognito.create_user_pool_client(
                UserPoolId=pool_id,
                ClientName=client_name,
                GenerateSecret=bool(props.get("GenerateSecret", False)),
                ExplicitAuthFlows=list(props.get("ExplicitAuthFlows", [])),
            )["UserPoolClient"]["ClientId"]
        )
        template.refs[name] = client_id
        created.append(f"user pool client {client_name}")
    for name, resource in template.resources_of_type("AWS::Cognito::UserPoolGroup").items():
        props = template.resolve(resource.get("Properties", {}))
        pool_id, group = str(props["UserPoolId"]), str(props["GroupName"])
        try:
            cognito.create_group(
                GroupName=group, UserPoolId=pool_id, Description=str(props.get("Description", ""))
            )
        except ClientError as error:
            if error_code(error) != "GroupExistsException":
                raise
        template.refs[name] = group
        created.append(f"operator group {group}")
    return created
