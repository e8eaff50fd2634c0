"""deploy/terraform checked offline: HCL parsed with python-hcl2, every IAM action looked up in
botocore's service models, the daemon's policy held to the calls it makes on its own resources,
and the formatting checked by HashiCorp's HCL formatter (hclwrite.Format, which `terraform fmt`
applies) from the npm package @cdktf/hcl-tools; `terraform fmt -check` too when terraform is
installed (optional: no registry this project installs from ships it). `terraform validate` is
not run: it needs `terraform init` to download the AWS provider, which this network cannot reach.
"""

from __future__ import annotations

import copy
import fnmatch
import json
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import botocore.session
import hcl2
import pytest
import yaml

from tests.fixtures.tools import node_package, optional_tool

ROOT = Path(__file__).resolve().parents[2]
TF = ROOT / "deploy" / "terraform"
# IAM service prefix -> botocore service models that hold its operations.
SERVICES = {
    "dynamodb": ["dynamodb", "dynamodbstreams"],
    "kinesis": ["kinesis"],
    "sqs": ["sqs"],
    "s3": ["s3"],
    "sns": ["sns"],
    "sts": ["sts"],
    "secretsmanager": ["secretsmanager"],
}
# Batch operations IAM authorizes with the single action (the Service Authorization
# Reference lists no such actions; a policy naming them grants nothing).
NOT_IAM_ACTIONS = {
    "sqs:SendMessageBatch",
    "sqs:DeleteMessageBatch",
    "sqs:ChangeMessageVisibilityBatch",
}
PREFIX_OBJECTS = "aws_s3_bucket.envelopes.arn}/var.dead_letter_prefix}*"
# What the daemon calls, on which resource (the brief's list): resource reference -> actions.
ALLOWED = {
    "aws_dynamodb_table.source.arn": {"dynamodb:DescribeTable"},
    "aws_dynamodb_table.source.arn}/stream/*": {
        "dynamodb:DescribeStream",
        "dynamodb:GetShardIterator",
        "dynamodb:GetRecords",
        "dynamodb:ListStreams",
    },
    "aws_dynamodb_table.leases.arn": {
        "dynamodb:CreateTable",
        "dynamodb:DescribeTable",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:Scan",
    },
    "aws_dynamodb_table.read_model.arn": {
        "dynamodb:UpdateItem",
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:DescribeTable",
        "dynamodb:CreateTable",
        "dynamodb:UpdateTable",
    },
    "aws_dynamodb_table.read_model.arn}/index/*": {"dynamodb:Query"},
    "var.kinesis_stream_arn": {
        "kinesis:ListShards",
        "kinesis:GetShardIterator",
        "kinesis:GetRecords",
        "kinesis:DescribeStreamSummary",
    },
    "aws_sqs_queue.dead_letter.arn": {"sqs:SendMessage"},
    PREFIX_OBJECTS: {"s3:PutObject"},
    "aws_dynamodb_table.dead_letter_ledger.arn": {
        "dynamodb:CreateTable",
        "dynamodb:DescribeTable",
        "dynamodb:UpdateTimeToLive",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
    },
    "var.signing_key_secret_arn": {"secretsmanager:GetSecretValue"},
    "aws_sns_topic.alerts.arn": {"sns:Publish"},
}
# What the operator tools call (consumer/cli/dlq.py, consumer/cli/leases.py, status).
OPERATOR_ALLOWED = {
    "aws_sqs_queue.dead_letter.arn": {
        "sqs:ReceiveMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:DeleteMessage",
        "sqs:GetQueueAttributes",
    },
    "aws_sqs_queue.quarantine.arn": {"sqs:SendMessage"},
    PREFIX_OBJECTS: {"s3:GetObject", "s3:DeleteObject"},
    "aws_dynamodb_table.dead_letter_ledger.arn": {
        "dynamodb:DescribeTable",
        "dynamodb:Scan",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:DeleteItem",
    },
    "aws_dynamodb_table.leases.arn": {"dynamodb:Scan", "dynamodb:GetItem", "dynamodb:UpdateItem"},
    "aws_dynamodb_table.read_model.arn": {
        "dynamodb:UpdateItem",
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:DescribeTable",
    },
    "aws_dynamodb_table.source.arn": {"dynamodb:DescribeTable"},
    "aws_dynamodb_table.source.arn}/stream/*": {
        "dynamodb:DescribeStream",
        "dynamodb:GetShardIterator",
    },
    "var.kinesis_stream_arn": {"kinesis:GetShardIterator", "kinesis:DescribeStreamSummary"},
    "var.signing_key_secret_arn": {"secretsmanager:GetSecretValue"},
}


def unquote(value: Any) -> Any:
    """python-hcl2 keeps string literals' quotes; strip them, recursively."""
    if isinstance(value, str):
        return value[1:-1] if len(value) >= 2 and value[0] == value[-1] == '"' else value
    if isinstance(value, list):
        return [unquote(v) for v in value]
    if isinstance(value, dict):
        return {unquote(k): unquote(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def tf() -> dict[str, list[dict[str, Any]]]:
    """All top-level blocks of every .tf file, merged by block type."""
    merged: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(TF.glob("*.tf")):
        with path.open() as handle:
            for key, blocks in unquote(hcl2.load(handle)).items():
                merged.setdefault(key, []).extend(blocks)
    return merged


def block(tf: dict[str, list[dict[str, Any]]], kind: str, type_: str, name: str) -> dict[str, Any]:
    """One resource or data block by type and name."""
    for entry in tf[kind]:
        if type_ in entry and name in entry[type_]:
            return entry[type_][name]
    raise KeyError(f"{kind} {type_}.{name}")


def statements(document: dict[str, Any]) -> list[dict[str, Any]]:
    """A policy document's statements, including those generated by dynamic blocks."""
    found = list(document.get("statement", []))
    for dynamic in document.get("dynamic", []):
        for generated in dynamic.get("statement", {}).get("content", []):
            found.append({**generated, "resources": [dynamic["statement"]["for_each"]]})
    return found


def policy_documents(tf: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Every aws_iam_policy_document data block by name."""
    return {
        name: doc
        for entry in tf["data"]
        for name, doc in entry.get("aws_iam_policy_document", {}).items()
    }


@cache
def operations(service: str) -> frozenset[str]:
    """Operation names of one botocore service model."""
    model = botocore.session.get_session().get_service_model(service)
    return frozenset(model.operation_names)


def unknown_actions(actions: list[str]) -> list[str]:
    """Actions whose service prefix or operation no botocore model knows (wildcards must match)."""
    bad = []
    for action in actions:
        prefix, _, name = action.partition(":")
        known = set().union(*(operations(s) for s in SERVICES.get(prefix, [])))
        if not fnmatch.filter(known, name):
            bad.append(action)
    return bad


def test_every_iam_action_exists_in_the_botocore_models(
    tf: dict[str, list[dict[str, Any]]],
) -> None:
    actions = [
        action
        for document in policy_documents(tf).values()
        for statement in statements(document)
        for action in statement["actions"]
    ]
    assert len(actions) > 30
    assert unknown_actions(actions) == []
    assert unknown_actions(["dynamodb:GetRecord", "kinesis:GetRecords", "sqs:Send*"]) == [
        "dynamodb:GetRecord"
    ]
    assert unknown_actions(["lambda:InvokeFunction"]) == ["lambda:InvokeFunction"]


def resource_key(resource: str) -> str:
    """A statement resource as the ALLOWED key: the reference without ${ } quoting."""
    return resource.removeprefix("${").removesuffix("}").replace("${", "")


def privilege_problems(
    document: dict[str, Any], allowed_calls: dict[str, set[str]] | None = None
) -> list[str]:
    """Anything in a policy beyond the calls its user makes on its own resources."""
    allowed_calls = ALLOWED if allowed_calls is None else allowed_calls
    problems = []
    for statement in statements(document):
        if statement.get("effect", "Allow") != "Allow":
            continue
        for resource in statement["resources"]:
            key = resource_key(resource)
            # A dynamic block's resource is its for_each expression.
            if key.startswith("var.allow_migrate ?"):
                key = "aws_dynamodb_table.read_model.arn"
            elif key.startswith("var.kinesis_stream_arn !="):
                key = "var.kinesis_stream_arn"
            elif key.startswith("var.signing_key_secret_arn !="):
                key = "var.signing_key_secret_arn"
            allowed = allowed_calls.get(key)
            if allowed is None:
                problems.append(f"{statement.get('sid')}: resource {resource} is not its own")
                continue
            for action in statement["actions"]:
                if action not in allowed:
                    problems.append(f"{statement.get('sid')}: {action} on {resource}")
    return problems


def test_daemon_policy_grants_only_its_calls_on_its_resources(
    tf: dict[str, list[dict[str, Any]]],
) -> None:
    document = policy_documents(tf)["projector"]
    assert privilege_problems(document) == []
    granted = {a for s in statements(document) for a in s["actions"]}
    assert granted == set().union(*ALLOWED.values()), "a call the daemon makes is missing"


def test_the_daemon_may_only_send_dead_letters_and_the_operator_role_does_the_rest(
    tf: dict[str, list[dict[str, Any]]],
) -> None:
    documents = policy_documents(tf)
    daemon = {a for s in statements(documents["projector"]) for a in s["actions"]}
    for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "s3:GetObject", "s3:DeleteObject"):
        assert action not in daemon, action
    operator = documents["operator"]
    assert privilege_problems(operator, OPERATOR_ALLOWED) == []
    granted = {a for s in statements(operator) for a in s["actions"]}
    assert granted == set().union(*OPERATOR_ALLOWED.values()), "a call a tool makes is missing"
    # Envelopes only under the prefix, for both: a forged pointer elsewhere is denied by IAM too.
    for document in (documents["projector"], operator):
        s3 = [s for s in statements(document) if any(a.startswith("s3:") for a in s["actions"])]
        assert [resource_key(r) for s in s3 for r in s["resources"]] == [PREFIX_OBJECTS]
    role = block(tf, "resource", "aws_iam_role", "operator")
    assert "var.operator_principal_arns" in role["count"]


def test_no_policy_names_a_batch_operation_iam_does_not_know(
    tf: dict[str, list[dict[str, Any]]],
) -> None:
    actions = {
        action
        for document in policy_documents(tf).values()
        for statement in statements(document)
        for action in statement["actions"]
    }
    assert actions & NOT_IAM_ACTIONS == set()


@pytest.mark.parametrize(
    "breakage",
    [
        lambda s: s[0].update(resources=["*"]),
        lambda s: s[1]["actions"].append("dynamodb:DeleteTable"),
        lambda s: s[2].update(resources=["${aws_dynamodb_table.source.arn}"]),
    ],
    ids=["wildcard-resource", "extra-action", "lease-actions-on-source-table"],
)
def test_privilege_check_rejects_a_broader_policy(
    tf: dict[str, list[dict[str, Any]]], breakage: Any
) -> None:
    document = copy.deepcopy(policy_documents(tf)["projector"])
    breakage(document["statement"])
    assert privilege_problems(document) != []


def test_tables_queue_alarm_and_bucket_are_configured(
    tf: dict[str, list[dict[str, Any]]],
) -> None:
    source = block(tf, "resource", "aws_dynamodb_table", "source")
    assert source["stream_enabled"] is True
    assert source["stream_view_type"] == "NEW_AND_OLD_IMAGES"
    leases = block(tf, "resource", "aws_dynamodb_table", "leases")
    assert leases["hash_key"] == "leaseKey"  # the KCL's lease table key
    read_model = block(tf, "resource", "aws_dynamodb_table", "read_model")
    (gsi,) = read_model["global_secondary_index"]
    assert gsi["name"] == "flight_status-departure_time-index"
    alarm = block(tf, "resource", "aws_cloudwatch_metric_alarm", "dead_letters")
    assert alarm["metric_name"] == "ApproximateNumberOfMessagesVisible"
    assert alarm["threshold"] == 0 and alarm["comparison_operator"] == "GreaterThanThreshold"
    assert "aws_sqs_queue.dead_letter.name" in alarm["dimensions"]["QueueName"]
    public = block(tf, "resource", "aws_s3_bucket_public_access_block", "envelopes")
    for key in ("block_public_acls", "block_public_policy", "ignore_public_acls"):
        assert public[key] is True
    assert public["restrict_public_buckets"] is True
    sse = block(tf, "resource", "aws_s3_bucket_server_side_encryption_configuration", "envelopes")
    assert sse["rule"][0]["apply_server_side_encryption_by_default"][0]["sse_algorithm"]
    lifecycle = block(tf, "resource", "aws_s3_bucket_lifecycle_configuration", "envelopes")
    assert lifecycle["rule"][0]["expiration"][0]["days"]
    ledger = block(tf, "resource", "aws_dynamodb_table", "dead_letter_ledger")
    assert ledger["hash_key"] == "id"  # consumer/dead_letters/ledger.py KEY
    assert ledger["ttl"][0]["attribute_name"] == "expires_at" and ledger["ttl"][0]["enabled"]


def test_irsa_trust_names_the_kubernetes_service_account(
    tf: dict[str, list[dict[str, Any]]],
) -> None:
    variables = {name: v for entry in tf["variable"] for name, v in entry.items()}
    account = yaml.safe_load((ROOT / "deploy/k8s/serviceaccount.yaml").read_text())
    assert variables["k8s_namespace"]["default"] == account["metadata"]["namespace"]
    assert variables["k8s_service_account"]["default"] == account["metadata"]["name"]
    (statement,) = policy_documents(tf)["assume_irsa"]["statement"]
    assert statement["actions"] == ["sts:AssumeRoleWithWebIdentity"]


HCL_FORMAT = """
import { format } from "@cdktf/hcl-tools";
import { readFileSync } from "node:fs";
const changed = [];
for (const path of process.argv.slice(1)) {
  const text = readFileSync(path, "utf8");
  if ((await format(text)) !== text) changed.push(path);
}
console.log(JSON.stringify(changed));
"""
TERRAFORM_OPTIONAL = "no registry this project installs from ships it; hclwrite checks the format"


def unformatted(paths: list[Path]) -> list[str]:
    """The files HashiCorp's HCL formatter would change."""
    node_package("@cdktf/hcl-tools")
    done = subprocess.run(
        ["node", "--input-type=module", "-e", HCL_FORMAT, *map(str, paths)],
        cwd=ROOT / ".tools",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    changed: list[str] = json.loads(done.stdout)
    return changed


def misformatted_copy(tmp_path: Path) -> Path:
    text = (TF / "outputs.tf").read_text().replace("  value ", "value   ", 1)
    path = tmp_path / "outputs.tf"
    path.write_text(text)
    return path


def test_terraform_files_are_formatted() -> None:
    assert unformatted(sorted(TF.glob("*.tf"))) == []


def test_the_format_check_notices_a_misformatted_file(tmp_path: Path) -> None:
    bad = misformatted_copy(tmp_path)
    assert unformatted([bad]) == [str(bad)]


def test_terraform_fmt_agrees_when_terraform_is_installed(tmp_path: Path) -> None:
    terraform = optional_tool("terraform", TERRAFORM_OPTIONAL)
    done = subprocess.run(
        [terraform, "fmt", "-check", "-recursive", "-diff", str(TF)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout
    misformatted_copy(tmp_path)
    done = subprocess.run(
        [terraform, "fmt", "-check", str(tmp_path)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode != 0
