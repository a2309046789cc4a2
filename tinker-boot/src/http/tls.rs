//! HTTPS for the services whose callers can speak it: the worker API (the
//! agent), the operator's page and API, and the metadata service (cloud-init).
//! Firmware and iPXE fetch scripts, binaries and kernels over plain HTTP, which
//! stays served beside it.
//!
//! The agent trusts the server by a CA built into its image or by the SHA-256
//! fingerprint of the certificate ([`certificate_fingerprint`]), which the
//! control plane puts on the machine's kernel line
//! (`tinker_tls_fingerprint=sha256:<hex>`).

use std::sync::Arc;

/// Why a certificate or key cannot be served.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The certificate file holds no PEM certificate, or a bad one.
    #[error("TLS certificate: {0}")]
    Certificate(String),
    /// The key file holds no PEM private key, or a bad one (its bytes are
    /// never shown).
    #[error("TLS private key: {0}")]
    Key(String),
    /// rustls refused the pair.
    #[error("TLS: {0}")]
    Config(#[from] rustls::Error),
}

/// The certificate chain of a PEM file, leaf first.
fn chain(cert_pem: &[u8]) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let chain = rustls::pki_types::CertificateDer::pem_slice_iter(cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certificate(e.to_string()))?;
    if chain.is_empty() {
        return Err(TlsError::Certificate("no certificate in the PEM".into()));
    }
    Ok(chain)
}

/// A rustls server configuration from a PEM certificate chain and its PEM
/// private key (PKCS#8, PKCS#1 or SEC1), HTTP/1.1 only.
pub fn server_config(
    cert_pem: &[u8],
    key_pem: &[u8],
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    let chain = chain(cert_pem)?;
    // The PEM parser's error may quote the input: say only what kind it is.
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(key_pem)
        .map_err(|_| TlsError::Key("no PEM private key could be read".into()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The SHA-256 of the leaf certificate's DER, as the agent pins it.
pub fn certificate_fingerprint(cert_pem: &[u8]) -> Result<[u8; 32], TlsError> {
    use sha2::Digest;
    let chain = chain(cert_pem)?;
    Ok(sha2::Sha256::digest(chain[0].as_ref()).into())
}

/// A server's certificate and key, ready to serve, with the fingerprint its
/// agents pin. `Debug` shows the fingerprint only.
#[derive(Clone)]
pub struct TlsIdentity {
    config: Arc<rustls::ServerConfig>,
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field("fingerprint", &fingerprint_text(&self.fingerprint))
            .finish_non_exhaustive()
    }
}

impl TlsIdentity {
    /// From a PEM certificate chain (leaf first) and its PEM private key.
    pub fn from_pem(cert_pem: &[u8], key_pem: &[u8]) -> Result<Self, TlsError> {
        Ok(TlsIdentity {
            config: server_config(cert_pem, key_pem)?,
            fingerprint: certificate_fingerprint(cert_pem)?,
        })
    }

    /// Reads the two PEM files (the key file must be private to its owner,
    /// as any secret file).
    pub fn from_files(cert: &std::path::Path, key: &std::path::Path) -> Result<Self, TlsError> {
        use std::os::unix::fs::PermissionsExt;
        let read = |p: &std::path::Path| {
            std::fs::read(p).map_err(|e| TlsError::Certificate(format!("{}: {e}", p.display())))
        };
        let mode = std::fs::metadata(key)
            .map_err(|e| TlsError::Key(format!("{}: {e}", key.display())))?
            .permissions()
            .mode()
            & 0o777;
        if mode & 0o077 != 0 {
            return Err(TlsError::Key(format!(
                "{} may be read by other users (mode {mode:o}); run `chmod 600 {}`",
                key.display(),
                key.display()
            )));
        }
        let key_pem = zeroize::Zeroizing::new(
            std::fs::read(key).map_err(|e| TlsError::Key(format!("{}: {e}", key.display())))?,
        );
        Self::from_pem(&read(cert)?, &key_pem)
    }

    /// The rustls configuration.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }

    /// The leaf certificate's SHA-256.
    pub fn fingerprint(&self) -> [u8; 32] {
        self.fingerprint
    }
}

/// `sha256:<hex>`, the form the kernel line carries.
pub fn fingerprint_text(fp: &[u8; 32]) -> String {
    let hex: String = fp.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_serves_and_its_fingerprint_is_the_leafs() {
        let cert = rcgen::generate_simple_self_signed(vec!["tinker.test".into()]).unwrap();
        let (cert_pem, key_pem) = (cert.cert.pem(), cert.signing_key.serialize_pem());
        assert!(server_config(cert_pem.as_bytes(), key_pem.as_bytes()).is_ok());
        let fp = certificate_fingerprint(cert_pem.as_bytes()).unwrap();
        use sha2::Digest;
        let want: [u8; 32] = sha2::Sha256::digest(cert.cert.der().as_ref()).into();
        assert_eq!(fp, want);
        assert!(fingerprint_text(&fp).starts_with("sha256:"));
        assert!(matches!(
            server_config(b"nothing", key_pem.as_bytes()),
            Err(TlsError::Certificate(_))
        ));
        let err = server_config(
            cert_pem.as_bytes(),
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(!err.to_string().contains("AAAA"), "{err}");
    }
}
