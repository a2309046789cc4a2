//! Where TFTP (and HTTP boot) files come from, with no way out of the served
//! directory, and the cache that reads each file from disk once for every
//! transfer of it (a thousand machines booting fetch the same iPXE binary).

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

/// Bytes of directory files kept in memory for reuse, by default: a few iPXE
/// binaries and small boot files. A file larger than the cap is read for each
/// transfer (and counted).
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

/// Where Debian's `ipxe` package puts the iPXE binaries.
pub fn default_ipxe_dir() -> PathBuf {
    PathBuf::from("/usr/lib/ipxe")
}

/// Why a file is not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceError {
    /// No such file.
    NotFound,
    /// The path would leave the served directory.
    Outside,
}

/// Where a [`FileSource::load`] found the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Origin {
    /// A named file, held since start-up.
    Named,
    /// The cache: read from disk by an earlier request, unchanged since.
    Cache,
    /// Read from disk now.
    Disk,
}

/// Counters of a source's cache (shared by its clones).
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Files read from disk.
    pub disk_reads: AtomicU64,
    /// Loads answered from the cache.
    pub hits: AtomicU64,
    /// Files dropped from the cache to stay under its cap.
    pub evictions: AtomicU64,
}

#[derive(Debug)]
struct Cached {
    modified: Option<SystemTime>,
    bytes: Arc<[u8]>,
}

/// Directory files by real path, under a cap on their total size. The key
/// includes the modification time and size, so a file replaced on disk is read
/// again.
#[derive(Debug)]
struct FileCache {
    cap: u64,
    entries: Mutex<(HashMap<PathBuf, Cached>, u64)>,
    stats: CacheStats,
}

impl FileCache {
    fn new(cap: u64) -> Self {
        FileCache {
            cap,
            entries: Mutex::default(),
            stats: CacheStats::default(),
        }
    }

    /// The file's bytes, from the cache when unchanged on disk. Blocking: runs
    /// on a blocking thread. The lock is held across a miss's read, so that
    /// transfers starting together read a file once.
    fn read(&self, real: &Path) -> Result<(Arc<[u8]>, Origin), SourceError> {
        let meta = std::fs::metadata(real).map_err(|_| SourceError::NotFound)?;
        let modified = meta.modified().ok();
        let mut guard = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let (entries, total) = &mut *guard;
        if let Some(c) = entries.get(real)
            && c.modified == modified
            && c.bytes.len() as u64 == meta.len()
        {
            self.stats.hits.fetch_add(1, Ordering::Relaxed);
            return Ok((c.bytes.clone(), Origin::Cache));
        }
        let bytes: Arc<[u8]> = std::fs::read(real)
            .map_err(|_| SourceError::NotFound)?
            .into();
        self.stats.disk_reads.fetch_add(1, Ordering::Relaxed);
        if let Some(old) = entries.remove(real) {
            *total -= old.bytes.len() as u64;
        }
        let size = bytes.len() as u64;
        if size <= self.cap {
            // Room is made by dropping entries in the map's order: the cache
            // holds a handful of boot files, not a working set worth an LRU.
            while *total + size > self.cap {
                let Some(victim) = entries.keys().next().cloned() else {
                    break;
                };
                if let Some(v) = entries.remove(&victim) {
                    *total -= v.bytes.len() as u64;
                    self.stats.evictions.fetch_add(1, Ordering::Relaxed);
                }
            }
            *total += size;
            entries.insert(
                real.to_path_buf(),
                Cached {
                    modified,
                    bytes: bytes.clone(),
                },
            );
        }
        Ok((bytes, Origin::Disk))
    }
}

/// The requested name without its leading `/` and a leading MAC directory.
fn strip_mac_dir(requested: &str) -> &str {
    let name = requested.trim_start_matches('/');
    match name.split_once('/') {
        Some((first, rest)) if first.parse::<tinker_core::MacAddr>().is_ok() => rest,
        _ => name,
    }
}

/// Files served by name: named files resolved at start-up, then a directory,
/// whose files are read once into a shared cache (clones share it).
#[derive(Debug, Clone)]
pub struct FileSource {
    root: Option<PathBuf>,
    named: HashMap<String, Arc<[u8]>>,
    cache: Arc<FileCache>,
}

impl FileSource {
    /// Serves the files below `root`. The directory must exist.
    pub fn directory(root: impl AsRef<Path>) -> std::io::Result<Self> {
        let root = root.as_ref().canonicalize()?;
        Ok(FileSource {
            root: Some(root),
            named: HashMap::new(),
            cache: Arc::new(FileCache::new(DEFAULT_CACHE_BYTES)),
        })
    }

    /// Serves nothing but named files.
    pub fn empty() -> Self {
        FileSource {
            root: None,
            named: HashMap::new(),
            cache: Arc::new(FileCache::new(DEFAULT_CACHE_BYTES)),
        }
    }

    /// The iPXE binaries of Debian's `ipxe` package (undionly.kpxe, ipxe.efi,
    /// snponly.efi, ...), read now by their real paths, or an error that names the
    /// package to install.
    pub fn ipxe_binaries(dir: impl AsRef<Path>) -> std::io::Result<Self> {
        let dir = dir.as_ref();
        let mut src = FileSource::empty();
        for name in [
            "undionly.kpxe",
            "ipxe.efi",
            "snponly.efi",
            "ipxe.pxe",
            "ipxe.lkrn",
            "snp.efi",
        ] {
            let path = dir.join(name);
            if let Ok(bytes) = std::fs::read(&path) {
                src.named.insert(name.to_string(), bytes.into());
            }
        }
        if src.named.is_empty() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "no iPXE binaries in {}: install Debian's `ipxe` package (apt-get install ipxe) or pass the directory that holds undionly.kpxe and ipxe.efi",
                    dir.display()
                ),
            ));
        }
        Ok(src)
    }

    /// Adds a file under `name`, with its bytes (read now, on purpose).
    pub fn with_file(mut self, name: &str, bytes: impl Into<Arc<[u8]>>) -> Self {
        self.named
            .insert(name.trim_start_matches('/').to_string(), bytes.into());
        self
    }

    /// Adds the served directory below the named files.
    pub fn with_directory(mut self, root: impl AsRef<Path>) -> std::io::Result<Self> {
        self.root = Some(root.as_ref().canonicalize()?);
        Ok(self)
    }

    /// The names of the named files.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.named.keys().cloned().collect();
        v.sort();
        v
    }

    /// Keeps at most `bytes` of directory files in memory (default
    /// [`DEFAULT_CACHE_BYTES`]); the cache starts empty.
    pub fn with_cache_bytes(mut self, bytes: u64) -> Self {
        self.cache = Arc::new(FileCache::new(bytes));
        self
    }

    /// The cache's counters.
    pub fn cache_stats(&self) -> &CacheStats {
        &self.cache.stats
    }

    /// A named file, or the real path of a directory file, for a requested
    /// name. A leading MAC directory (`52:54:00:12:34:56/ipxe.efi`, as
    /// Tinkerbell's smee serves) is dropped.
    fn lookup(&self, requested: &str) -> Result<Result<Arc<[u8]>, PathBuf>, SourceError> {
        if let Some(bytes) = self.named_file(requested) {
            return Ok(Ok(bytes));
        }
        self.resolve_path(strip_mac_dir(requested)).map(Err)
    }

    fn named_file(&self, requested: &str) -> Option<Arc<[u8]>> {
        self.named.get(strip_mac_dir(requested)).cloned()
    }

    /// Resolves a requested name to its contents, reading a directory file now
    /// (blocking; servers use [`load`](Self::load)). A leading MAC directory
    /// (`52:54:00:12:34:56/ipxe.efi`, as Tinkerbell's smee serves) is dropped.
    pub fn get(&self, requested: &str) -> Result<Arc<[u8]>, SourceError> {
        match self.lookup(requested)? {
            Ok(bytes) => Ok(bytes),
            Err(real) => std::fs::read(&real)
                .map(Into::into)
                .map_err(|_| SourceError::NotFound),
        }
    }

    /// Resolves a requested name to its contents, as [`get`](Self::get), off
    /// the async threads, reading each directory file from disk once while it
    /// is unchanged and fits the cache; says where the bytes came from.
    pub async fn load(&self, requested: &str) -> Result<(Arc<[u8]>, Origin), SourceError> {
        // Named files are in memory: no trip to a blocking thread (a boot storm
        // fetches the same named iPXE binary ten thousand times).
        if let Some(bytes) = self.named_file(requested) {
            return Ok((bytes, Origin::Named));
        }
        let this = self.clone();
        let requested = requested.to_string();
        // Path checks touch the disk too (canonicalize), so all of it runs there.
        tokio::task::spawn_blocking(move || match this.lookup(&requested)? {
            Ok(bytes) => Ok((bytes, Origin::Named)),
            Err(real) => this.cache.read(&real),
        })
        .await
        .unwrap_or(Err(SourceError::NotFound))
    }

    /// Whether `requested` is here now (a named file, or a regular file in the
    /// directory, with the same checks as [`get`](Self::get)); asked of the
    /// disk off the async threads, and again each time: a file removed while
    /// the server runs is missing from then on.
    pub async fn contains(&self, requested: &str) -> bool {
        if self.named_file(requested).is_some() {
            return true;
        }
        let this = self.clone();
        let requested = requested.to_string();
        tokio::task::spawn_blocking(move || this.resolve_path(&requested).is_ok())
            .await
            .unwrap_or(false)
    }

    /// The real path of a file in the served directory (for streaming large
    /// assets over HTTP), with the same checks as [`get`](Self::get).
    pub fn resolve_path(&self, requested: &str) -> Result<PathBuf, SourceError> {
        let root = self.root.as_ref().ok_or(SourceError::NotFound)?;
        let rel = Path::new(requested.trim_start_matches('/'));
        if rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(SourceError::Outside);
        }
        let real = root
            .join(rel)
            .canonicalize()
            .map_err(|_| SourceError::NotFound)?;
        if !real.starts_with(root) {
            return Err(SourceError::Outside);
        }
        if !real.is_file() {
            return Err(SourceError::NotFound);
        }
        Ok(real)
    }
}
