//! image2disk throughput: our native action streaming from our HTTP server to a
//! file, raw and zstd/gzip-compressed, against `curl | dd` (and `curl | zstd -d |
//! dd`, `curl | gzip -d | dd`) of the same image from the same server, in the same
//! run. `cargo bench --bench image2disk` writes the table into BENCHMARKS.md.

#[path = "support/mod.rs"]
mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;
use tinker::actions::NativeRuntime;
use tinker::boot::http::{HttpConfig, HttpServer};
use tinker::boot::tftp::FileSource;
use tinker::core::runtime::{ActionOutcome, ActionRuntime, ActionSpec, CancelToken, CollectOutput};
use tinker::store::MemoryStore;

const MIB: u64 = 1024;

fn sh(cmd: &str) {
    let o = Command::new("sh").args(["-c", cmd]).output().unwrap();
    assert!(
        o.status.success(),
        "{cmd}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    // A disk-like image: half random, half zeros.
    sh(&format!(
        "mkdir -p {d}/assets && head -c {}M /dev/urandom > {d}/assets/img.raw && head -c {}M /dev/zero >> {d}/assets/img.raw",
        MIB / 2,
        MIB / 2
    ));
    sh(&format!(
        "cd {d}/assets && zstd -q -T0 -k img.raw && gzip -k -1 img.raw"
    ));
    let port = rt.block_on(async {
        let store = Arc::new(MemoryStore::new());
        let server = HttpServer::new(HttpConfig {
            assets: Some(FileSource::directory(format!("{d}/assets")).unwrap()),
            ..HttpConfig::new(store.clone())
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(server.serve(listener, std::future::pending()));
        port
    });
    // The output is a file, not a disk: allowed under the bench's directory.
    let native = NativeRuntime::new().with_image_files_under(dir.path());
    let mut rows = Vec::new();
    for (file, compressed, pipe) in [
        ("img.raw", false, ""),
        ("img.raw.zst", true, "| zstd -d -q "),
        ("img.raw.gz", true, "| gzip -d "),
    ] {
        let url = format!("http://127.0.0.1:{port}/assets/{file}");
        for round in 0..2 {
            let out = format!("{d}/out-{round}");
            let _ = std::fs::remove_file(&out);
            let spec = ActionSpec {
                workflow: "bench/wf".into(),
                name: "image2disk".into(),
                image: "image2disk".into(),
                command: vec![],
                environment: [
                    ("IMG_URL", url.as_str()),
                    ("DEST_DISK", out.as_str()),
                    ("COMPRESSED", if compressed { "true" } else { "false" }),
                ]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
                volumes: vec![],
                pid: None,
                timeout: None,
            };
            let t = Instant::now();
            let r = rt
                .block_on(native.run(&spec, &CollectOutput::default(), &CancelToken::new()))
                .unwrap();
            let ours = t.elapsed().as_secs_f64();
            assert_eq!(r, ActionOutcome::Success);
            assert_eq!(
                std::fs::metadata(&out).unwrap().len(),
                MIB * 1024 * 1024,
                "image2disk wrote every byte"
            );
            let _ = std::fs::remove_file(&out);
            let t = Instant::now();
            sh(&format!(
                "curl -s {url} {pipe}| dd of={out} bs=4M iflag=fullblock conv=fsync status=none"
            ));
            let peer = t.elapsed().as_secs_f64();
            assert_eq!(
                std::fs::metadata(&out).unwrap().len(),
                MIB * 1024 * 1024,
                "the peer wrote every byte"
            );
            if round == 1 {
                let mb = (MIB * 1024 * 1024) as f64 / 1e6;
                rows.push(format!(
                    "| {file} | {:.0} | {:.0} | {:.2} |",
                    mb / ours,
                    mb / peer,
                    ours / peer
                ));
            }
        }
    }
    let table = format!(
        "| image | image2disk MB/s | peer (`curl {}| dd conv=fsync`) MB/s | our time / peer time |\n|---|---:|---:|---:|\n{}\n",
        "[| zstd -d | gzip -d] ",
        rows.join("\n")
    );
    print!("{table}");
    let body = format!(
        "Command: `cargo bench --bench image2disk` (run {}; {} cores; a {} MiB image, half random, half zeros, from our HTTP server on loopback to a file, fsync at the end; second of two rounds, so both read a warm page cache).\n\n{table}",
        jiff::Timestamp::now().strftime("%Y-%m-%d"),
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        MIB
    );
    support::write_section("image2disk", "Actions: image2disk against curl | dd", &body);
}
