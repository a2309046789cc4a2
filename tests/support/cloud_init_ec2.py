"""A machine's cloud-init reading its metadata: cloud-init's own EC2 datasource
(DataSourceEc2 and cloudinit.sources.helpers.ec2, Debian's package, unchanged)
against a metadata URL, every connection leaving from the machine's address.

    python cloud_init_ec2.py --source 127.0.14.10 --url http://127.0.14.1:50061

Prints one JSON object: what the datasource found (get_data, instance id, host
name, SSH keys, user-data, the crawled meta-data) and what the helpers
get_instance_metadata / get_instance_userdata return on their own.
"""

import argparse
import json
import sys
import tempfile

import urllib3.util.connection as connection

parser = argparse.ArgumentParser()
parser.add_argument("--source", required=True, help="the machine's address")
parser.add_argument("--url", required=True, help="the metadata URL cloud-init is given")
parser.add_argument("--max-wait", type=int, default=10)
args = parser.parse_args()

# The one change to the transport: connections leave from the machine's
# address, as they would on the machine (urllib3 opens every connection here).
_create_connection = connection.create_connection


def _from_the_machine(address, *rest, **kw):
    kw["source_address"] = (args.source, 0)
    return _create_connection(address, *rest, **kw)


connection.create_connection = _from_the_machine

from cloudinit import helpers  # noqa: E402
from cloudinit.sources import DataSourceEc2 as ec2_source  # noqa: E402
from cloudinit.sources.helpers import ec2  # noqa: E402


def text(v):
    return v.decode() if isinstance(v, bytes) else v


out = {
    "helper_metadata": ec2.get_instance_metadata(
        "2009-04-04", args.url, timeout=5, retries=0
    ),
    "helper_userdata": text(
        ec2.get_instance_userdata("2009-04-04", args.url, timeout=5, retries=0)
    ),
}

with tempfile.TemporaryDirectory() as tmp:
    sys_cfg = {
        "datasource": {
            "Ec2": {
                # As Tinkerbell templates configure it (writefile of
                # /etc/cloud/cloud.cfg.d): the metadata URL, no strict id.
                "metadata_urls": [args.url],
                "strict_id": False,
                "max_wait": args.max_wait,
                "timeout": 5,
            }
        }
    }
    paths = helpers.Paths({"cloud_dir": tmp, "run_dir": tmp})
    source = ec2_source.DataSourceEc2(sys_cfg, distro=None, paths=paths)
    # A bare-metal machine is no known cloud (cloud-init would read DMI to say
    # so; the host running this test might be an EC2 instance).
    source._cloud_name = ec2_source.CloudNames.UNKNOWN
    found = source._get_data()
    out["get_data"] = bool(found)
    if found:
        out["instance_id"] = source.get_instance_id()
        out["hostname"] = source.get_hostname(fqdn=True).hostname
        out["public_keys"] = source.get_public_ssh_keys()
        out["userdata"] = text(source.get_userdata_raw())
        out["metadata"] = source.metadata
        out["api_version"] = source._crawled_metadata.get("_metadata_api_version")

json.dump(out, sys.stdout)
