"""Seeded generation of a realistic Flexus L fleet for the sandbox cloud.

The same ``(count, seed, project_id, region)`` always gives the same fleet, byte for byte: ids come
from a seeded ``random.Random``, timestamps from a fixed anchor (never the wall clock). The first
servers follow a fixed list of recognisable names (``web-01``, ``db-prod-01``, two ``cache-01`` on
purpose, ...) so demos and tests can name them; the rest are drawn from weighted families.

A :class:`ServerState` keeps only what varies or is needed to render the wire shape; :func:`render_detail`
builds a fresh ``ServerDetail`` dict (reference section 2) on every call, so callers can never mutate
the state through a returned dict.
"""

from __future__ import annotations

import base64
import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

# Timestamps are generated back from this fixed instant so a seed always gives the same fleet.
FLEET_ANCHOR = datetime(2024, 1, 1, 0, 0, 0, tzinfo=UTC)

SERVER_DETAIL_KEYS: tuple[str, ...] = (
    "id",
    "name",
    "description",
    "status",
    "updated",
    "created",
    "auto_terminate_time",
    "hostId",
    "OS-EXT-SRV-ATTR:host",
    "addresses",
    "key_name",
    "image",
    "OS-EXT-STS:task_state",
    "OS-EXT-STS:vm_state",
    "OS-EXT-STS:power_state",
    "OS-EXT-SRV-ATTR:instance_name",
    "OS-EXT-SRV-ATTR:hypervisor_hostname",
    "flavor",
    "security_groups",
    "OS-EXT-AZ:availability_zone",
    "user_id",
    "tenant_id",
    "OS-DCF:diskConfig",
    "accessIPv4",
    "accessIPv6",
    "fault",
    "progress",
    "config_drive",
    "metadata",
    "OS-SRV-USG:launched_at",
    "OS-SRV-USG:terminated_at",
    "os-extended-volumes:volumes_attached",
    "host_status",
    "OS-EXT-SRV-ATTR:hostname",
    "OS-EXT-SRV-ATTR:reservation_id",
    "OS-EXT-SRV-ATTR:launch_index",
    "OS-EXT-SRV-ATTR:kernel_id",
    "OS-EXT-SRV-ATTR:ramdisk_id",
    "OS-EXT-SRV-ATTR:root_device_name",
    "OS-EXT-SRV-ATTR:user_data",
    "locked",
    "tags",
    "os:scheduler_hints",
    "enterprise_project_id",
    "sys_tags",
    "cpu_options",
    "security_options",
    "hypervisor",
    "network_interfaces",
    "capacity_reservation_id",
    "capacity_reservation_specification",
    "spod_id",
    "enclave_options",
)
"""Every ServerDetail key of the reference's section 2, in the order the sandbox emits them."""


@dataclass(frozen=True, slots=True)
class Flavor:
    id: str
    vcpus: int
    ram_mb: int
    disk_gb: int


@dataclass(frozen=True, slots=True)
class Image:
    id: str
    name: str
    os_type: str
    os_bit: str = "64"


@dataclass(frozen=True, slots=True)
class Volume:
    id: str
    device: str
    boot_index: str
    delete_on_termination: str


@dataclass(frozen=True, slots=True)
class Family:
    prefix: str
    role: str
    env: str
    flavors: tuple[str, ...]
    description: str
    weight: int


# Flexus L plans (vCPUs / RAM / system disk); numbers are strings on the wire.
FLAVORS: dict[str, Flavor] = {
    f.id: f
    for f in (
        Flavor("hl1.2u.2g", 2, 2048, 40),
        Flavor("hl1.2u.4g", 2, 4096, 60),
        Flavor("hl1.2u.8g", 2, 8192, 80),
        Flavor("hl1.4u.8g", 4, 8192, 100),
        Flavor("hl1.4u.16g", 4, 16384, 120),
        Flavor("hl1.8u.16g", 8, 16384, 160),
    )
}


def _image(name: str, os_type: str) -> Image:
    # Image ids do not depend on the seed: the same image has the same id in every fleet.
    return Image(str(uuid.uuid5(uuid.NAMESPACE_URL, "flexus-sandbox-image:" + name)), name, os_type)


IMAGES: tuple[Image, ...] = (
    _image("Ubuntu 22.04 server 64bit", "Linux"),
    _image("Ubuntu 24.04 server 64bit", "Linux"),
    _image("Huawei Cloud EulerOS 2.0 Standard 64 bit", "Linux"),
    _image("CentOS 7.9 64bit", "Linux"),
    _image("Debian 12.0.0 64bit", "Linux"),
    _image("WordPress 6.4 (Ubuntu 22.04)", "Linux"),
    _image("Docker CE 24 (Ubuntu 22.04)", "Linux"),
    _image("Windows Server 2022 Standard 64bit", "Windows"),
)

FAMILIES: dict[str, Family] = {
    f.prefix: f
    for f in (
        Family("web", "web", "prod", ("hl1.2u.4g", "hl1.4u.8g"), "nginx front end", 14),
        Family("staging-web", "web", "staging", ("hl1.2u.2g", "hl1.2u.4g"), "staging front end", 8),
        Family("db-prod", "db", "prod", ("hl1.4u.16g", "hl1.8u.16g"), "PostgreSQL primary/replica", 6),
        Family("db-staging", "db", "staging", ("hl1.2u.8g",), "staging database", 4),
        Family("api-gateway", "api", "prod", ("hl1.4u.8g",), "public API gateway", 8),
        Family("cache", "cache", "prod", ("hl1.2u.8g", "hl1.4u.16g"), "Redis cache", 6),
        Family("worker", "worker", "prod", ("hl1.4u.8g", "hl1.8u.16g"), "background jobs", 10),
        Family("monitor", "monitoring", "ops", ("hl1.2u.4g",), "Prometheus and Grafana", 3),
        Family("bastion", "bastion", "ops", ("hl1.2u.2g",), "SSH jump host", 2),
        Family("ci-runner", "ci", "dev", ("hl1.4u.8g",), "CI runner", 5),
        Family("dev-box", "dev", "dev", ("hl1.2u.4g",), "", 4),
        # A CJK name on purpose: the API allows them and the product must handle them.
        Family("测试机", "test", "dev", ("hl1.2u.2g",), "测试用", 2),
    )
}

# The first servers of every fleet, in order; "cache-01" appears twice on purpose (ambiguous name).
HEADLINE: tuple[tuple[str, str | None], ...] = (
    ("web", None),
    ("web", None),
    ("db-prod", None),
    ("api-gateway", None),
    ("cache", None),
    ("staging-web", None),
    ("cache", "cache-01"),
    ("worker", None),
    ("db-staging", None),
    ("monitor", None),
    ("bastion", None),
    ("ci-runner", None),
)

TEAMS = ("platform", "payments", "data", "growth")
EIP_PREFIXES = ("121.36", "124.70", "119.3", "1.94", "114.116")
LOCK_EVERY = 12  # about 1 in 12 servers is locked by an order (reference: lockSource/lockScene metadata)
FREEZE_EVERY = 50  # 1 in 50 is frozen (metadata EcmResStatus=freeze); never a locked one, nor a headline one
FREEZE_AT = 33  # index 33, 83, 133, ...: odd remainders mod 12, so never a locked index (10 mod 12)
SHUTOFF_SHARE = 0.2
FLOATING_SHARE = 0.85

_ALNUM = "abcdefghijklmnopqrstuvwxyz0123456789"


def format_created(moment: datetime) -> str:
    """``created``/``updated`` format, e.g. ``2019-05-22T03:19:19Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def format_launched(moment: datetime) -> str:
    """``OS-SRV-USG:launched_at`` format: microseconds and no ``Z`` (differs from ``created``)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


@dataclass(slots=True)
class ServerState:
    """One server. Mutable fields are changed by the backend; the rest is fixed at generation."""

    id: str
    name: str
    description: str
    hostname: str
    user_data: str | None
    vm_state: str
    task_state: str | None
    power_state: int
    created: datetime
    updated: datetime
    launched_at: datetime
    locked: bool
    tags: list[str]
    security_options: dict[str, bool]
    flavor: Flavor
    image: Image
    availability_zone: str
    vpc_id: str
    subnet_id: str
    fixed_ip: str
    floating_ip: str | None
    mac: str
    port_id: str
    security_groups: tuple[tuple[str, str], ...]
    host_id: str
    host: str
    hypervisor_hostname: str
    instance_name: str
    key_name: str
    user_id: str
    project_id: str
    volumes: tuple[Volume, ...]
    reservation_id: str
    launch_index: int
    enterprise_project_id: str
    charging_mode: str
    frozen: bool = False
    """Frozen by the cloud (arrears, a legal hold): every action on it is refused."""
    lock_metadata: dict[str, str] = field(default_factory=dict)
    password_resets: int = 0
    """How many password resets were applied; the password itself is never kept."""
    password_reset_at: datetime | None = None

    @property
    def status(self) -> str:
        return derive_status(self.vm_state, self.task_state)


_REBOOT_TASKS = frozenset({"rebooting", "reboot_pending", "reboot_started"})
_HARD_REBOOT_TASKS = frozenset({"rebooting_hard", "reboot_pending_hard", "reboot_started_hard"})
_RESIZE_TASKS = frozenset({"resize_prep", "resize_migrating", "resize_migrated", "resize_finish"})
_BUILD_TASKS = frozenset({None, "scheduling", "block_device_mapping", "networking", "spawning"})


def derive_status(vm_state: str, task_state: str | None) -> str:
    """The reference's section 11 table: status from vm_state + task_state; anything else is UNKNOWN."""
    rebuilding = task_state is not None and task_state.startswith("rebuild")
    if vm_state == "building" and task_state in _BUILD_TASKS:
        return "BUILD"
    if vm_state == "active":
        if task_state in _REBOOT_TASKS:
            return "REBOOT"
        if task_state in _HARD_REBOOT_TASKS:
            return "HARD_REBOOT"
        if rebuilding:
            return "REBUILD"
        if task_state == "migrating":
            return "MIGRATING"
        if task_state in _RESIZE_TASKS:
            return "RESIZE"
        if task_state in (None, "powering-off", "deleting"):
            return "ACTIVE"
    if vm_state == "stopped":
        if task_state is not None and task_state.startswith("resize_"):
            return "RESIZE"
        if rebuilding:
            return "REBUILD"
        if task_state in (None, "powering-on", "deleting"):
            return "SHUTOFF"
    if vm_state == "resized":
        if task_state == "resize_reverting":
            return "REVERT_RESIZE"
        if task_state is None:
            return "VERIFY_RESIZE"
    if vm_state == "error":
        if rebuilding:
            return "REBUILD"
        if task_state in (None, "deleting"):
            return "ERROR"
    if vm_state == "deleted" and task_state is None:
        return "DELETED"
    if vm_state == "shelved" and (
        task_state is None or task_state.startswith("shelving") or task_state == "unshelving"
    ):
        return "SHELVED"
    if vm_state == "shelved_offloaded" and task_state in (None, "shelving_offloading", "unshelving"):
        return "SHELVED_OFFLOADED"
    return "UNKNOWN"


def render_detail(server: ServerState) -> dict[str, Any]:
    """A fresh ServerDetail dict (reference section 2) with every key present."""
    addresses: list[dict[str, Any]] = [
        {
            "version": "4",
            "addr": server.fixed_ip,
            "OS-EXT-IPS:type": "fixed",
            "OS-EXT-IPS-MAC:mac_addr": server.mac,
            "OS-EXT-IPS:port_id": server.port_id,
            "primary": True,
        }
    ]
    if server.floating_ip:
        addresses.append(
            {
                "version": "4",
                "addr": server.floating_ip,
                "OS-EXT-IPS:type": "floating",
                "OS-EXT-IPS-MAC:mac_addr": server.mac,
                "OS-EXT-IPS:port_id": server.port_id,
                "primary": False,
            }
        )
    interface: dict[str, Any] = {
        "port_id": server.port_id,
        "primary": True,
        "ip_addresses": [server.fixed_ip],
        "ipv6_addresses": [],
        "subnet_id": server.subnet_id,
    }
    if server.floating_ip:
        interface["association"] = {"public_ip_address": server.floating_ip}
    return {
        "id": server.id,
        "name": server.name,
        "description": server.description,
        "status": server.status,
        "updated": format_created(server.updated),
        "created": format_created(server.created),
        "auto_terminate_time": "",
        "hostId": server.host_id,
        "OS-EXT-SRV-ATTR:host": server.host,
        "addresses": {server.vpc_id: addresses},
        "key_name": server.key_name,
        "image": {"id": server.image.id},
        "OS-EXT-STS:task_state": server.task_state,
        "OS-EXT-STS:vm_state": server.vm_state,
        "OS-EXT-STS:power_state": server.power_state,
        "OS-EXT-SRV-ATTR:instance_name": server.instance_name,
        "OS-EXT-SRV-ATTR:hypervisor_hostname": server.hypervisor_hostname,
        "flavor": {
            "id": server.flavor.id,
            "name": server.flavor.id,
            "disk": str(server.flavor.disk_gb),
            "vcpus": str(server.flavor.vcpus),
            "ram": str(server.flavor.ram_mb),
            "gpus": [],
            "asic_accelerators": [],
        },
        "security_groups": [{"name": name, "id": sg_id} for name, sg_id in server.security_groups],
        "OS-EXT-AZ:availability_zone": server.availability_zone,
        "user_id": server.user_id,
        "tenant_id": server.project_id,
        "OS-DCF:diskConfig": "MANUAL",
        "accessIPv4": "",
        "accessIPv6": "",
        # Only an ERROR server carries a fault; the key is present (null) so every field is there.
        "fault": None,
        "progress": 0,
        "config_drive": "",
        "metadata": server_metadata(server),
        "OS-SRV-USG:launched_at": format_launched(server.launched_at),
        "OS-SRV-USG:terminated_at": "",
        "os-extended-volumes:volumes_attached": [
            {
                "id": v.id,
                "delete_on_termination": v.delete_on_termination,
                "bootIndex": v.boot_index,
                "device": v.device,
            }
            for v in server.volumes
        ],
        "host_status": "UP",
        "OS-EXT-SRV-ATTR:hostname": server.hostname,
        "OS-EXT-SRV-ATTR:reservation_id": server.reservation_id,
        "OS-EXT-SRV-ATTR:launch_index": server.launch_index,
        "OS-EXT-SRV-ATTR:kernel_id": "",
        "OS-EXT-SRV-ATTR:ramdisk_id": "",
        "OS-EXT-SRV-ATTR:root_device_name": "/dev/vda",
        "OS-EXT-SRV-ATTR:user_data": server.user_data,
        "locked": server.locked,
        "tags": list(server.tags),
        "os:scheduler_hints": {},
        "enterprise_project_id": server.enterprise_project_id,
        "sys_tags": [{"key": "_sys_enterprise_project_id", "value": server.enterprise_project_id}],
        "cpu_options": {"hw:cpu_threads": 2},
        "security_options": dict(server.security_options),
        "hypervisor": {"hypervisor_type": "kvm", "csd_hypervisor": None},
        "network_interfaces": [interface],
        "capacity_reservation_id": "",
        "capacity_reservation_specification": {"id": "", "preference": "none"},
        "spod_id": "",
        "enclave_options": {"enabled": False},
    }


def server_metadata(server: ServerState) -> dict[str, str]:
    resource_kind = "win" if server.image.os_type == "Windows" else "linux"
    metadata = {
        "charging_mode": server.charging_mode,
        "vpc_id": server.vpc_id,
        "image_name": server.image.name,
        "os_type": server.image.os_type,
        "os_bit": server.image.os_bit,
        "EcmResStatus": "freeze" if server.frozen else "normal",
        "metering.image_id": server.image.id,
        "metering.imagetype": "gold",
        "metering.resourcespeccode": f"{server.flavor.id}.{resource_kind}",
        "metering.cloudServiceType": "hws.service.type.ec2",
        "metering.resourcetype": "1",
        "__support_agent_list": "hss,ces",
    }
    metadata.update(server.lock_metadata)
    return metadata


def empty_detail(server_id: str, now: datetime) -> dict[str, Any]:
    """What ListServersDetails returns for an unknown id in ``server_id``: all null but id and fault."""
    entry: dict[str, Any] = dict.fromkeys(SERVER_DETAIL_KEYS)
    entry["id"] = server_id
    entry["fault"] = {
        "code": 404,
        "message": f"Instance[{server_id}] could not be found.",
        "created": format_created(now),
    }
    return entry


class _Ids:
    """Seeded id helpers (uuid4-shaped UUIDs, hex strings) from one ``random.Random``."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def uuid(self) -> str:
        # Same as str(uuid.UUID(int=..., version=4)), three times faster (10,000 servers need 35,000).
        bits = self.rng.getrandbits(128)
        bits = (bits & ~(0xF000 << 64) & ~(0xC000 << 48)) | (0x4000 << 64) | (0x8000 << 48)
        h = f"{bits:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def below(self, n: int) -> int:
        # random.randrange is slow; this is uniform enough for simulated data.
        return int(self.rng.random() * n)

    def hex(self, chars: int) -> str:
        return f"{self.rng.getrandbits(chars * 4):0{chars}x}"


def _hostname_for(name: str, server_id: str) -> str:
    if name.isascii():
        return name.lower()
    # The console derives an ASCII hostname when the name has CJK characters.
    return "ecs-" + server_id[:4]


def generate_fleet(
    count: int,
    seed: int,
    *,
    project_id: str,
    region: str,
) -> list[ServerState]:
    """``count`` servers, deterministic for ``(count, seed, project_id, region)``; fast for 10,000+."""
    rng = random.Random(seed)
    ids = _Ids(rng)
    user_id = ids.hex(32)
    vpcs = [(ids.uuid(), ids.uuid(), ids.uuid()) for _ in range(3)]  # (vpc, subnet, default sg)
    web_sg = ids.uuid()
    enterprise_projects = ["0", "0", "0", "0", ids.uuid(), ids.uuid()]
    zones = [f"{region}a", f"{region}b", f"{region}c"]
    families = list(FAMILIES.values())
    weights = [f.weight for f in families]

    counters: dict[str, int] = {}
    names_by_family: dict[str, list[str]] = {}
    fixed_counters = [0, 0, 0]
    eip_counter = ids.below(1000)
    reservation = "r-" + ids.hex(8)
    launch_index = 0
    servers: list[ServerState] = []

    for index in range(count):
        if index < len(HEADLINE):
            prefix, forced_name = HEADLINE[index]
            family = FAMILIES[prefix]
        else:
            family = rng.choices(families, weights)[0]
            forced_name = None
            earlier = names_by_family.get(family.prefix)
            # Now and then a name repeats (people clone servers), so ambiguous names are common.
            if earlier and rng.random() < 0.04:
                forced_name = rng.choice(earlier)
        if forced_name is None:
            counters[family.prefix] = counters.get(family.prefix, 0) + 1
            name = f"{family.prefix}-{counters[family.prefix]:02d}"
        else:
            name = forced_name
        names_by_family.setdefault(family.prefix, []).append(name)

        server_id = ids.uuid()
        vpc_index = 0 if family.env == "prod" else (1 if family.env == "staging" else 2)
        vpc_id, subnet_id, default_sg = vpcs[vpc_index]
        host_number = fixed_counters[vpc_index]
        fixed_counters[vpc_index] += 1
        fixed_ip = f"192.168.{vpc_index * 64 + host_number // 250}.{host_number % 250 + 2}"
        floating_ip: str | None = None
        if rng.random() < FLOATING_SHARE:
            eip_counter += 1
            prefix_ip = EIP_PREFIXES[eip_counter % len(EIP_PREFIXES)]
            slot = eip_counter // len(EIP_PREFIXES)
            floating_ip = f"{prefix_ip}.{(slot // 254) % 256}.{slot % 254 + 1}"

        # Servers are created in batches that share a reservation id (the batch-create filter).
        if rng.random() < 0.6 or index == 0:
            reservation = "r-" + ids.hex(8)
            launch_index = 0
        else:
            launch_index += 1

        created = FLEET_ANCHOR - timedelta(days=2 + ids.below(698), seconds=ids.below(86_400))
        launched_at = created + timedelta(seconds=20 + ids.below(220), microseconds=ids.below(1_000_000))
        updated = min(FLEET_ANCHOR, launched_at + timedelta(days=ids.below(60), seconds=ids.below(86_400)))

        flavor = FLAVORS[rng.choice(family.flavors)]
        image = rng.choice(IMAGES)
        tags = [f"env={family.env}", f"role={family.role}"]
        if rng.random() < 0.5:
            tags.append(f"team={rng.choice(TEAMS)}")
        if family.env == "prod" and rng.random() < 0.3:
            tags.append("critical")  # a bare key: the wire form of a tag with an empty value
        if family.role == "db" and rng.random() < 0.7:
            tags.append("backup=daily")

        locked = index % LOCK_EVERY == LOCK_EVERY - 2
        lock_metadata: dict[str, str] = {}
        if locked:
            lock_metadata = {
                "lockSource": "ORDER",
                "lockSourceId": "CS" + ids.hex(12).upper(),
                "lockScene": "TO_PERIOD",
                "lockCheckEndpoint": "https://bss.myhuaweicloud.com",
            }
        shutoff = rng.random() < SHUTOFF_SHARE
        volumes = [Volume(ids.uuid(), "/dev/vda", "0", "true")]
        if family.role in ("db", "cache") or rng.random() < 0.15:
            volumes.append(Volume(ids.uuid(), "/dev/vdb", "-1", "false"))
        security_groups = [("default", default_sg)]
        if family.role in ("web", "api"):
            security_groups.append(("sg-web", web_sg))
        user_data = None
        if family.role in ("web", "worker") and rng.random() < 0.3:
            user_data = base64.b64encode(f"#!/bin/bash\necho 'hello from {name}'\n".encode()).decode()
        zone = zones[ids.below(3)]
        servers.append(
            ServerState(
                id=server_id,
                name=name,
                description=family.description,
                hostname=_hostname_for(name, server_id),
                user_data=user_data,
                vm_state="stopped" if shutoff else "active",
                task_state=None,
                power_state=4 if shutoff else 1,
                created=created,
                updated=updated,
                launched_at=launched_at,
                locked=locked,
                tags=tags,
                security_options={"secure_boot_enabled": False, "tpm_enabled": False},
                flavor=flavor,
                image=image,
                availability_zone=zone,
                vpc_id=vpc_id,
                subnet_id=subnet_id,
                fixed_ip=fixed_ip,
                floating_ip=floating_ip,
                mac="fa:16:3e:{}{}:{}{}:{}{}".format(*ids.hex(6)),
                port_id=ids.uuid(),
                security_groups=tuple(security_groups),
                host_id=ids.hex(56),
                host=f"pod{1 + ids.below(11):02d}.{zone}",
                hypervisor_hostname=f"nova{1 + ids.below(399):03d}@{1 + ids.below(8)}",
                instance_name=f"instance-{ids.hex(8)}",
                key_name="" if rng.random() < 0.6 else f"KeyPair-{''.join(rng.choices(_ALNUM, k=4))}",
                user_id=user_id,
                project_id=project_id,
                volumes=tuple(volumes),
                reservation_id=reservation,
                launch_index=launch_index,
                enterprise_project_id=rng.choice(enterprise_projects),
                charging_mode="1" if rng.random() < 0.85 else "0",
                # By index, not by drawing: the fleet every seed gave before frozen servers stays the same.
                frozen=index % FREEZE_EVERY == FREEZE_AT,
                lock_metadata=lock_metadata,
            )
        )
    return servers
