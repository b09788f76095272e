"""Deploy checks that need no AWS account and no Docker: the template lints, SAM accepts it, and every
function's dependencies resolve for the Lambda platform (python3.13 on arm64).

The dependency check asks pip's configured package index, as `sam build` would; nothing is installed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cems.local.cfn import load_template

ROOT = Path(__file__).parents[2]
TEMPLATE = ROOT / "template.yaml"
BIN = Path(sys.executable).parent
# Each check finishes in a few seconds; the limit only stops a hung tool.
TIMEOUT = 120
LAMBDA_PLATFORM = [
    "--platform",
    "manylinux2014_aarch64",
    "--python-version",
    "3.13",
    "--implementation",
    "cp",
]


def _template() -> dict[str, Any]:
    return load_template(TEMPLATE)


def _resources(kind: str) -> dict[str, dict[str, Any]]:
    return {name: r for name, r in _template()["Resources"].items() if r["Type"] == kind}


def _offline_aws_env(home: Path) -> dict[str, str]:
    """Fake credentials and a fixed region, with nothing read from the user's AWS or SAM config."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SAM_"))}
    env.update(
        {
            "HOME": str(home),
            "AWS_DEFAULT_REGION": "ap-northeast-1",
            "AWS_REGION": "ap-northeast-1",
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_CONFIG_FILE": str(home / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials"),
            "AWS_EC2_METADATA_DISABLED": "true",
            "SAM_CLI_TELEMETRY": "0",
        }
    )
    # Keep the CA bundle the environment points boto at, if any.
    if "AWS_CA_BUNDLE" in os.environ:
        env["AWS_CA_BUNDLE"] = os.environ["AWS_CA_BUNDLE"]
    return env


def _run(args: list[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=TIMEOUT, check=False, **kwargs)


def _explain(result: subprocess.CompletedProcess[str]) -> str:
    return f"{' '.join(map(str, result.args))} -> rc {result.returncode}\n{result.stdout}\n{result.stderr}"


def test_cfn_lint_passes() -> None:
    result = _run([str(BIN / "cfn-lint"), str(TEMPLATE)], cwd=ROOT)
    assert result.returncode == 0, _explain(result)


def test_sam_validate_lint_passes(tmp_path: Path) -> None:
    # --lint runs cfn-lint on the transformed template locally: no credentials or network are needed.
    # cwd is the repository so samconfig.toml applies, as it does for `sam deploy`.
    result = _run(
        [str(BIN / "sam"), "validate", "--lint", "--template-file", str(TEMPLATE)],
        cwd=ROOT,
        env=_offline_aws_env(tmp_path),
    )
    assert result.returncode == 0, _explain(result)
    assert "is a valid SAM Template" in result.stdout + result.stderr, _explain(result)


def test_every_function_folder_has_a_handler_and_requirements() -> None:
    functions = _resources("AWS::Serverless::Function")
    assert functions, "the template declares no functions"
    for name, function in functions.items():
        code = ROOT / function["Properties"]["CodeUri"]
        module = function["Properties"]["Handler"].split(".")[0]
        assert (code / f"{module}.py").is_file(), f"{name}: no {module}.py in {code}"
        assert (code / "app.py").is_file(), f"{name}: no app.py in {code}"
        assert (code / "requirements.txt").is_file(), f"{name}: no requirements.txt in {code}"


def test_the_layer_is_the_shared_folder() -> None:
    layers = _resources("AWS::Serverless::LayerVersion")
    assert [layer["Properties"]["ContentUri"].rstrip("/") for layer in layers.values()] == ["shared"]
    assert (ROOT / "shared" / "requirements.txt").is_file()
    assert (ROOT / "shared" / "cems" / "__init__.py").is_file()


def _function_requirements() -> list[Path]:
    return sorted((ROOT / "functions").glob("*/requirements.txt"))


@pytest.mark.parametrize("requirements", _function_requirements(), ids=lambda p: p.parent.name)
def test_dependencies_resolve_for_the_lambda_platform(requirements: Path, tmp_path: Path) -> None:
    """What `sam build` would install for python3.13 arm64, resolved from wheels only (no Docker)."""
    result = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--dry-run",
            "--ignore-installed",
            "--disable-pip-version-check",
            "--no-input",
            "--target",
            str(tmp_path / "target"),
            *LAMBDA_PLATFORM,
            "--only-binary=:all:",
            "-r",
            str(ROOT / "shared" / "requirements.txt"),
            "-r",
            str(requirements),
        ],
        cwd=ROOT,
    )
    assert result.returncode == 0, _explain(result)
    assert "Would install" in result.stdout, _explain(result)
    assert not list((tmp_path / "target").glob("*")), "a dry run must install nothing"


def test_every_template_function_is_covered_by_the_dependency_check() -> None:
    checked = {p.parent.resolve() for p in _function_requirements()}
    for name, function in _resources("AWS::Serverless::Function").items():
        assert (ROOT / function["Properties"]["CodeUri"]).resolve() in checked, name


class _NoManagedPolicies:
    """samtranslator asks IAM for managed policy ARNs; the template names none, so nothing is needed."""

    def load(self) -> dict[str, str]:
        return {}


def _references(value: Any, found: set[str]) -> set[str]:
    """Logical ids a CloudFormation value points at: Ref, GetAtt and ${...} in Sub."""
    if isinstance(value, dict):
        for key, inner in value.items():
            if key == "Ref" and isinstance(inner, str):
                found.add(inner)
            elif key == "Fn::GetAtt":
                found.add((inner if isinstance(inner, list) else str(inner).split("."))[0])
            elif key == "Fn::Sub":
                text = inner if isinstance(inner, str) else inner[0]
                found.update(re.findall(r"\$\{([^}!.][^}.]*)", text))
                if not isinstance(inner, str):
                    _references(inner[1], found)
            else:
                _references(inner, found)
    elif isinstance(value, list):
        for inner in value:
            _references(inner, found)
    return found


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    visiting: set[str] = set()
    done: set[str] = set()

    def visit(node: str, path: list[str]) -> list[str] | None:
        if node in visiting:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        visiting.add(node)
        for target in sorted(graph[node]):
            found = visit(target, [*path, node])
            if found:
                return found
        visiting.remove(node)
        done.add(node)
        return None

    for node in sorted(graph):
        found = visit(node, [])
        if found:
            return found
    return None


def test_the_deployed_template_has_no_circular_dependency(monkeypatch: pytest.MonkeyPatch) -> None:
    """CloudFormation refuses a stack whose resources depend on each other in a circle (e.g. a bucket
    notifying a function whose environment names the bucket); cfn-lint and `sam validate --lint` do not
    see it, because it appears only after SAM's transform, so the transform is run here."""
    from samtranslator.translator.transform import transform

    monkeypatch.setenv("AWS_DEFAULT_REGION", "ap-northeast-1")
    template = _template()
    for resource in template["Resources"].values():
        properties = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if key in properties:
                properties[key] = "s3://packaged-by-sam/code.zip"  # what `sam package` puts there
    resources = transform(template, {}, _NoManagedPolicies())["Resources"]
    graph = {}
    for name, resource in resources.items():
        depends = resource.get("DependsOn", [])
        targets = _references(resource.get("Properties", {}), set()) | set(
            [depends] if isinstance(depends, str) else depends
        )
        graph[name] = {t for t in targets if t in resources}
    assert _cycle(graph) is None, f"circular dependency: {' -> '.join(_cycle(graph) or [])}"


def test_the_circular_dependency_check_sees_a_bucket_notifying_a_function_that_names_it() -> None:
    graph = {"Bucket": {"Function"}, "Function": {"Role", "Bucket"}, "Role": set()}
    assert _cycle(graph) == ["Bucket", "Function", "Bucket"]


def test_alarms_watch_dead_letters_sender_failures_the_line_limit_and_webhook_signatures() -> None:
    alarms = _resources("AWS::CloudWatch::Alarm")
    watched = {a["Properties"]["MetricName"] for a in alarms.values()}
    assert {
        "ApproximateNumberOfMessagesVisible",
        "LineRecipientsFailed",
        "EmailFailed",
        "LineMonthlyLimitReached",
        "LineWebhookSignatureFailures",
    } <= watched
    dead_letter_queues = {n for n, q in _resources("AWS::SQS::Queue").items() if "DeadLetter" in n}
    watched_queues = {
        a["Properties"]["Dimensions"][0]["Value"]["Fn::GetAtt"][0]
        for a in alarms.values()
        if a["Properties"]["Namespace"] == "AWS/SQS"
    }
    assert watched_queues == dead_letter_queues
    assert all(a["Properties"]["AlarmActions"] == [{"Ref": "AlarmTopic"}] for a in alarms.values())


def test_the_dashboard_shows_metrics_the_functions_emit() -> None:
    [dashboard] = _resources("AWS::CloudWatch::Dashboard").values()
    body, _ = dashboard["Properties"]["DashboardBody"]["Fn::Sub"]
    widgets = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))["widgets"]
    names = {m[1] for w in widgets for m in w["properties"]["metrics"] if m[0] == "CEMS"}
    code = "".join(p.read_text("utf-8") for p in (ROOT / "functions").glob("*/app.py"))
    code += "".join(p.read_text("utf-8") for p in (ROOT / "shared" / "cems").rglob("*.py"))
    # send_line and send_email emit prefix + name ("Line" / "Email" + "Sent", ...).
    spelled = {n: (n, n.removeprefix("Line"), n.removeprefix("Email")) for n in names}
    missing = sorted(n for n, ways in spelled.items() if not any(f'"{way}"' in code for way in ways))
    assert not missing, f"dashboard metrics no function emits: {missing}"
