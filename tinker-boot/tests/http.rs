//! The HTTP server on loopback: assets with Range and HEAD, no way out of the
//! asset directory, metadata only for the caller, trusted proxies.

use std::net::Ipv4Addr;
use std::sync::Arc;
use tinker_boot::StoreMetadata;
use tinker_boot::http::{HttpConfig, HttpServer, OsieConfig, client};
use tinker_boot::tftp::FileSource;
use tinker_core::model::Hardware;
use tinker_core::{MacAddr, Precondition, WorkflowStore};
use tinker_store::MemoryStore;

async fn serve(trusted: Vec<std::net::IpAddr>) -> (u16, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let assets = dir.path().join("assets");
    std::fs::create_dir_all(&assets).unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(assets.join("image.raw"), &data).unwrap();
    std::fs::write(assets.join("vmlinuz"), b"kernel").unwrap();
    std::fs::write(assets.join("initrd.img"), b"initrd").unwrap();
    std::fs::write(dir.path().join("secret"), b"private").unwrap();
    let binaries = dir.path().join("ipxe");
    std::fs::create_dir_all(&binaries).unwrap();
    std::fs::write(binaries.join("ipxe.efi"), b"MZ ipxe").unwrap();
    std::os::unix::fs::symlink(dir.path().join("secret"), assets.join("link")).unwrap();
    let store = Arc::new(MemoryStore::new());
    let mut me = Hardware::new(
        "me",
        MacAddr([2, 0, 0, 0, 0, 1]),
        Ipv4Addr::LOCALHOST,
        "255.0.0.0",
    );
    me.spec.metadata = Some(serde_json::from_value(serde_json::json!({"instance": {"id": "i-me", "hostname": "me", "ssh_keys": ["ssh-ed25519 AAAA me"]}})).unwrap());
    me.spec.user_data = Some("#cloud-config\n".into());
    let mut other = Hardware::new(
        "other",
        MacAddr([2, 0, 0, 0, 0, 2]),
        Ipv4Addr::new(10, 0, 0, 5),
        "255.255.255.0",
    );
    other.spec.metadata =
        Some(serde_json::from_value(serde_json::json!({"instance": {"id": "i-other"}})).unwrap());
    store.put(me.into(), Precondition::Absent).await.unwrap();
    store.put(other.into(), Precondition::Absent).await.unwrap();
    let server = HttpServer::new(HttpConfig {
        store: store.clone(),
        metadata: Arc::new(StoreMetadata::new(store.clone())),
        osie: OsieConfig {
            base_url: "http://x/assets".into(),
            kernel: "vmlinuz".into(),
            initrd: "initrd.img".into(),
            control_plane: "http://x".into(),
            extra_args: vec![],
            worker_secret: None,
            ..Default::default()
        },
        assets: Some(FileSource::directory(&assets).unwrap()),
        binaries: Some(FileSource::directory(&binaries).unwrap()),
        trusted_proxies: trusted,
        extra: None,
        metrics: vec![],
        callers: Default::default(),
        serves_machines: true,
        osie_from_assets: true,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(server.serve(listener, std::future::pending()));
    (port, dir)
}

/// A request through the one test client, for the tests' blocking threads
/// (`spawn_blocking`, which still see the runtime); returns the status, the
/// headers as lower-cased `name: value` lines, and the body.
fn request(port: u16, method: &str, path: &str, headers: &[&str]) -> (String, String, Vec<u8>) {
    let headers: Vec<(&str, &str)> = headers
        .iter()
        .map(|h| {
            h.split_once(':')
                .map(|(k, v)| (k, v.trim()))
                .expect("a header")
        })
        .collect();
    let resp = tokio::runtime::Handle::current()
        .block_on(client::request(
            std::net::SocketAddr::from(([127, 0, 0, 1], port)),
            None,
            method.parse().expect("a method"),
            path,
            &headers,
            Vec::new(),
        ))
        .expect("an answer");
    let lines: String = resp
        .headers
        .iter()
        .map(|(k, v)| format!("{k}: {}\r\n", v.to_str().unwrap_or_default()))
        .collect();
    (
        format!("HTTP/1.1 {}", resp.status),
        lines.to_lowercase(),
        resp.body.to_vec(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assets_ranges_and_traversal() {
    let (port, _dir) = serve(vec![]).await;
    tokio::task::spawn_blocking(move || {
        let (st, h, body) = request(port, "GET", "/assets/image.raw", &[]);
        assert!(st.contains("200"), "{st}");
        assert!(h.contains("content-length: 100000") && h.contains("accept-ranges: bytes"));
        assert_eq!(body.len(), 100_000);
        assert_eq!(body[1000], (1000 % 251) as u8);
        let (st, h, body) = request(port, "GET", "/assets/image.raw", &["Range: bytes=99990-"]);
        assert!(st.contains("206"), "{st}");
        assert!(h.contains("content-range: bytes 99990-99999/100000"), "{h}");
        assert_eq!(
            body,
            (99990..100_000u32)
                .map(|i| (i % 251) as u8)
                .collect::<Vec<_>>()
        );
        let (st, h, _) = request(port, "GET", "/assets/image.raw", &["Range: bytes=200000-"]);
        assert!(
            st.contains("416") && h.contains("content-range: bytes */100000"),
            "{st} {h}"
        );
        let (st, h, body) = request(port, "HEAD", "/assets/image.raw", &[]);
        assert!(st.contains("200") && h.contains("content-length: 100000") && body.is_empty());
        for bad in [
            "/assets/../secret",
            "/assets/%2e%2e/secret",
            "/assets/link",
            "/assets/..%2fsecret",
        ] {
            let (st, _, body) = request(port, "GET", bad, &[]);
            assert!(st.contains("403") || st.contains("404"), "{bad}: {st}");
            assert!(
                !String::from_utf8_lossy(&body).contains("private"),
                "{bad} leaked"
            );
        }
        let (st, _, _) = request(port, "POST", "/assets/image.raw", &[]);
        assert!(st.contains("405"));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_the_callers_own() {
    let (port, _dir) = serve(vec![]).await;
    tokio::task::spawn_blocking(move || {
        let get = |p: &str, h: &[&str]| {
            let (st, _, b) = request(port, "GET", p, h);
            (st, String::from_utf8_lossy(&b).to_string())
        };
        assert_eq!(get("/2009-04-04/meta-data/instance-id", &[]).1, "i-me");
        assert_eq!(get("/latest/meta-data/local-ipv4", &[]).1, "127.0.0.1");
        // Tootles lists the keys one a line, under a leaf.
        assert_eq!(
            get("/2009-04-04/meta-data/public-keys", &[]).1,
            "ssh-ed25519 AAAA me"
        );
        assert!(get("/2009-04-04/meta-data/", &[]).1.contains("instance-id"));
        assert_eq!(get("/2009-04-04/user-data", &[]).1, "#cloud-config\n");
        assert_eq!(
            get("/metadata", &[]).1,
            r#"{"metadata":{"instance":{"storage":{"disks":null,"filesystems":null}}}}"#
        );
        // A caller cannot claim to be another machine.
        assert_eq!(
            get(
                "/2009-04-04/meta-data/instance-id",
                &["X-Forwarded-For: 10.0.0.5"]
            )
            .1,
            "i-me"
        );
    })
    .await
    .unwrap();
    // Behind a trusted proxy, the forwarded address decides.
    let (port, _dir) = serve(vec!["127.0.0.1".parse().unwrap()]).await;
    tokio::task::spawn_blocking(move || {
        let (_, _, b) = request(
            port,
            "GET",
            "/2009-04-04/meta-data/instance-id",
            &["X-Forwarded-For: 10.0.0.5"],
        );
        assert_eq!(String::from_utf8_lossy(&b), "i-other");
        let (st, _, _) = request(
            port,
            "GET",
            "/2009-04-04/meta-data/instance-id",
            &["X-Forwarded-For: 10.9.9.9"],
        );
        assert!(st.contains("404"), "unknown caller: {st}");
    })
    .await
    .unwrap();
}

/// The in-memory OS comes from the assets: a machine is never sent to a
/// kernel that is not there, even one removed while the server runs; it is
/// told what is missing and asks again, and boots once it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_script_never_sends_a_machine_to_a_missing_kernel() {
    let (port, dir) = serve(vec![]).await;
    let assets = dir.path().join("assets");
    tokio::task::spawn_blocking(move || {
        let script = || {
            let (st, _, b) = request(port, "GET", "/ipxe/02:00:00:00:00:01/auto.ipxe", &[]);
            assert!(st.contains("200"), "{st}");
            String::from_utf8_lossy(&b).to_string()
        };
        assert!(script().contains("kernel ${base-url}/vmlinuz"));
        std::fs::remove_file(assets.join("vmlinuz")).unwrap();
        let waiting = script();
        assert!(!waiting.contains("kernel "), "{waiting}");
        assert!(
            waiting.contains("vmlinuz missing from its assets")
                && waiting.contains("sleep 30")
                && waiting.contains("chain --replace --autofree auto.ipxe"),
            "{waiting}"
        );
        std::fs::remove_file(assets.join("initrd.img")).unwrap();
        assert!(script().contains("(vmlinuz and initrd.img missing"));
        let (_, _, metrics) = request(port, "GET", "/metrics", &[]);
        let metrics = String::from_utf8_lossy(&metrics).to_string();
        assert!(
            metrics.contains("tinker_http_ipxe_scripts_osie_missing_total 2"),
            "{metrics}"
        );
        std::fs::write(assets.join("vmlinuz"), b"kernel").unwrap();
        std::fs::write(assets.join("initrd.img"), b"initrd").unwrap();
        assert!(script().contains("kernel ${base-url}/vmlinuz"));
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scripts_follow_netboot() {
    let (port, _dir) = serve(vec![]).await;
    tokio::task::spawn_blocking(move || {
        let (st, _, b) = request(port, "GET", "/ipxe/02%3A00%3A00%3A00%3A00%3A01/auto.ipxe", &[]);
        let script = String::from_utf8_lossy(&b).to_string();
        assert!(st.contains("200"), "{st}");
        assert!(script.contains("kernel ${base-url}/vmlinuz initrd=initrd.img tinker_server=http://x worker_id=02:00:00:00:00:01"), "{script}");
        let (st, _, _) = request(port, "GET", "/ipxe/02:00:00:00:00:99/auto.ipxe", &[]);
        assert!(st.contains("404"));
        let (st, _, _) = request(port, "GET", "/ipxe/nonsense/auto.ipxe", &[]);
        assert!(st.contains("400"));
        // Smee's path serves the same script, with the same checks.
        let (st, _, smee) = request(
            port,
            "GET",
            "/ipxe/script/02%3A00%3A00%3A00%3A00%3A01/auto.ipxe",
            &[],
        );
        assert!(st.contains("200"), "{st}");
        assert_eq!(String::from_utf8_lossy(&smee), script);
        let (st, _, _) = request(port, "GET", "/ipxe/script/02-00-00-00-00-99/auto.ipxe", &[]);
        assert!(st.contains("404"), "{st}");
        let (st, _, _) = request(port, "GET", "/ipxe/script/nonsense/auto.ipxe", &[]);
        assert!(st.contains("400"), "{st}");
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binaries_at_our_path_and_smees() {
    let (port, _dir) = serve(vec![]).await;
    tokio::task::spawn_blocking(move || {
        let (st, _, ours) = request(port, "GET", "/ipxe/binary/ipxe.efi", &[]);
        assert!(st.contains("200"), "{st}");
        assert_eq!(ours, b"MZ ipxe");
        // Smee names the asking machine's MAC before the file.
        for mac in [
            "02:00:00:00:00:01",
            "02%3A00%3A00%3A00%3A00%3A01",
            "02-00-00-00-00-07",
        ] {
            let (st, _, smee) = request(port, "GET", &format!("/ipxe/binary/{mac}/ipxe.efi"), &[]);
            assert!(st.contains("200"), "{mac}: {st}");
            assert_eq!(smee, b"MZ ipxe");
        }
        // The MAC form does not open a way out of the binaries' directory.
        for path in [
            "/ipxe/binary/02:00:00:00:00:01/..",
            "/ipxe/binary/02:00:00:00:00:01/../secret",
            "/ipxe/binary/02:00:00:00:00:01/%2e%2e%2fsecret",
            "/ipxe/binary/../secret",
            "/ipxe/binary/notamac/ipxe.efi",
        ] {
            let (st, _, body) = request(port, "GET", path, &[]);
            assert!(st.contains("403") || st.contains("404"), "{path}: {st}");
            assert_ne!(body, b"private", "{path}");
        }
    })
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_was_served() {
    let (port, _dir) = serve(vec![]).await;
    tokio::task::spawn_blocking(move || {
        let (st, _, _) = request(port, "GET", "/assets/image.raw", &["Range: bytes=0-99"]);
        assert!(st.contains("206"), "{st}");
        let (st, _, _) = request(port, "GET", "/assets/../secret", &[]);
        assert!(st.contains("403") || st.contains("404"), "{st}");
        let (st, h, body) = request(port, "GET", "/metrics", &[]);
        assert!(st.contains("200"), "{st}");
        assert!(
            h.contains("content-type: application/openmetrics-text"),
            "{h}"
        );
        let text = String::from_utf8(body).unwrap();
        let value = |name: &str| -> u64 {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {name} in:\n{text}"))
        };
        // The /metrics request itself is counted before it is answered.
        assert_eq!(value("tinker_http_requests_total"), 3);
        assert_eq!(value("tinker_http_asset_bytes_total"), 100);
        assert_eq!(value("tinker_http_ipxe_scripts_total"), 0);
        assert!(text.ends_with("# EOF\n"), "{text}");
    })
    .await
    .unwrap();
}
