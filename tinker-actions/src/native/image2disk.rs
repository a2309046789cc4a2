//! `image2disk`: stream an HTTP(S) image onto a block device or file,
//! decompressing gzip, xz, zstd or bzip2 on the fly (`COMPRESSED=true`; the format
//! is recognised by its magic bytes, not guessed from the URL), with progress
//! lines and an optional `CHECKSUM=sha256:HEX` of the bytes downloaded.
//!
//! `DEST_DISK` must be a block device that exists and is not in use (mounted or
//! swap, itself or a partition of it); a regular file only where the runtime
//! allows one ([`NativeRuntime::with_image_files_under`](crate::NativeRuntime::with_image_files_under)).
//!
//! The network side (async) and the disk side (a blocking thread: decompression
//! and writes) are joined by a bounded channel, so a slow disk slows the download
//! instead of filling memory.

use super::env::{flag, need};
use super::{Builtin, Ctx, Entry, failed, no_final_step};
use futures_util::future::BoxFuture;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use jiff::Timestamp;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;
use tinker_core::clock::Clock;
use tinker_core::runtime::{ActionOutcome, OutputSink, Stream};
use tinker_core::{Error, Result};

/// The registration of `image2disk`.
pub(super) const ENTRY: Entry = Entry {
    builtin: Builtin::Image2Disk,
    name: "image2disk",
    start,
    final_step: no_final_step,
};

/// How often a progress line is written while the image streams.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

fn start<'a>(cx: &'a Ctx<'a>) -> BoxFuture<'a, Result<ActionOutcome>> {
    Box::pin(run(cx))
}

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

/// What `DEST_DISK` names, once checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    /// A block device nothing has mounted.
    Block,
    /// A regular file under the directory the runtime allows files in.
    File,
}

/// Checks `DEST_DISK` before anything is downloaded: a block device that is
/// neither mounted nor in use as swap (nor any of its partitions), or, only when
/// the runtime allows it (`files_under`), a file under that directory. A
/// missing device is refused, never created.
fn check_dest(dest: &str, files_under: Option<&Path>) -> std::result::Result<Target, String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let path = Path::new(dest);
    let file_ok = files_under.is_some_and(|dir| {
        path.is_absolute()
            && !path
                .components()
                .any(|c| c == std::path::Component::ParentDir)
            && path.starts_with(dir)
    });
    match std::fs::metadata(path) {
        Ok(m) if m.file_type().is_block_device() => match in_use(m.rdev()) {
            Some(why) => Err(format!(
                "DEST_DISK {dest} is in use ({why}); refusing to overwrite a disk this machine is using"
            )),
            None => Ok(Target::Block),
        },
        Ok(m) if file_ok && m.is_file() => Ok(Target::File),
        Err(e) if file_ok && e.kind() == std::io::ErrorKind::NotFound => Ok(Target::File),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "DEST_DISK {dest} does not exist: no such block device on this machine (`lsblk` lists them)"
        )),
        Err(e) => Err(format!("DEST_DISK {dest}: {e}")),
        Ok(_) => Err(format!(
            "DEST_DISK {dest} is not a block device (`lsblk` lists the disks)"
        )),
    }
}

/// Whether the block device `rdev`, or a partition of it, is mounted or used as
/// swap here: says where, if so.
fn in_use(rdev: u64) -> Option<String> {
    let (major, minor) = (rustix::fs::major(rdev), rustix::fs::minor(rdev));
    let sys = |mm: &str| std::fs::canonicalize(format!("/sys/dev/block/{mm}")).ok();
    let disk = sys(&format!("{major}:{minor}"));
    // The device itself, or a partition of it (whose sysfs directory sits in
    // the disk's).
    let ours = |mm: &str| {
        mm == format!("{major}:{minor}")
            || (disk.is_some() && sys(mm).and_then(|p| p.parent().map(Path::to_path_buf)) == disk)
    };
    let of_path = |source: &str| {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let m = std::fs::metadata(source).ok()?;
        m.file_type().is_block_device().then(|| {
            format!(
                "{}:{}",
                rustix::fs::major(m.rdev()),
                rustix::fs::minor(m.rdev())
            )
        })
    };
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let (Some(mm), Some(point)) = (f.get(2), f.get(4)) else {
            continue;
        };
        // The source follows the separator and the filesystem type.
        let source = f
            .iter()
            .position(|x| *x == "-")
            .and_then(|i| f.get(i + 2))
            .copied()
            .unwrap_or_default();
        if ours(mm) || of_path(source).is_some_and(|s| ours(&s)) {
            return Some(format!("{source} is mounted on {point}"));
        }
    }
    let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
    for line in swaps.lines().skip(1) {
        let name = line.split_whitespace().next().unwrap_or_default();
        if of_path(name).is_some_and(|s| ours(&s)) {
            return Some(format!("{name} is used as swap"));
        }
    }
    None
}

fn sink(mut input: Box<dyn Read + Send>, dest: &str, target: Target) -> std::io::Result<u64> {
    let path = Path::new(dest);
    let file = match target {
        // Never created: it was checked to exist.
        Target::Block => std::fs::OpenOptions::new().write(true).open(path)?,
        Target::File => std::fs::OpenOptions::new()
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
    if target == Target::Block {
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

/// The action's contract, read from its environment.
struct Contract {
    url: String,
    dest: String,
    compressed: bool,
    checksum: Option<String>,
}

impl Contract {
    fn read(env: &BTreeMap<String, String>) -> Result<Self> {
        Ok(Contract {
            url: need(env, "IMG_URL")?.to_string(),
            dest: need(env, "DEST_DISK")?.to_string(),
            compressed: flag(env, "COMPRESSED", &["true", "1", "y"]),
            checksum: env.get("CHECKSUM").cloned(),
        })
    }
}

async fn run(cx: &Ctx<'_>) -> Result<ActionOutcome> {
    let c = Contract::read(&cx.spec.environment)?;
    let (url, dest) = (&c.url, &c.dest);
    let target = match check_dest(dest, cx.runtime.image_files.as_deref()) {
        Ok(t) => t,
        Err(why) => return Ok(failed(why)),
    };
    let uri: hyper::Uri = url.parse().map_err(|_| Error::Unsupported {
        target: "image2disk".into(),
        operation: format!("IMG_URL {url:?} (not a URL)"),
    })?;
    let response = client()?.get(uri).await.map_err(|e| Error::Unreachable {
        target: url.clone(),
        reason: e.to_string(),
    })?;
    if !response.status().is_success() {
        return Ok(failed(format!("GET {url}: {}", response.status())));
    }
    let total: Option<u64> = response
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok()?.parse().ok());
    cx.out.line(
        Stream::Stdout,
        &format!(
            "image2disk: {url} -> {dest} ({} bytes{})",
            total.map_or("?".to_string(), |t| t.to_string()),
            if c.compressed { ", compressed" } else { "" }
        ),
    );
    let (tx, rx): (SyncSender<Bytes>, Receiver<Bytes>) = sync_channel(32);
    let (dest2, compressed) = (dest.clone(), c.compressed);
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<u64> {
        let input = decoder(
            ChannelReader {
                rx,
                current: Bytes::new(),
            },
            compressed,
        )?;
        sink(input, &dest2, target)
    });
    let clock = cx.runtime.clock.as_ref();
    let started = clock.now();
    let mut progress = Progress {
        out: cx.out,
        clock,
        total,
        started,
        next_report: started + PROGRESS_EVERY,
    };
    let mut hasher = c.checksum.as_ref().map(|_| Sha256::new());
    let network_error = download(cx, response.into_body(), tx, &mut hasher, &mut progress).await;
    let written = writer.await.map_err(|e| Error::backend("image2disk", e))?;
    if let Some(why) = network_error {
        return Ok(failed(why));
    }
    let written = match written {
        Ok(n) => n,
        Err(e) => return Ok(failed(format!("writing {dest}: {e}"))),
    };
    if let (Some(want), Some(h)) = (c.checksum, hasher) {
        let got_hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        let want_hex = want.trim().trim_start_matches("sha256:").to_lowercase();
        if got_hex != want_hex {
            return Ok(failed(format!(
                "checksum mismatch: sha256 {got_hex}, expected {want_hex}"
            )));
        }
        cx.out.line(Stream::Stdout, "image2disk: checksum verified");
    }
    let secs = seconds_since(clock, started);
    cx.out.line(
        Stream::Stdout,
        &format!(
            "image2disk: done, {written} bytes written to {dest} in {secs:.1} s ({:.0} MiB/s)",
            written as f64 / 1048576.0 / secs.max(0.001)
        ),
    );
    Ok(ActionOutcome::Success)
}

/// Streams the body into the disk thread's channel, hashing and reporting
/// progress on the way; returns why it stopped early, if it did. Dropping `tx`
/// at the end tells the disk thread the image is complete.
async fn download(
    cx: &Ctx<'_>,
    mut body: hyper::body::Incoming,
    tx: SyncSender<Bytes>,
    hasher: &mut Option<Sha256>,
    progress: &mut Progress<'_>,
) -> Option<String> {
    let mut got = 0u64;
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            () = cx.stop.cancelled() => return Some("stopped".to_string()),
        };
        let frame = match frame? {
            Ok(f) => f,
            Err(e) => return Some(format!("download interrupted: {e}")),
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        got += data.len() as u64;
        if let Some(h) = hasher.as_mut() {
            h.update(&data);
        }
        // Hand the chunk to the disk thread; wait (off the async threads) only
        // when it is behind. A closed channel means it stopped on an error, which
        // the caller reads from the thread.
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
            return None;
        }
        progress.tick(got);
    }
}

/// The progress lines, one every [`PROGRESS_EVERY`] on the runtime's clock.
struct Progress<'a> {
    out: &'a dyn OutputSink,
    clock: &'a dyn Clock,
    total: Option<u64>,
    started: Timestamp,
    next_report: Timestamp,
}

impl Progress<'_> {
    fn tick(&mut self, got: u64) {
        let now = self.clock.now();
        if now < self.next_report {
            return;
        }
        self.next_report = now + PROGRESS_EVERY;
        let mib = got as f64 / 1048576.0;
        let rate = mib / seconds_since(self.clock, self.started).max(0.001);
        let pct = self
            .total
            .map(|t| format!(" ({:.0}%)", got as f64 * 100.0 / t.max(1) as f64))
            .unwrap_or_default();
        self.out.line(
            Stream::Stdout,
            &format!("image2disk: {mib:.0} MiB downloaded{pct}, {rate:.0} MiB/s"),
        );
    }
}

fn seconds_since(clock: &dyn Clock, since: Timestamp) -> f64 {
    clock.now().duration_since(since).as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_plain_destination_is_refused_unless_files_are_allowed() {
        let dir = tempfile::tempdir().unwrap();
        let missing = "/dev/tinker-test-no-such-disk";
        let e = check_dest(missing, None).unwrap_err();
        assert!(e.contains("does not exist"), "{e}");
        assert!(!Path::new(missing).exists());
        let file = dir.path().join("disk.img");
        std::fs::write(&file, b"").unwrap();
        let f = file.to_str().unwrap();
        let e = check_dest(f, None).unwrap_err();
        assert!(e.contains("not a block device"), "{e}");
        assert_eq!(check_dest(f, Some(dir.path())), Ok(Target::File));
        let other = dir.path().join("new.img");
        assert_eq!(
            check_dest(other.to_str().unwrap(), Some(dir.path())),
            Ok(Target::File)
        );
        // Outside the allowed directory, or climbing out of it: refused.
        assert!(check_dest("/dev/tinker-test-x", Some(dir.path())).is_err());
        let climb = format!("{}/../x", dir.path().display());
        assert!(check_dest(&climb, Some(dir.path())).is_err());
    }
}
