"""Reads template.yaml for the local stack: resources, function events and intrinsic functions.

The local stack creates its tables, queues and buckets and wires its functions from the template
itself, so local never drifts from the cloud. Only the intrinsics a SAM template of ours uses are
resolved (Ref, GetAtt, Sub, Join, Select, Split, If with literal conditions); an unsupported one
fails loudly at start rather than giving a function a wrong value.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REGION = "ap-northeast-1"
# moto's default account, so ARNs the stack computes match the ones moto returns.
ACCOUNT_ID = "123456789012"
STACK_NAME = "cems-local"

_SHORT_TAGS = {
    "Ref": "Ref",
    "Condition": "Condition",
    **{
        name: f"Fn::{name}"
        for name in (
            "GetAtt",
            "Sub",
            "Join",
            "Select",
            "Split",
            "If",
            "Equals",
            "Not",
            "And",
            "Or",
            "FindInMap",
            "Base64",
            "ImportValue",
            "GetAZs",
            "Cidr",
            "Transform",
        )
    },
}


class _TemplateLoader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags (!Ref, !GetAtt, !Sub, ...) read as long form."""


def _construct_tag(loader: yaml.SafeLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = _SHORT_TAGS.get(suffix)
    if name is None:
        raise yaml.constructor.ConstructorError(None, None, f"unknown tag !{suffix}", node.start_mark)
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if name == "Fn::GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


_TemplateLoader.add_multi_constructor("!", _construct_tag)


def load_template(path: Path) -> dict[str, Any]:
    loaded = yaml.load(path.read_text(encoding="utf-8"), Loader=_TemplateLoader)  # noqa: S506 - SafeLoader subclass
    if not isinstance(loaded, dict) or "Resources" not in loaded:
        raise ValueError(f"{path} is not a CloudFormation template")
    return loaded


@dataclass
class Template:
    """A loaded template and what the local stack knows about each resource once it is created."""

    path: Path
    body: dict[str, Any]
    parameter_overrides: dict[str, str] = field(default_factory=dict)
    # Logical id -> what Ref returns (table name, queue URL, bucket name, function name).
    refs: dict[str, str] = field(default_factory=dict)
    # (logical id, attribute) -> what GetAtt returns (Arn, StreamArn, QueueName, ...).
    attributes: dict[tuple[str, str], str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path, parameter_overrides: Mapping[str, str] | None = None) -> Template:
        return cls(path=path, body=load_template(path), parameter_overrides=dict(parameter_overrides or {}))

    @property
    def directory(self) -> Path:
        return self.path.parent

    @property
    def resources(self) -> dict[str, dict[str, Any]]:
        resources: dict[str, dict[str, Any]] = self.body["Resources"]
        return resources

    def resources_of_type(self, *types: str) -> dict[str, dict[str, Any]]:
        return {name: r for name, r in self.resources.items() if r.get("Type") in types}

    def function_globals(self) -> dict[str, Any]:
        globals_: dict[str, Any] = self.body.get("Globals", {}).get("Function", {})
        return globals_

    def parameter(self, name: str) -> str:
        if name in self.parameter_overrides:
            return self.parameter_overrides[name]
        spec = self.body.get("Parameters", {}).get(name)
        if spec is None or "Default" not in spec:
            raise KeyError(f"template parameter {name} has no default; pass it to the local stack")
        return str(spec["Default"])

    def condition(self, name: str) -> bool:
        return bool(self.resolve(self.body.get("Conditions", {})[name]))

    def resolve(self, value: Any) -> Any:
        """The value with every intrinsic function replaced by its local result."""
        if isinstance(value, list):
            return [self.resolve(v) for v in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            ((key, argument),) = value.items()
            handler = self._intrinsics().get(key)
            if handler is not None:
                return handler(argument)
        return {k: self.resolve(v) for k, v in value.items()}

    def _intrinsics(self) -> dict[str, Callable[[Any], Any]]:
        return {
            "Ref": self._ref,
            "Fn::GetAtt": self._get_att,
            "Fn::Sub": self._sub,
            "Fn::Join": lambda a: str(a[0]).join(str(self.resolve(v)) for v in self.resolve(a[1])),
            "Fn::Select": lambda a: self.resolve(a[1])[int(self.resolve(a[0]))],
            "Fn::Split": lambda a: str(self.resolve(a[1])).split(str(a[0])),
            "Fn::If": lambda a: self.resolve(a[1] if self.condition(a[0]) else a[2]),
            "Fn::Equals": lambda a: self.resolve(a[0]) == self.resolve(a[1]),
            "Fn::Not": lambda a: not self.resolve(a[0]),
            "Fn::And": lambda a: all(self.resolve(v) for v in a),
            "Fn::Or": lambda a: any(self.resolve(v) for v in a),
            "Condition": self.condition,
        }

    def _ref(self, name: str) -> str:
        pseudo = {
            "AWS::Region": REGION,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::StackName": STACK_NAME,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": "",
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.body.get("Parameters", {}):
            return self.parameter(name)
        if name in self.refs:
            return self.refs[name]
        if name in self.resources:
            # Not created locally (a layer, an API, a log group): its logical id stands in.
            return name
        raise KeyError(f"!Ref {name}: no such parameter or resource in {self.path.name}")

    def _get_att(self, argument: Any) -> str:
        resource, attribute = self.resolve(argument)
        key = (str(resource), str(attribute))
        if key in self.attributes:
            return self.attributes[key]
        if attribute == "Arn" and resource in self.resources:
            return f"arn:aws:local:{REGION}:{ACCOUNT_ID}:{resource}"
        raise KeyError(f"!GetAtt {resource}.{attribute} is not known to the local stack")

    def _sub(self, argument: Any) -> str:
        text, variables = (argument, {}) if isinstance(argument, str) else (argument[0], argument[1])
        resolved = {k: str(self.resolve(v)) for k, v in variables.items()}

        def replace(match: re.Match[str]) -> str:
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in resolved:
                return resolved[name]
            if "." in name:
                resource, attribute = name.split(".", 1)
                return self._get_att([resource, attribute])
            return self._ref(name)

        return re.sub(r"\$\{([^}]+)\}", replace, str(text))


@dataclass(frozen=True)
class FunctionSpec:
    """A function as the template declares it, with globals applied."""

    logical_id: str
    code_dir: Path
    handler: str
    environment: dict[str, str]
    timeout: int
    events: dict[str, dict[str, Any]]
    # As written (intrinsics unresolved): retries and the on-failure destination of asynchronous
    # invocations (S3, SNS, schedules); the pollers resolve it once the destination exists.
    event_invoke_config: dict[str, Any] = field(default_factory=dict)

    @property
    def module_file(self) -> Path:
        return self.code_dir / (self.handler.rsplit(".", 1)[0].replace(".", "/") + ".py")

    @property
    def handler_name(self) -> str:
        return self.handler.rsplit(".", 1)[1]


def function_specs(template: Template) -> list[FunctionSpec]:
    """Every AWS::Serverless::Function, with environment variables resolved against local resources."""
    globals_ = template.function_globals()
    specs = []
    for name, resource in template.resources_of_type("AWS::Serverless::Function").items():
        props = resource.get("Properties", {})
        variables = {
            **globals_.get("Environment", {}).get("Variables", {}),
            **props.get("Environment", {}).get("Variables", {}),
        }
        specs.append(
            FunctionSpec(
                logical_id=name,
                code_dir=(template.directory / props["CodeUri"]).resolve(),
                handler=props.get("Handler", globals_.get("Handler", "app.lambda_handler")),
                environment={k: str(template.resolve(v)) for k, v in variables.items()},
                timeout=int(props.get("Timeout", globals_.get("Timeout", 3))),
                events=props.get("Events", {}),
                event_invoke_config=props.get("EventInvokeConfig", globals_.get("EventInvokeConfig", {})),
            )
        )
    return specs
