//! The metadata service: EC2's 2009-04-04 tree, as Hegel serves it to cloud-init,
//! and Tinkerbell's `/metadata` JSON, for the caller only.

use super::body::{Body, full};
use super::{HttpServer, status};
use hyper::{Response, StatusCode};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use tinker_core::InstanceMetadata;

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
            server.stats.metadata.fetch_add(1, Ordering::Relaxed);
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

fn text(s: String) -> Response<Body> {
    let mut r = Response::new(full(s));
    r.headers_mut()
        .insert("content-type", "text/plain".parse().expect("static header"));
    r
}

/// `/metadata`: the Hardware's `spec.metadata` as JSON.
pub(super) async fn tinkerbell_json(
    server: &HttpServer,
    caller: IpAddr,
    token: Option<&str>,
) -> Response<Body> {
    match lookup(server, caller, token).await {
        Ok(m) => {
            let mut r = Response::new(full(serde_json::to_vec(&m.document).unwrap_or_default()));
            r.headers_mut().insert(
                "content-type",
                "application/json".parse().expect("static header"),
            );
            r
        }
        Err(r) => r,
    }
}

/// `/2009-04-04/...` and `/latest/...`.
pub(super) async fn ec2(
    server: &HttpServer,
    caller: IpAddr,
    token: Option<&str>,
    rest: &[&str],
) -> Response<Body> {
    let rest: Vec<&str> = rest.iter().copied().filter(|s| !s.is_empty()).collect();
    if rest.is_empty() {
        return text("meta-data\nuser-data\n".into());
    }
    let m = match lookup(server, caller, token).await {
        Ok(m) => m,
        Err(r) => return r,
    };
    match rest.as_slice() {
        ["user-data"] => match m.user_data {
            Some(u) => text(u),
            None => status(StatusCode::NOT_FOUND, "no user-data\n"),
        },
        ["meta-data"] => {
            let mut keys = vec!["instance-id", "hostname", "local-hostname"];
            if m.local_ipv4.is_some() {
                keys.push("local-ipv4");
            }
            if !m.public_keys.is_empty() {
                keys.push("public-keys/");
            }
            if !m.tags.is_empty() {
                keys.push("tags");
            }
            text(keys.join("\n") + "\n")
        }
        ["meta-data", "instance-id"] => text(m.instance_id),
        ["meta-data", "hostname" | "local-hostname"] => match m.hostname {
            Some(h) => text(h),
            None => status(StatusCode::NOT_FOUND, "no hostname\n"),
        },
        ["meta-data", "local-ipv4"] => match m.local_ipv4 {
            Some(ip) => text(ip.to_string()),
            None => status(StatusCode::NOT_FOUND, "no IPv4 address\n"),
        },
        ["meta-data", "tags"] => text(m.tags.join("\n")),
        ["meta-data", "public-keys"] => text(
            (0..m.public_keys.len())
                .map(|i| format!("{i}=key-{i}"))
                .collect::<Vec<_>>()
                .join("\n"),
        ),
        ["meta-data", "public-keys", i] | ["meta-data", "public-keys", i, "openssh-key"]
            if rest.len() == 4 || i.parse::<usize>().is_ok() =>
        {
            match i.parse::<usize>().ok().and_then(|i| m.public_keys.get(i)) {
                Some(key) if rest.len() == 4 => text(key.clone()),
                Some(_) => text("openssh-key".into()),
                None => status(StatusCode::NOT_FOUND, "no such key\n"),
            }
        }
        _ => status(StatusCode::NOT_FOUND, "not found\n"),
    }
}
