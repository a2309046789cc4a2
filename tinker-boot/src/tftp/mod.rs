//! Read-only TFTP: RFC 1350, with the option extensions blksize (RFC 2348), tsize
//! and timeout (RFC 2349) negotiated through OACK (RFC 2347), and windowsize
//! (RFC 7440). It serves iPXE binaries to PXE ROMs.
//!
//! [`packet`] is the codec and [`Transfer`] the per-transfer state machine (pure:
//! packets and time in, packets and the next deadline out); [`server`] runs one
//! tokio task per transfer, each on its own socket (a new transfer id, as the RFC
//! asks). Files come from a [`FileSource`]: a served directory that nothing can
//! leave (`..`, absolute paths and symbolic links out of it are refused), plus
//! named files resolved once at start-up (Debian's `/usr/lib/ipxe/ipxe.efi` is a
//! link to `/boot`, and is served because the operator named it, not because the
//! check is loose).

pub mod client;
mod log;
pub mod packet;
pub mod server;
mod source;
mod transfer;

pub use log::StoreTransferLog;
pub use server::{
    MAX_TRANSFERS, TftpLimits, TftpServer, TftpStats, TransferObserver, TransferReport,
};
pub use source::{
    CacheStats, DEFAULT_CACHE_BYTES, FileSource, Origin, SourceError, default_ipxe_dir,
};
pub use transfer::{
    DEFAULT_MAX_UNANSWERED_BYTES, GaveUp, MAX_BACKOFF, MAX_BLKSIZE_NO_FRAG, MAX_RETRIES,
    MAX_TIMEOUT_OPTION, Transfer, TransferOptions, Transmit, negotiate,
};
