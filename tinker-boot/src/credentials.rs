//! Who may act: the tokens derived from the control plane's secret, the one way
//! a secret file is read and created, and whether a caller is the machine it
//! says it is.
//!
//! One secret, several domain-separated derivations (HMAC-SHA256 over a label
//! that no other derivation can produce):
//! - a worker's token, [`worker_token`], over the worker id (its MAC) and the time
//!   its netboot was last turned on ([`Hardware::netboot_since`]), so the token
//!   a machine got with its boot script stays valid through every retry and
//!   re-run of that netboot and a new netboot issues a new one;
//! - the operator's token, [`operator_token`], which no worker id can yield.
//!
//! A machine is recognised by the source address of its connection:
//! [`CallerCheck`] answers whether a caller is a machine's own address (its
//! reserved address, or in proxyDHCP mode the address its own DHCP traffic
//! asked for), unless the operator said the machines sit behind NAT.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use tinker_core::model::Hardware;
use tinker_core::{MacAddr, Secret};

fn hmac_hex(secret: &Secret, parts: &[&[u8]]) -> Secret {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(secret.expose().as_bytes())
        .expect("HMAC takes a key of any length");
    for p in parts {
        // Each part is length-prefixed, so no two lists of parts hash alike.
        mac.update(&(p.len() as u64).to_be_bytes());
        mac.update(p);
    }
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(digest.len() * 2);
    for b in digest {
        hex.push(char::from_digit(u32::from(b >> 4), 16).expect("a nibble"));
        hex.push(char::from_digit(u32::from(b & 0xf), 16).expect("a nibble"));
    }
    Secret::new(hex)
}

/// The bearer token of worker `worker_id` for the netboot that began at
/// `netboot_since` ([`Hardware::netboot_since`]), lower-case hex.
pub fn worker_token(secret: &Secret, worker_id: &str, netboot_since: &str) -> Secret {
    hmac_hex(
        secret,
        &[
            b"tinker worker token v2",
            worker_id.as_bytes(),
            netboot_since.as_bytes(),
        ],
    )
}

/// The operator's bearer token: a derivation of its own, so no worker id can
/// yield it.
pub fn operator_token(secret: &Secret) -> Secret {
    hmac_hex(secret, &[b"tinker operator token v1"])
}

/// Why a secret file cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SecretFileError {
    /// It cannot be read or created.
    #[error("secret file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        #[source]
        source: std::io::Error,
    },
    /// It holds nothing but white space.
    #[error("secret file {path} is empty; write a secret into it or remove it to have one made")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// Other users may read it.
    #[error(
        "secret file {path} may be read by other users (mode {mode:o}); run `chmod 600 {path}`"
    )]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// Reads a secret file, the one way every entry point does: it must be private
/// to its owner (no group or other permission bits, as ssh asks of a key) and
/// not empty; white space around the secret is dropped; a file that is not text
/// (32 random bytes, as older versions wrote) is taken as its lower-case hex.
pub fn read_secret_file(path: &Path) -> Result<Secret, SecretFileError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |source| SecretFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mode = std::fs::metadata(path).map_err(io)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::Exposed {
            path: path.to_path_buf(),
            mode,
        });
    }
    let bytes = zeroize::Zeroizing::new(std::fs::read(path).map_err(io)?);
    let secret = secret_from_bytes(bytes.trim_ascii());
    if secret.is_empty() {
        return Err(SecretFileError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(secret)
}

/// Reads the secret file at `path`, or creates it (mode 0600, 32 random bytes
/// as hex) if there is none.
pub fn read_or_create_secret_file(path: &Path) -> Result<Secret, SecretFileError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| SecretFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut random = zeroize::Zeroizing::new([0u8; 32]);
    getrandom::fill(random.as_mut_slice()).map_err(|e| io(std::io::Error::other(e.to_string())))?;
    let text = zeroize::Zeroizing::new(format!("{}\n", hex(random.as_slice())));
    match std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
    {
        Ok(mut f) => {
            f.write_all(text.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io(e)),
    }
    read_secret_file(path)
}

/// Writes a secret (the operator token, say) to `path` for the operator's
/// tools: mode 0600, replaced atomically.
pub fn write_secret_file(path: &Path, secret: &Secret) -> Result<(), SecretFileError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| SecretFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(io)?;
    f.write_all(secret.expose().as_bytes()).map_err(io)?;
    f.write_all(b"\n").map_err(io)?;
    f.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The secret from the bytes of a secret file: text as it is, anything else
/// (32 random bytes, as older versions wrote) as its lower-case hex.
pub fn secret_from_bytes(bytes: &[u8]) -> Secret {
    match std::str::from_utf8(bytes) {
        Ok(text) => Secret::new(text),
        Err(_) => Secret::new(hex(bytes)),
    }
}

/// How far a caller's source address is trusted to name its machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum AddressCheck {
    /// A machine's script carries its token, and the worker API accepts that
    /// token, only from the machine's own address. The default.
    #[default]
    Strict,
    /// The machines reach the control plane through NAT, so every caller has
    /// the same address: the by-MAC script carries the token to any caller and
    /// the worker API takes any address. Weaker: anyone on the network who
    /// knows a MAC can get that machine's token while its netboot is on. Use
    /// only for a lab behind NAT.
    BehindNat,
}

/// The addresses machines asked for in their own DHCP traffic, by MAC: in
/// proxyDHCP mode another server hands out addresses, so this is what binds a
/// machine to the address its later HTTP requests come from. Bounded: past
/// [`ObservedAddresses::CAPACITY`] entries the oldest is forgotten.
#[derive(Debug, Default)]
pub struct ObservedAddresses {
    inner: Mutex<Observed>,
}

#[derive(Debug, Default)]
struct Observed {
    by_mac: HashMap<MacAddr, (IpAddr, u64)>,
    by_ip: HashMap<IpAddr, MacAddr>,
    next: u64,
}

impl ObservedAddresses {
    /// Entries kept at most.
    pub const CAPACITY: usize = 65_536;

    /// Records that `mac` asked for `ip` (a REQUEST's requested address or its
    /// `ciaddr`).
    pub fn record(&self, mac: MacAddr, ip: IpAddr) {
        let mut o = self.inner.lock().expect("not poisoned");
        o.next += 1;
        let seq = o.next;
        let ip = ip.to_canonical();
        if let Some((old, _)) = o.by_mac.insert(mac, (ip, seq))
            && old != ip
            && o.by_ip.get(&old) == Some(&mac)
        {
            o.by_ip.remove(&old);
        }
        // The latest machine to ask for an address holds it.
        o.by_ip.insert(ip, mac);
        if o.by_mac.len() > Self::CAPACITY {
            // Rare (a flood of made-up MACs): drop the oldest tenth at once so
            // the scan is paid once per many inserts.
            let mut seqs: Vec<u64> = o.by_mac.values().map(|(_, s)| *s).collect();
            seqs.sort_unstable();
            let cut = seqs[Self::CAPACITY / 10];
            o.by_mac.retain(|_, (_, s)| *s > cut);
            let Observed { by_mac, by_ip, .. } = &mut *o;
            by_ip.retain(|ip, mac| by_mac.get(mac).is_some_and(|(held, _)| held == ip));
        }
    }

    /// The address `mac` last asked for.
    pub fn get(&self, mac: MacAddr) -> Option<IpAddr> {
        let o = self.inner.lock().expect("not poisoned");
        o.by_mac.get(&mac).map(|(ip, _)| *ip)
    }

    /// The machine that last asked for `ip`.
    pub fn mac_of(&self, ip: IpAddr) -> Option<MacAddr> {
        let o = self.inner.lock().expect("not poisoned");
        let mac = *o.by_ip.get(&ip.to_canonical())?;
        // Only while that machine still holds it.
        (o.by_mac.get(&mac).map(|(held, _)| *held) == Some(ip.to_canonical())).then_some(mac)
    }

    /// How many MACs are remembered.
    pub fn len(&self) -> usize {
        self.inner.lock().expect("not poisoned").by_mac.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Whether a caller is the machine it names: the address check and the
/// addresses seen in DHCP, shared by the script route and the worker API.
#[derive(Debug, Clone, Default)]
pub struct CallerCheck {
    /// How far addresses are trusted.
    pub mode: AddressCheck,
    /// Addresses machines asked for in proxyDHCP mode.
    pub observed: Arc<ObservedAddresses>,
}

impl CallerCheck {
    /// Whether `caller` may act as the machine whose interface has `mac`: its
    /// reserved address, the address its own DHCP traffic asked for, or any
    /// address behind NAT.
    pub fn is_machine(&self, hw: &Hardware, mac: MacAddr, caller: IpAddr) -> bool {
        if self.mode == AddressCheck::BehindNat {
            return true;
        }
        let caller = caller.to_canonical();
        hw.ipv4s().iter().any(|ip| IpAddr::V4(*ip) == caller)
            || self.observed.get(mac) == Some(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivations_are_apart() {
        let s = Secret::new("s3cret");
        let a = worker_token(&s, "02:00:00:00:00:01", "");
        let b = worker_token(&s, "02:00:00:00:00:01", "2026-12-01T00:00:00Z");
        assert_ne!(a, b, "a new netboot rotates the token");
        assert_eq!(a, worker_token(&s, "02:00:00:00:00:01", ""));
        // Length prefixes: moving bytes between the parts changes the token.
        assert_ne!(worker_token(&s, "ab", "c"), worker_token(&s, "a", "bc"));
        for id in ["operator", "", "tinker operator token v1"] {
            assert_ne!(worker_token(&s, id, ""), operator_token(&s));
        }
        assert_eq!(operator_token(&s).expose().len(), 64);
    }

    #[test]
    fn secret_files_read_one_way() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("secret");
        let write = |bytes: &[u8], mode| {
            std::fs::write(&p, bytes).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        };
        write(b"  s3cret\n", 0o600);
        assert_eq!(read_secret_file(&p).unwrap().expose(), "s3cret");
        write(&[0xff, 0x00, 0x10], 0o400);
        assert_eq!(read_secret_file(&p).unwrap().expose(), "ff0010");
        write(b" \n", 0o600);
        assert!(matches!(
            read_secret_file(&p),
            Err(SecretFileError::Empty { .. })
        ));
        write(b"s3cret", 0o644);
        let exposed = read_secret_file(&p).unwrap_err();
        assert!(matches!(
            exposed,
            SecretFileError::Exposed { mode: 0o644, .. }
        ));
        assert!(!exposed.to_string().contains("s3cret"));
    }

    #[test]
    fn created_secret_files_are_private_and_stable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("new-secret");
        let made = read_or_create_secret_file(&p).unwrap();
        assert_eq!(made.expose().len(), 64);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_or_create_secret_file(&p).unwrap(), made);
        let out = dir.path().join("operator-token");
        write_secret_file(&out, &operator_token(&made)).unwrap();
        let mode = std::fs::metadata(&out).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read_secret_file(&out).unwrap(), operator_token(&made));
    }

    #[test]
    fn observed_addresses_stay_bounded() {
        let o = ObservedAddresses::default();
        for i in 0..(ObservedAddresses::CAPACITY as u64 + 10) {
            let b = i.to_be_bytes();
            let mac = MacAddr([0x02, b[3], b[4], b[5], b[6], b[7]]);
            o.record(mac, IpAddr::from([10, b[5], b[6], b[7]]));
        }
        assert!(o.len() <= ObservedAddresses::CAPACITY);
        let last = MacAddr([0x02, 0, 0, 1, 0, 9]);
        assert_eq!(o.get(last), Some(IpAddr::from([10, 1, 0, 9])));
        assert_eq!(o.mac_of(IpAddr::from([10, 1, 0, 9])), Some(last));
        assert_eq!(o.mac_of(IpAddr::from([10, 0, 0, 0])), None, "forgotten");
        // A machine that moves gives up its old address.
        o.record(last, IpAddr::from([192, 0, 2, 1]));
        assert_eq!(o.mac_of(IpAddr::from([10, 1, 0, 9])), None);
        assert_eq!(o.mac_of(IpAddr::from([192, 0, 2, 1])), Some(last));
    }
}
