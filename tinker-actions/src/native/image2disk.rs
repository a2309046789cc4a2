//! `image2disk`: stream an HTTP(S) image onto a block device or file,
//! decompressing gzip, xz, zstd or bzip2 on the fly (`COMPRESSED=true`; the format
//! is recognised by its magic bytes, not guessed from the URL), with progress
//! lines and an optional `CHECKSUM=sha256:HEX` of the bytes downloaded.
//!
//! The network side (async) and the disk side (a blocking thread: decompression
//! and writes) are joined by a bounded channel, so a slow disk slows the download
//! instead of filling memory.

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, Instant};
use tinker_core::runtime::{ActionOutcome, CancelToken, OutputSink, Stream};
use tinker_core::{Error, Result};

const WRITE_BUF: usize = 4 << 20;

struct ChannelReader {
    rx: Receiver<Bytes>,
    current: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.recv() {
                Ok(b) => self.current = b,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current = self.current.slice(n..);
        Ok(n)
    }
}

/// Peeks at the first bytes to pick the decompressor.
fn decoder(mut r: ChannelReader, compressed: bool) -> std::io::Result<Box<dyn Read + Send>> {
    let mut head = Vec::new();
    while head.len() < 6 {
        let mut b = [0u8; 6];
        let n = r.read(&mut b[..6 - head.len()])?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&b[..n]);
    }
    let chained = std::io::Cursor::new(head.clone()).chain(r);
    if !compressed {
        return Ok(Box::new(chained));
    }
    Ok(if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(chained))
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Box::new(xz2::read::XzDecoder::new_multi_decoder(chained))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::new(chained)?)
    } else if head.starts_with(b"BZh") {
        Box::new(bzip2::read::MultiBzDecoder::new(chained))
    } else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "COMPRESSED=true but the image is not gzip, xz, zstd or bzip2",
        ));
    })
}

fn sink(mut input: Box<dyn Read + Send>, dest: &str) -> std::io::Result<u64> {
    let path = std::path::Path::new(dest);
    let is_block = std::fs::metadata(path).map(|m| {
        use std::os::unix::fs::FileTypeExt;
        m.file_type().is_block_device()
    });
    let file = match is_block {
        Ok(true) => std::fs::OpenOptions::new().write(true).open(path)?,
        _ => std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)?,
    };
    let mut w = std::io::BufWriter::with_capacity(WRITE_BUF, file);
    let n = std::io::copy(&mut input, &mut w)?;
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    drop(file);
    if is_block.unwrap_or(false) {
        // The image brought its own partition table: have the kernel read it, so
        // the next action finds the partitions (best effort, as partprobe).
        // Without udev (an in-memory OS) `partx -a` adds the partitions the
        // re-read missed; both are harmless when there is nothing to do.
        let _ = std::process::Command::new("blockdev")
            .args(["--rereadpt", dest])
            .output();
        let _ = std::process::Command::new("partx")
            .args(["-a", dest])
            .output();
    }
    Ok(n)
}

/// A small HTTP(S) client for the image.
fn client() -> Result<
    hyper_util::client::legacy::Client<
        hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
        Empty<Bytes>,
    >,
> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::backend("rustls", e))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(cfg)
        .https_or_http()
        .enable_http1()
        .build();
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .build(https),
    )
}

pub(super) async fn run(
    env: &BTreeMap<String, String>,
    out: &dyn OutputSink,
    cancel: &CancelToken,
) -> Result<ActionOutcome> {
    let url = super::need(env, "IMG_URL")?.to_string();
    let dest = super::need(env, "DEST_DISK")?.to_string();
    let compressed = env
        .get("COMPRESSED")
        .is_some_and(|v| v == "true" || v == "1" || v == "y");
    let checksum = env.get("CHECKSUM").cloned();
    let uri: hyper::Uri = url.parse().map_err(|_| Error::Unsupported {
        target: "image2disk".into(),
        operation: format!("IMG_URL {url:?} (not a URL)"),
    })?;
    let response = client()?.get(uri).await.map_err(|e| Error::Unreachable {
        target: url.clone(),
        reason: e.to_string(),
    })?;
    if !response.status().is_success() {
        return Ok(ActionOutcome::Failed {
            exit_code: None,
            message: format!("GET {url}: {}", response.status()),
        });
    }
    let total: Option<u64> = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    out.line(
        Stream::Stdout,
        &format!(
            "image2disk: {url} -> {dest} ({} bytes{})",
            total.map_or("?".to_string(), |t| t.to_string()),
            if compressed { ", compressed" } else { "" }
        ),
    );
    let (tx, rx): (SyncSender<Bytes>, Receiver<Bytes>) = sync_channel(32);
    let dest2 = dest.clone();
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        let input = decoder(
            ChannelReader {
                rx,
                current: Bytes::new(),
            },
            compressed,
        )?;
        sink(input, &dest2)
    });
    let mut body = response.into_body();
    let mut hasher = checksum.as_ref().map(|_| Sha256::new());
    let (mut got, started) = (0u64, Instant::now());
    let mut next_report = Instant::now() + Duration::from_secs(2);
    let mut network_error = None;
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = cancel.cancelled() => { network_error = Some("cancelled".to_string()); break; }
        };
        let Some(frame) = frame else { break };
        let frame = match frame {
            Ok(f) => f,
            Err(e) => {
                network_error = Some(format!("download interrupted: {e}"));
                break;
            }
        };
        if let Ok(data) = frame.into_data() {
            got += data.len() as u64;
            if let Some(h) = hasher.as_mut() {
                h.update(&data);
            }
            // Hand the chunk to the disk thread; wait (off the async threads) only
            // when it is behind. A closed channel means it stopped on an error.
            let stopped = match tx.try_send(data) {
                Ok(()) => false,
                Err(TrySendError::Disconnected(_)) => true,
                Err(TrySendError::Full(data)) => {
                    let tx = tx.clone();
                    tokio::task::spawn_blocking(move || tx.send(data))
                        .await
                        .map(|r| r.is_err())
                        .unwrap_or(true)
                }
            };
            if stopped {
                break;
            }
            if Instant::now() >= next_report {
                next_report = Instant::now() + Duration::from_secs(2);
                let mib = got as f64 / 1048576.0;
                let rate = mib / started.elapsed().as_secs_f64().max(0.001);
                let pct = total
                    .map(|t| format!(" ({:.0}%)", got as f64 * 100.0 / t.max(1) as f64))
                    .unwrap_or_default();
                out.line(
                    Stream::Stdout,
                    &format!("image2disk: {mib:.0} MiB downloaded{pct}, {rate:.0} MiB/s"),
                );
            }
        }
    }
    drop(tx);
    let written = writer.await.map_err(|e| Error::backend("image2disk", e))?;
    if let Some(why) = network_error {
        return Ok(ActionOutcome::Failed {
            exit_code: None,
            message: why,
        });
    }
    let written = match written {
        Ok(n) => n,
        Err(e) => {
            return Ok(ActionOutcome::Failed {
                exit_code: None,
                message: format!("writing {dest}: {e}"),
            });
        }
    };
    if let (Some(want), Some(h)) = (checksum, hasher) {
        let got_hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let want_hex = want.trim().trim_start_matches("sha256:").to_lowercase();
        if got_hex != want_hex {
            return Ok(ActionOutcome::Failed {
                exit_code: None,
                message: format!("checksum mismatch: sha256 {got_hex}, expected {want_hex}"),
            });
        }
        out.line(Stream::Stdout, "image2disk: checksum verified");
    }
    let secs = started.elapsed().as_secs_f64();
    out.line(
        Stream::Stdout,
        &format!(
            "image2disk: done, {written} bytes written to {dest} in {secs:.1} s ({:.0} MiB/s)",
            written as f64 / 1048576.0 / secs.max(0.001)
        ),
    );
    Ok(ActionOutcome::Success)
}
