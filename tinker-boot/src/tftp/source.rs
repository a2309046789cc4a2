//! Where TFTP (and HTTP boot) files come from, with no way out of the served
//! directory.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

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

/// Files served by name: named files resolved at start-up, then a directory.
#[derive(Debug, Clone)]
pub struct FileSource {
    root: Option<PathBuf>,
    named: HashMap<String, Arc<[u8]>>,
}

impl FileSource {
    /// Serves the files below `root`. The directory must exist.
    pub fn directory(root: impl AsRef<Path>) -> std::io::Result<Self> {
        let root = root.as_ref().canonicalize()?;
        Ok(FileSource {
            root: Some(root),
            named: HashMap::new(),
        })
    }

    /// Serves nothing but named files.
    pub fn empty() -> Self {
        FileSource {
            root: None,
            named: HashMap::new(),
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

    /// Resolves a requested name to its contents. A leading MAC directory
    /// (`52:54:00:12:34:56/ipxe.efi`, as Tinkerbell's smee serves) is dropped.
    pub fn get(&self, requested: &str) -> Result<Arc<[u8]>, SourceError> {
        let name = requested.trim_start_matches('/');
        let name = match name.split_once('/') {
            Some((first, rest)) if first.parse::<tinker_core::MacAddr>().is_ok() => rest,
            _ => name,
        };
        if let Some(bytes) = self.named.get(name) {
            return Ok(bytes.clone());
        }
        let root = self.root.as_ref().ok_or(SourceError::NotFound)?;
        let rel = Path::new(name);
        if rel
            .components()
            .any(|c| !matches!(c, Component::Normal(_) | Component::CurDir))
        {
            return Err(SourceError::Outside);
        }
        let path = root.join(rel);
        let real = path.canonicalize().map_err(|_| SourceError::NotFound)?;
        // Symbolic links that lead out of the directory are refused, like `..`.
        if !real.starts_with(root) {
            return Err(SourceError::Outside);
        }
        if !real.is_file() {
            return Err(SourceError::NotFound);
        }
        std::fs::read(&real)
            .map(Into::into)
            .map_err(|_| SourceError::NotFound)
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
