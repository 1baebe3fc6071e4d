"""Runs moto in server mode on 127.0.0.1 for the test harness.

Prints the chosen port on stdout, then serves until its standard input closes, so the server
never outlives the Deno process that started it.

moto 5.2.5 lacks EC2 DeleteLaunchTemplateVersions (it answers HTTP 500), which the
launch-template task calls to prune old versions. `add_delete_launch_template_versions` adds it
before the server starts, as the EC2 API reference describes it:

- LaunchTemplateId or LaunchTemplateName (not both) and LaunchTemplateVersion.N, 1 to 200
  version numbers;
- each version is deleted or refused on its own: refusals go in
  unsuccessfullyDeletedLaunchTemplateVersionSet with a ResponseError code,
  `launchTemplateVersionDoesNotExist` for an unknown version,
  `launchTemplateVersionIsDefaultVersion` for the default one (EC2 never deletes it), and
  `launchTemplateIdDoesNotExist` / `launchTemplateNameDoesNotExist` for an unknown template;
- version numbers are never reused, and the remaining versions keep their numbers.

moto finds versions by list position (number - 1), which deleting would break, so version
lookups, numbering and DescribeLaunchTemplateVersions' MinVersion/MaxVersion are patched to go
by number. The patch checks the moto internals it relies on and exercises itself at start: if
moto changes, the server fails to start instead of answering wrongly. Should moto implement the
action itself, the server also refuses to start: then remove this patch.

moto 5.2.5's CreateFleet launches through run_instances without the template, so its instances
lack the tags EC2 stamps on every instance launched from a launch template
(`aws:ec2launchtemplate:id`, `aws:ec2launchtemplate:version`: the version number the launch
resolved, `$Default` included) and on every fleet instance (`aws:ec2:fleet-id`).
`add_fleet_launch_template_tags` stamps them after the fleet is made, as EC2 does, so tests can
launch the way fleet-actions' provision does (type `instant`, version `$Default`) and the reaper's
rollout sees what it would see on AWS. It checks itself at start like the patch above, and refuses
to start once moto stamps the tags itself.

moto before 5.2.5 (5.2.1, say) ignores SQS ListQueues' MaxResults and never answers a NextToken,
which the resource-pools task follows. `add_list_queues_pages` gives such a moto pages as the SQS
API reference describes them (MaxResults 1 to 1000; a NextToken only when MaxResults was given
and more queues remain; without MaxResults at most 1000 queues); a moto that pages already is left
alone. So the suite runs on any moto 5.x that serves the calls.

moto 5.2 also shows, in DescribeLaunchTemplates, the tags a template was created with and
never those added later by CreateTags, which EC2 does show; so a template refresh adopted (tagged
after creation) would look untagged on every later run. `show_live_launch_template_tags` makes a
template's tags read moto's tag store, as DescribeTags does, and checks itself at start.
"""

import inspect
import sys
from urllib.parse import urlparse

from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.responses import ActionResult
from moto.ec2.exceptions import (
    InvalidLaunchTemplateVersionNotFound,
    InvalidParameterCombination,
    InvalidParameterValue,
    MissingParameter,
)
from moto.ec2.models import ec2_backends
from moto.ec2.models.fleets import FleetsBackend
from moto.ec2.models.launch_templates import (
    LaunchTemplate,
    LaunchTemplateBackend,
    LaunchTemplateVersion,
)
from moto.ec2.responses.launch_templates import LaunchTemplates
from moto.server import ThreadedMotoServer
from moto.sqs.exceptions import InvalidParameterValue as SqsInvalidParameterValue
from moto.sqs.responses import SQSResponse

DEFAULT_VERSION_CODE = "launchTemplateVersionIsDefaultVersion"
MAX_VERSIONS = 200


def create_version(self, data, description):
    # Counts every version ever made, so a deleted number is never reused.
    self.highest_version_number = getattr(self, "highest_version_number", 0) + 1
    version = LaunchTemplateVersion(self, self.highest_version_number, data, description)
    self.versions.append(version)
    return version


def get_version(self, num):
    if str(num).lower() == "$latest":
        return self.latest_version()
    if str(num).lower() == "$default":
        return self.default_version()
    found = [v for v in self.versions if str(v.number) == str(num)]
    if not found:
        raise InvalidLaunchTemplateVersionNotFound(template_id=self.id, version=num)
    return found[0]


def default_version(self):
    return self.get_version(self.default_version_number)


def describe_versions_by_number(original):
    def describe(self, template_name, template_id, versions, min_version, max_version, max_results):
        if versions or not (min_version or max_version) or not (template_name or template_id):
            return original(
                self, template_name, template_id, versions, min_version, max_version, max_results
            )
        template = (
            self.get_launch_template_by_name(template_name)
            if template_name
            else self.get_launch_template(template_id)
        )
        chosen = [
            (template, v)
            for v in template.versions
            if (not min_version or v.number >= min_version)
            and (not max_version or v.number <= max_version)
        ]
        return chosen[:max_results]

    return describe


def delete_versions(self, template_name, template_id, versions):
    """Deletes each version it can; returns both result sets, as EC2 answers."""
    if template_name:
        template = self.launch_templates.get(self.launch_template_name_to_ids.get(template_name))
        missing = "launchTemplateNameDoesNotExist", f"Launch template {template_name} not found."
    else:
        template = self.launch_templates.get(template_id)
        missing = "launchTemplateIdDoesNotExist", f"Launch template {template_id} not found."
    names = {"LaunchTemplateId": template_id, "LaunchTemplateName": template_name}
    if template:
        names = {"LaunchTemplateId": template.id, "LaunchTemplateName": template.name}
    names = {k: v for k, v in names.items() if v}
    deleted, refused = [], []
    for number in map(int, versions):
        found = [v for v in template.versions if v.number == number] if template else []
        if template is None:
            code, message = missing
        elif not found:
            code = "launchTemplateVersionDoesNotExist"
            message = f"Version {number} of launch template {template.id} does not exist."
        elif template.is_default(found[0]):
            code = DEFAULT_VERSION_CODE
            message = f"Version {number} is the default version of {template.id}."
        else:
            template.versions.remove(found[0])
            deleted.append({**names, "VersionNumber": number})
            continue
        error = {"Code": code, "Message": message}
        refused.append({**names, "VersionNumber": number, "ResponseError": error})
    return {
        "SuccessfullyDeletedLaunchTemplateVersions": deleted,
        "UnsuccessfullyDeletedLaunchTemplateVersions": refused,
    }


def delete_launch_template_versions(self):
    name = self._get_param("LaunchTemplateName")
    template_id = self._get_param("LaunchTemplateId")
    versions = self._get_param("Versions", [])
    if name and template_id:
        raise InvalidParameterCombination(
            "Specify either the launch template ID or the launch template name, not both."
        )
    if not name and not template_id:
        raise MissingParameter("The request must contain LaunchTemplateId or LaunchTemplateName")
    if not versions:
        raise MissingParameter("The request must contain the parameter LaunchTemplateVersion")
    if len(versions) > MAX_VERSIONS:
        raise InvalidParameterValue(
            f"LaunchTemplateVersion: {len(versions)} versions; at most {MAX_VERSIONS} per request"
        )
    malformed = [v for v in versions if not str(v).isdigit()]
    if malformed:
        raise InvalidParameterValue(
            f"LaunchTemplateVersion: {', '.join(malformed)} is not a version number"
        )
    self.error_on_dryrun()
    result = self.ec2_backend.delete_launch_template_versions(name, template_id, versions)
    return ActionResult(result)


def add_delete_launch_template_versions():
    needed = {
        LaunchTemplate: [
            "create_version",
            "get_version",
            "default_version",
            "latest_version",
            "is_default",
        ],
        LaunchTemplateBackend: [
            "describe_launch_template_versions",
            "get_launch_template",
            "get_launch_template_by_name",
        ],
        LaunchTemplates: ["_get_param", "error_on_dryrun"],
    }
    missing = [f"{c.__name__}.{m}" for c, ms in needed.items() for m in ms if not hasattr(c, m)]
    if missing:
        raise RuntimeError(f"moto lacks {', '.join(missing)}: update {__file__}")
    if hasattr(LaunchTemplates, "delete_launch_template_versions"):
        raise RuntimeError(f"moto has DeleteLaunchTemplateVersions: drop the patch in {__file__}")
    LaunchTemplate.create_version = create_version
    LaunchTemplate.get_version = get_version
    LaunchTemplate.default_version = default_version
    LaunchTemplateBackend.describe_launch_template_versions = describe_versions_by_number(
        LaunchTemplateBackend.describe_launch_template_versions
    )
    LaunchTemplateBackend.delete_launch_template_versions = delete_versions
    LaunchTemplates.delete_launch_template_versions = delete_launch_template_versions
    check()


def check():
    """Deletes versions of a scratch template and checks what remains, or raises."""
    backend = ec2_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
    template = backend.create_launch_template("moto-server-check", "", {}, {})
    try:
        for _ in range(3):
            template.create_version({}, "")
        backend.modify_launch_template("3", template_id=template.id)
        result = backend.delete_launch_template_versions(None, template.id, ["2", "3", "4", "9"])
        template.create_version({}, "")
        refused = result["UnsuccessfullyDeletedLaunchTemplateVersions"]
        actual = (
            [v["VersionNumber"] for v in result["SuccessfullyDeletedLaunchTemplateVersions"]],
            [e["ResponseError"]["Code"] for e in refused],
            [v.number for v in template.versions],
            [template.get_version(n).number for n in ("1", "$Default", "$Latest")],
        )
        expected = (
            [2, 4],
            [DEFAULT_VERSION_CODE, "launchTemplateVersionDoesNotExist"],
            [1, 3, 5],
            [1, 3, 5],
        )
        if actual != expected:
            raise RuntimeError(f"{__file__} self-check: got {actual}, expected {expected}")
    finally:
        backend.delete_launch_template(None, template.id)


TEMPLATE_ID_TAG = "aws:ec2launchtemplate:id"
TEMPLATE_VERSION_TAG = "aws:ec2launchtemplate:version"
FLEET_ID_TAG = "aws:ec2:fleet-id"


def fleet_instances(fleet):
    """(instance, launch spec) of every instance a fleet launched, on-demand and spot."""
    found = [(item["instance"], item.get("launch_spec")) for item in fleet.on_demand_instances]
    for request in fleet.spot_requests:
        if getattr(request, "instance", None) is not None:
            found.append((request.instance, request.launch_spec))
    return found


def stamp_fleet_tags(original):
    def create_fleet(self, *args, **kwargs):
        fleet = original(self, *args, **kwargs)
        for instance, spec in fleet_instances(fleet):
            tags = {FLEET_ID_TAG: fleet.id}
            template = getattr(spec, "launch_template_spec", None) or {}
            if template.get("LaunchTemplateId"):
                version = template.get("Version")
                if version is None:
                    lt = self.get_launch_template(template["LaunchTemplateId"])
                    version = lt.default_version_number
                tags[TEMPLATE_ID_TAG] = template["LaunchTemplateId"]
                tags[TEMPLATE_VERSION_TAG] = str(version)
            instance.add_tags(tags)
        return fleet

    return create_fleet


def add_fleet_launch_template_tags():
    if not hasattr(FleetsBackend, "create_fleet"):
        raise RuntimeError(f"moto lacks FleetsBackend.create_fleet: update {__file__}")
    backend = ec2_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
    before = fleet_check(backend)
    if before.get(TEMPLATE_VERSION_TAG) is not None:
        raise RuntimeError(f"moto stamps template tags on fleets: drop the patch in {__file__}")
    FleetsBackend.create_fleet = stamp_fleet_tags(FleetsBackend.create_fleet)
    after = fleet_check(backend)
    expected = {TEMPLATE_VERSION_TAG: "2", "fleet": True, "template": True}
    actual = {
        TEMPLATE_VERSION_TAG: after.get(TEMPLATE_VERSION_TAG),
        "fleet": after.get(FLEET_ID_TAG, "").startswith("fleet-"),
        "template": after.get(TEMPLATE_ID_TAG, "").startswith("lt-"),
    }
    if actual != expected:
        raise RuntimeError(f"{__file__} fleet self-check: got {actual}, expected {expected}")


def fleet_check(backend):
    """Launches one instant-fleet instance from `$Default` (version 2 of 3); returns its tags."""
    data = {"ImageId": next(iter(backend.amis)), "InstanceType": "t3.micro"}
    template = backend.create_launch_template("moto-server-fleet-check", "", data, {})
    try:
        template.create_version(data, "")
        template.create_version(data, "")
        backend.modify_launch_template("2", template_id=template.id)
        fleet = backend.create_fleet(
            on_demand_options={},
            spot_options={},
            target_capacity_specification={
                "TotalTargetCapacity": 1,
                "DefaultTargetCapacityType": "on-demand",
            },
            launch_template_configs=[
                {
                    "LaunchTemplateSpecification": {
                        "LaunchTemplateId": template.id,
                        "Version": "$Default",
                    }
                }
            ],
            excess_capacity_termination_policy=None,
            replace_unhealthy_instances=False,
            terminate_instances_with_expiration=False,
            fleet_type="instant",
            valid_from=None,
            valid_until=None,
            tag_specifications=[],
        )
        [(instance, _)] = fleet_instances(fleet)
        tags = {t["key"]: t["value"] for t in instance.get_tags()}
        # Leaves nothing behind: no fleet, no instance (moto keeps terminated ones listed).
        backend.fleets.pop(fleet.id, None)
        backend.tags.pop(instance.id, None)
        for key, reservation in list(backend.reservations.items()):
            if instance in reservation.instances:
                del backend.reservations[key]
        return tags
    finally:
        backend.delete_launch_template(None, template.id)


def list_queues_by_page(self):
    request_url = urlparse(self.uri)
    queues = self.sqs_backend.list_queues(self._get_param("QueueNamePrefix"))
    urls = [queue.url(request_url) for queue in queues]
    max_results = self._get_param("MaxResults")
    if not max_results:
        return ActionResult({"QueueUrls": urls[:LIST_QUEUES_MAX]} if urls else {})
    max_results = int(max_results)
    if not 1 <= max_results <= LIST_QUEUES_MAX:
        raise SqsInvalidParameterValue(f"MaxResults: {max_results} is not in 1-{LIST_QUEUES_MAX}")
    token = self._get_param("NextToken") or "0"
    if not token.isdigit():
        raise SqsInvalidParameterValue(f"NextToken: {token} is not a token ListQueues gave")
    start = int(token)
    result = {"QueueUrls": urls[start : start + max_results]} if urls[start:] else {}
    if start + max_results < len(urls):
        result["NextToken"] = str(start + max_results)
    return ActionResult(result)


LIST_QUEUES_MAX = 1000


def add_list_queues_pages():
    if not hasattr(SQSResponse, "list_queues") or not hasattr(SQSResponse, "sqs_backend"):
        raise RuntimeError(f"moto lacks SQSResponse.list_queues: update {__file__}")
    if "MaxResults" in inspect.getsource(SQSResponse.list_queues):
        return  # this moto pages ListQueues itself
    SQSResponse.list_queues = list_queues_by_page


def show_live_launch_template_tags():
    """A template's `tags` read the tag store (moto copies them once, at creation)."""
    if not hasattr(LaunchTemplate, "get_tags"):
        raise RuntimeError(f"moto lacks LaunchTemplate.get_tags: update {__file__}")
    # moto's __init__ assigns `self.tags`; the setter drops that copy.
    LaunchTemplate.tags = property(lambda self: self.get_tags(), lambda self, value: None)
    backend = ec2_backends[DEFAULT_ACCOUNT_ID]["us-east-1"]
    template = backend.create_launch_template("moto-server-tags-check", "", {}, {})
    try:
        backend.create_tags([template.id], {"added": "later"})
        keys = [t["key"] for t in template.tags]
        if keys != ["added"]:
            raise RuntimeError(f"{__file__} tags self-check: got {keys}, expected ['added']")
    finally:
        backend.delete_launch_template(None, template.id)


add_delete_launch_template_versions()
add_fleet_launch_template_tags()
add_list_queues_pages()
show_live_launch_template_tags()
port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
server.start()
print(server.get_host_and_port()[1], flush=True)
sys.stdin.read()
server.stop()
