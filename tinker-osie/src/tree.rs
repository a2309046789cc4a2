//! The image's file tree, in memory: what goes into the initramfs, by path.
//!
//! Paths are relative (`bin/busybox`), kept sorted, so the archive written
//! from a tree has one order whatever order the files were added in.

use std::collections::BTreeMap;

/// One entry of the image.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    /// A directory (mode 0755).
    Dir,
    /// A regular file with its permission bits.
    File {
        /// The contents.
        data: Vec<u8>,
        /// Permission bits (0644, 0755).
        mode: u32,
    },
    /// A symbolic link to this target.
    Symlink(String),
    /// A character device node (`/dev/console` before devtmpfs is mounted).
    CharDev {
        /// Major number.
        major: u32,
        /// Minor number.
        minor: u32,
    },
}

/// The image's files; adding a file adds its parent directories.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    entries: BTreeMap<String, Node>,
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    fn clean(path: &str) -> String {
        path.trim_start_matches('/')
            .trim_end_matches('/')
            .to_string()
    }

    fn parents(&mut self, path: &str) {
        let mut at = 0;
        while let Some(i) = path[at..].find('/') {
            let dir = &path[..at + i];
            self.entries.entry(dir.to_string()).or_insert(Node::Dir);
            at += i + 1;
        }
    }

    /// Adds (or replaces) an entry at `path`, with its parent directories.
    pub fn insert(&mut self, path: &str, node: Node) {
        let path = Self::clean(path);
        self.parents(&path);
        self.entries.insert(path, node);
    }

    /// Adds a regular file.
    pub fn file(&mut self, path: &str, data: Vec<u8>, mode: u32) {
        self.insert(path, Node::File { data, mode });
    }

    /// Adds a directory.
    pub fn dir(&mut self, path: &str) {
        let path = Self::clean(path);
        self.parents(&path);
        self.entries.entry(path).or_insert(Node::Dir);
    }

    /// Adds a symbolic link.
    pub fn symlink(&mut self, path: &str, target: &str) {
        self.insert(path, Node::Symlink(target.to_string()));
    }

    /// The entry at `path`.
    pub fn get(&self, path: &str) -> Option<&Node> {
        self.entries.get(&Self::clean(path))
    }

    /// Whether `path` is in the tree.
    pub fn contains(&self, path: &str) -> bool {
        self.get(path).is_some()
    }

    /// Every entry, in path order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Node)> {
        self.entries.iter().map(|(p, n)| (p.as_str(), n))
    }

    /// The number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the tree is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The bytes of all regular files (what the archive holds, before compression).
    pub fn file_bytes(&self) -> u64 {
        self.entries
            .values()
            .map(|n| match n {
                Node::File { data, .. } => data.len() as u64,
                _ => 0,
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_bring_their_directories_and_order_is_by_path() {
        let mut t = Tree::new();
        t.file("/usr/sbin/b", vec![1], 0o755);
        t.file("bin/a", vec![2], 0o755);
        let paths: Vec<&str> = t.iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["bin", "bin/a", "usr", "usr/sbin", "usr/sbin/b"]);
        assert_eq!(t.file_bytes(), 2);
    }
}
