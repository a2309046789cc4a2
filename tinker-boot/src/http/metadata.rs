//! The metadata service, as Tinkerbell's Tootles (and Hegel before it) serves
//! it: EC2's `2009-04-04` tree for cloud-init, the `/metadata` JSON the rootio
//! action reads, and the opt-in `/tootles/instanceID/<id>/2009-04-04/...` tree.
//! Every answer is the caller's own: the machine is found by the address it
//! calls from (and its token, when it has one), never by what it says; the
//! instance id in a Tootles path must be the caller's own, or it is refused.

use super::body::{Body, full};
use super::{HttpServer, status};
use hyper::{Response, StatusCode};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use tinker_core::InstanceMetadata;
use tinker_core::store::EventKind;

/// Tootles' data endpoints under a version, as it registers them. Its
/// directory listings are derived from these, so they cannot disagree.
const ENDPOINTS: &[&str] = &[
    "user-data",
    "meta-data/instance-id",
    "meta-data/hostname",
    "meta-data/local-hostname",
    "meta-data/iqn",
    "meta-data/plan",
    "meta-data/facility",
    "meta-data/tags",
    "meta-data/public-ipv4",
    "meta-data/public-ipv6",
    "meta-data/local-ipv4",
    "meta-data/public-keys",
    "meta-data/operating-system/slug",
    "meta-data/operating-system/distro",
    "meta-data/operating-system/version",
    "meta-data/operating-system/image_tag",
    "meta-data/operating-system/license_activation/state",
];

/// What a path under a version names.
#[derive(Debug, PartialEq, Eq)]
enum Ec2Path {
    /// A directory: its children, one a line, a `/` after those that are
    /// directories themselves, sorted, no newline at the end (Tootles' form).
    Listing(String),
    /// One of [`ENDPOINTS`].
    Leaf(&'static str),
}

/// Which tree a request came in by.
#[derive(Debug, Clone, Copy)]
pub(super) enum Tree<'a> {
    /// `/2009-04-04/...` (or `/latest/...`): the caller's address decides.
    ByAddress,
    /// `/tootles/instanceID/<id>/2009-04-04/...`: the caller's address still
    /// decides, and `<id>` must be its instance id.
    ByInstanceId(&'a str),
}

/// Resolves the segments after the version; a trailing `/` (empty segments)
/// names the same thing, as in Tootles.
fn resolve(rest: &[&str]) -> Option<Ec2Path> {
    let dir: Vec<&str> = rest.iter().copied().filter(|s| !s.is_empty()).collect();
    if let Some(leaf) = ENDPOINTS
        .iter()
        .find(|e| e.split('/').eq(dir.iter().copied()))
    {
        return Some(Ec2Path::Leaf(leaf));
    }
    let mut children = BTreeSet::new();
    for endpoint in ENDPOINTS {
        let segments: Vec<&str> = endpoint.split('/').collect();
        if segments.len() > dir.len() && segments[..dir.len()] == dir[..] {
            let child = segments[dir.len()];
            children.insert(if segments.len() > dir.len() + 1 {
                format!("{child}/")
            } else {
                child.to_string()
            });
        }
    }
    (!children.is_empty())
        .then(|| Ec2Path::Listing(children.into_iter().collect::<Vec<_>>().join("\n")))
}

/// The value of `endpoint` for `m`, as Tootles writes it: lists one item a
/// line, and an empty body (200) for what the machine does not have.
fn leaf(m: &InstanceMetadata, endpoint: &str) -> String {
    let text = |v: &Option<String>| v.clone().unwrap_or_default();
    let addr = |v: Option<String>| v.unwrap_or_default();
    let os = &m.operating_system;
    match endpoint {
        "user-data" => text(&m.user_data),
        "meta-data/instance-id" => m.instance_id.clone(),
        "meta-data/hostname" | "meta-data/local-hostname" => text(&m.hostname),
        "meta-data/iqn" => text(&m.iqn),
        "meta-data/plan" => text(&m.plan),
        "meta-data/facility" => text(&m.facility),
        "meta-data/tags" => m.tags.join("\n"),
        "meta-data/public-ipv4" => addr(m.public_ipv4.map(|a| a.to_string())),
        "meta-data/public-ipv6" => addr(m.public_ipv6.map(|a| a.to_string())),
        "meta-data/local-ipv4" => addr(m.local_ipv4.map(|a| a.to_string())),
        "meta-data/public-keys" => m.public_keys.join("\n"),
        "meta-data/operating-system/slug" => text(&os.slug),
        "meta-data/operating-system/distro" => text(&os.distro),
        "meta-data/operating-system/version" => text(&os.version),
        "meta-data/operating-system/image_tag" => text(&os.image_tag),
        "meta-data/operating-system/license_activation/state" => text(&os.license_activation_state),
        _ => String::new(),
    }
}

/// Whether `presented` is the token whose SHA-256 is `expected_hex`, compared
/// in constant time.
fn token_matches(expected_hex: &str, presented: Option<&str>) -> bool {
    use sha2::Digest;
    use subtle::ConstantTimeEq;
    let Some(presented) = presented else {
        return false;
    };
    let digest = sha2::Sha256::digest(presented.trim().as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    hex.as_bytes().ct_eq(expected_hex.as_bytes()).into()
}

async fn lookup(
    server: &HttpServer,
    caller: IpAddr,
    token: Option<&str>,
) -> Result<InstanceMetadata, Response<Body>> {
    match server.config.metadata.metadata_for(caller).await {
        Ok(Some(m)) => {
            if let Some(expected) = &m.token_sha256
                && !token_matches(expected, token)
            {
                tracing::warn!(%caller, "metadata request without the machine's metadata token");
                return Err(status(
                    StatusCode::UNAUTHORIZED,
                    "this machine's metadata needs its X-Tinker-Metadata-Token\n",
                ));
            }
            Ok(m)
        }
        Ok(None) => {
            server
                .stats
                .metadata_unknown
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!(%caller, "metadata request from an unknown address");
            Err(status(
                StatusCode::NOT_FOUND,
                "no machine has this address\n",
            ))
        }
        Err(e) => {
            tracing::warn!(%caller, error = %e, "metadata lookup failed");
            Err(status(
                StatusCode::SERVICE_UNAVAILABLE,
                "metadata unavailable\n",
            ))
        }
    }
}

/// Records in the machine's event log that it read its metadata at `path`
/// (rate-limited as the iPXE script's event is).
fn record_read(server: &HttpServer, m: &InstanceMetadata, path: &str) {
    let Some(machine) = &m.machine else {
        return;
    };
    // The path passed the routes, yet a long one is cut: the log is bounded.
    let path: String = path.chars().take(MAX_RECORDED_PATH).collect();
    server.record_machine_event(machine.clone(), EventKind::MetadataServed { path });
}

/// The longest path kept in a "metadata served" event, in characters.
const MAX_RECORDED_PATH: usize = 200;

fn text(s: String) -> Response<Body> {
    let mut r = Response::new(full(s));
    r.headers_mut().insert(
        "content-type",
        "text/plain; charset=utf-8".parse().expect("static header"),
    );
    r
}

/// `/metadata`: what Tinkerbell's rootio action reads (Tootles' "hack"
/// frontend), `{"metadata":{"instance":{"storage":{...}}}}`.
pub(super) async fn tinkerbell_json(
    server: &HttpServer,
    caller: IpAddr,
    token: Option<&str>,
    path: &str,
) -> Response<Body> {
    let m = match lookup(server, caller, token).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    match rootio_document(&m.document) {
        Ok(doc) => {
            server.stats.metadata.fetch_add(1, Ordering::Relaxed);
            record_read(server, &m, path);
            let mut r = Response::new(full(serde_json::to_vec(&doc).unwrap_or_default()));
            r.headers_mut().insert(
                "content-type",
                "application/json; charset=utf-8"
                    .parse()
                    .expect("static header"),
            );
            r
        }
        Err(e) => {
            tracing::warn!(%caller, error = %e, "spec.metadata.instance.storage is not what rootio reads");
            status(
                StatusCode::INTERNAL_SERVER_ERROR,
                "this machine's spec.metadata.instance.storage is malformed\n",
            )
        }
    }
}

/// `/2009-04-04/...` and `/latest/...` by address, or the Tootles tree by
/// instance id: `rest` is what follows the version.
pub(super) async fn ec2(
    server: &HttpServer,
    caller: IpAddr,
    token: Option<&str>,
    tree: Tree<'_>,
    rest: &[&str],
    path: &str,
) -> Response<Body> {
    // An unknown path costs no lookup.
    let Some(resolved) = resolve(rest) else {
        return status(StatusCode::NOT_FOUND, "not found\n");
    };
    // Even a listing (the same for every machine) is answered to machines
    // only: another address gets nothing at all from this service.
    let m = match lookup(server, caller, token).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    if let Tree::ByInstanceId(id) = tree
        && id != m.instance_id
    {
        server
            .stats
            .metadata_refused
            .fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%caller, "metadata by instance id refused: not the caller's");
        // The same answer whether or not another machine has this id.
        return status(
            StatusCode::FORBIDDEN,
            "this instance id is not the calling machine's\n",
        );
    }
    server.stats.metadata.fetch_add(1, Ordering::Relaxed);
    record_read(server, &m, path);
    match resolved {
        Ec2Path::Listing(children) => text(children),
        Ec2Path::Leaf(endpoint) => text(leaf(&m, endpoint)),
    }
}

/// `spec.metadata.instance.storage` in the shape rootio unmarshals (Tootles'
/// `HackInstance`): every field present, `null` for a missing list, as Go
/// writes them; rootio's `volume_groups` kept when the Hardware has them.
fn rootio_document(document: &serde_json::Value) -> serde_json::Result<serde_json::Value> {
    let storage: Storage = match document.pointer("/instance/storage") {
        Some(s) if !s.is_null() => serde_json::from_value(s.clone())?,
        _ => Storage::default(),
    };
    Ok(serde_json::json!({"metadata": {"instance": {"storage": storage}}}))
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Storage {
    disks: Option<Vec<Disk>>,
    filesystems: Option<Vec<Filesystem>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    volume_groups: Option<serde_json::Value>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Disk {
    device: String,
    partitions: Option<Vec<Partition>>,
    wipe_table: bool,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Partition {
    label: String,
    number: i64,
    size: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Filesystem {
    mount: Mount,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Mount {
    create: Create,
    device: String,
    format: String,
    point: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(default)]
struct Create {
    options: Option<Vec<String>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use tinker_core::OperatingSystem;

    fn listing(path: &str) -> String {
        let segments: Vec<&str> = path.split('/').collect();
        match resolve(&segments) {
            Some(Ec2Path::Listing(l)) => l,
            other => panic!("{path}: {other:?}"),
        }
    }

    /// Tootles' own expectations (its frontend tests), word for word.
    #[test]
    fn listings_are_tootles_listings() {
        assert_eq!(listing(""), "meta-data/\nuser-data");
        let meta = "facility\nhostname\ninstance-id\niqn\nlocal-hostname\nlocal-ipv4\n\
                    operating-system/\nplan\npublic-ipv4\npublic-ipv6\npublic-keys\ntags";
        assert_eq!(listing("meta-data"), meta);
        assert_eq!(listing("meta-data/"), meta);
        assert_eq!(
            listing("meta-data/operating-system"),
            "distro\nimage_tag\nlicense_activation/\nslug\nversion"
        );
        assert_eq!(
            listing("meta-data/operating-system/license_activation/"),
            "state"
        );
    }

    #[test]
    fn unknown_paths_resolve_to_nothing() {
        for p in [
            "meta-data/nope",
            "vendor-data",
            "meta-data/public-keys/0/openssh-key",
            "meta-data/instance-id/x",
            "user-data/x",
        ] {
            let segments: Vec<&str> = p.split('/').collect();
            assert_eq!(resolve(&segments), None, "{p}");
        }
    }

    fn full_machine() -> InstanceMetadata {
        InstanceMetadata {
            instance_id: "i-1".into(),
            hostname: Some("node1".into()),
            local_ipv4: Some("10.0.0.7".parse().unwrap()),
            public_ipv4: Some("192.0.2.7".parse().unwrap()),
            public_ipv6: Some("2001:db8::7".parse().unwrap()),
            iqn: Some("iqn.2026-01.dev.tinker:node1".into()),
            plan: Some("c3.small".into()),
            facility: Some("onprem".into()),
            operating_system: OperatingSystem {
                slug: Some("ubuntu_22_04".into()),
                distro: Some("ubuntu".into()),
                version: Some("22.04".into()),
                image_tag: Some("t1".into()),
                license_activation_state: Some("unlicensed".into()),
            },
            public_keys: vec!["ssh-ed25519 A a".into(), "ssh-ed25519 B b".into()],
            user_data: Some("#cloud-config\n".into()),
            tags: vec!["t1".into(), "t2".into()],
            ..Default::default()
        }
    }

    #[test]
    fn every_leaf_serves_its_field() {
        let m = full_machine();
        let expect = [
            ("user-data", "#cloud-config\n"),
            ("meta-data/instance-id", "i-1"),
            ("meta-data/hostname", "node1"),
            ("meta-data/local-hostname", "node1"),
            ("meta-data/iqn", "iqn.2026-01.dev.tinker:node1"),
            ("meta-data/plan", "c3.small"),
            ("meta-data/facility", "onprem"),
            ("meta-data/tags", "t1\nt2"),
            ("meta-data/public-ipv4", "192.0.2.7"),
            ("meta-data/public-ipv6", "2001:db8::7"),
            ("meta-data/local-ipv4", "10.0.0.7"),
            ("meta-data/public-keys", "ssh-ed25519 A a\nssh-ed25519 B b"),
            ("meta-data/operating-system/slug", "ubuntu_22_04"),
            ("meta-data/operating-system/distro", "ubuntu"),
            ("meta-data/operating-system/version", "22.04"),
            ("meta-data/operating-system/image_tag", "t1"),
            (
                "meta-data/operating-system/license_activation/state",
                "unlicensed",
            ),
        ];
        assert_eq!(expect.len(), ENDPOINTS.len(), "one row per endpoint");
        for (path, value) in expect {
            let with_slash = format!("{path}/");
            for p in [path, with_slash.as_str()] {
                let segments: Vec<&str> = p.split('/').collect();
                let Some(Ec2Path::Leaf(endpoint)) = resolve(&segments) else {
                    panic!("{p} is not a leaf");
                };
                assert_eq!(leaf(&m, endpoint), value, "{p}");
            }
        }
    }

    #[test]
    fn a_missing_field_is_empty_as_in_tootles() {
        let m = InstanceMetadata {
            instance_id: "i-2".into(),
            ..Default::default()
        };
        for endpoint in ENDPOINTS.iter().filter(|e| **e != "meta-data/instance-id") {
            assert_eq!(leaf(&m, endpoint), "", "{endpoint}");
        }
    }

    #[test]
    fn rootio_reads_storage_in_tootles_shape() {
        let doc = serde_json::json!({"instance": {"id": "i-1", "crypted_root_password": "$6$x",
        "storage": {
            "disks": [{"device": "/dev/sda", "wipe_table": true,
                       "partitions": [{"label": "ROOT", "number": 1, "size": 0}]}],
            "filesystems": [{"mount": {"device": "/dev/sda1", "format": "ext4", "point": "/",
                             "create": {"options": ["-L", "ROOT"]}}}]
        }}});
        let out = rootio_document(&doc).unwrap();
        assert_eq!(
            out,
            serde_json::json!({"metadata": {"instance": {"storage": {
                "disks": [{"device": "/dev/sda", "wipe_table": true,
                           "partitions": [{"label": "ROOT", "number": 1, "size": 0}]}],
                "filesystems": [{"mount": {"device": "/dev/sda1", "format": "ext4", "point": "/",
                                 "create": {"options": ["-L", "ROOT"]}}}]
            }}}})
        );
        // What rootio does not read is not served (the root password hash).
        assert!(!out.to_string().contains("$6$x"));
        // Nothing to say: Go's nil lists.
        assert_eq!(
            rootio_document(&serde_json::Value::Null).unwrap(),
            serde_json::json!({"metadata": {"instance": {"storage": {"disks": null, "filesystems": null}}}})
        );
        // rootio's LVM volume groups pass through.
        let lvm =
            serde_json::json!({"instance": {"storage": {"volume_groups": [{"name": "vg0"}]}}});
        assert_eq!(
            rootio_document(&lvm).unwrap()["metadata"]["instance"]["storage"]["volume_groups"],
            serde_json::json!([{"name": "vg0"}])
        );
        // Ill-typed storage is an error, not a guess.
        let bad = serde_json::json!({"instance": {"storage": {"disks": "sda"}}});
        assert!(rootio_document(&bad).is_err());
    }
}
