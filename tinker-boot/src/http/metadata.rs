//! The metadata service: EC2's 2009-04-04 tree, as Hegel serves it to cloud-init,
//! and Tinkerbell's `/metadata` JSON, for the caller only.

use super::body::{Body, full};
use super::{HttpServer, status};
use hyper::{Response, StatusCode};
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use tinker_core::InstanceMetadata;

async fn lookup(server: &HttpServer, caller: IpAddr) -> Result<InstanceMetadata, Response<Body>> {
    match server.config.metadata.metadata_for(caller).await {
        Ok(Some(m)) => {
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
pub(super) async fn tinkerbell_json(server: &HttpServer, caller: IpAddr) -> Response<Body> {
    match lookup(server, caller).await {
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
pub(super) async fn ec2(server: &HttpServer, caller: IpAddr, rest: &[&str]) -> Response<Body> {
    let rest: Vec<&str> = rest.iter().copied().filter(|s| !s.is_empty()).collect();
    if rest.is_empty() {
        return text("meta-data\nuser-data\n".into());
    }
    let m = match lookup(server, caller).await {
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
