//! How the agent knows it talks to its own control plane over HTTPS.
//!
//! An in-memory OS has no Web PKI worth trusting for a private control plane,
//! so the agent trusts one of two things: a CA built into its image (PEM), or
//! the SHA-256 fingerprint of the server's certificate given on its kernel line
//! (`tinker_tls_fingerprint=sha256:<hex>`; a PEM certificate does not fit on a
//! kernel line). With a fingerprint, the certificate must be exactly that one,
//! and the server must still prove it holds its key (handshake signatures).

use std::sync::Arc;
use tinker_core::{Error, Result};

/// What the agent trusts for the control plane's certificate.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerTrust {
    /// Certificates signed by these CAs (PEM), such as one built into the
    /// in-memory OS image.
    CaPem(Vec<u8>),
    /// Exactly the certificate with this SHA-256 fingerprint (of its DER).
    Fingerprint([u8; 32]),
}

impl std::fmt::Debug for ServerTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerTrust::CaPem(pem) => write!(f, "CaPem({} bytes)", pem.len()),
            ServerTrust::Fingerprint(fp) => write!(f, "Fingerprint({})", fingerprint_text(fp)),
        }
    }
}

/// `sha256:` and the lower-case hex of a fingerprint, as the kernel line
/// carries it.
pub fn fingerprint_text(fp: &[u8; 32]) -> String {
    let hex: String = fp.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl ServerTrust {
    /// Reads a fingerprint as the kernel line or a flag gives it: 64 hex
    /// digits, optionally prefixed by `sha256:` and separated by colons (as
    /// `openssl x509 -fingerprint -sha256` prints it).
    pub fn parse_fingerprint(text: &str) -> Result<ServerTrust> {
        let bad = |why: &str| {
            Error::backend(
                "tls",
                format!("TLS fingerprint {text:?}: {why} (expected sha256:<64 hex digits>)"),
            )
        };
        let t = text.trim();
        let t = t
            .strip_prefix("sha256:")
            .or_else(|| t.strip_prefix("SHA256:"))
            .or_else(|| t.strip_prefix("sha256="))
            .unwrap_or(t);
        let hex: String = t.chars().filter(|c| *c != ':').collect();
        if hex.len() != 64 {
            return Err(bad("not 32 bytes"));
        }
        let mut fp = [0u8; 32];
        for (i, b) in fp.iter_mut().enumerate() {
            *b = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad("not hex"))?;
        }
        Ok(ServerTrust::Fingerprint(fp))
    }

    /// The rustls client configuration that trusts exactly this.
    pub fn client_config(&self) -> Result<rustls::ClientConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::backend("rustls", e))?;
        Ok(match self {
            ServerTrust::CaPem(pem) => {
                let mut roots = rustls::RootCertStore::empty();
                for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(pem) {
                    let cert: rustls::pki_types::CertificateDer<'static> = cert.map_err(|e| {
                        Error::backend("tls", format!("the control plane's CA (PEM): {e}"))
                    })?;
                    roots.add(cert).map_err(|e| {
                        Error::backend("tls", format!("the control plane's CA: {e}"))
                    })?;
                }
                if roots.is_empty() {
                    return Err(Error::backend(
                        "tls",
                        "the control plane's CA file holds no certificate",
                    ));
                }
                builder.with_root_certificates(roots).with_no_client_auth()
            }
            ServerTrust::Fingerprint(fp) => builder
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned {
                    fingerprint: *fp,
                    provider,
                }))
                .with_no_client_auth(),
        })
    }
}

/// Accepts exactly one certificate, by its SHA-256; the handshake signatures
/// are still verified, so only the holder of its key passes.
#[derive(Debug)]
struct Pinned {
    fingerprint: [u8; 32],
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use sha2::Digest;
        let seen: [u8; 32] = sha2::Sha256::digest(end_entity.as_ref()).into();
        // Not secret, but compared in constant time all the same.
        let same = seen
            .iter()
            .zip(self.fingerprint.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
        if same {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> std::result::Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_read_as_openssl_and_the_kernel_line_print_them() {
        let hex = "ab".repeat(32);
        let colons = vec!["AB"; 32].join(":");
        for text in [
            format!("sha256:{hex}"),
            hex.clone(),
            format!("SHA256:{colons}"),
            colons.clone(),
        ] {
            assert_eq!(
                ServerTrust::parse_fingerprint(&text).unwrap(),
                ServerTrust::Fingerprint([0xab; 32]),
                "{text}"
            );
        }
        assert_eq!(fingerprint_text(&[0xab; 32]), format!("sha256:{hex}"));
        for bad in ["", "sha256:abcd", &"zz".repeat(32)] {
            assert!(ServerTrust::parse_fingerprint(bad).is_err(), "{bad}");
        }
    }
}
