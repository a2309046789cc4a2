//! How a Redfish BMC's certificate is checked. Verified against the Web PKI
//! roots plus any CA given for the BMC; skipping verification is an explicit
//! per-BMC choice ([`TlsVerification::Insecure`]).

use std::sync::Arc;
use tinker_core::{Error, Result};

/// How the BMC's certificate is checked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsVerification {
    /// Against the Web PKI roots (default).
    #[default]
    WebPki,
    /// Against these CA certificates (PEM) as well, for BMCs with a private CA.
    CustomCa(Vec<u8>),
    /// Not at all: accepts any certificate. Only for BMCs with self-signed
    /// certificates on a network you trust; chosen per BMC, logged when used.
    Insecure,
}

/// A TLS verifier that accepts any certificate but still checks that the server
/// holds the key it presents (handshake signatures).
#[derive(Debug)]
struct AcceptAnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AcceptAnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> std::result::Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
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
            &self.0.signature_verification_algorithms,
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
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The rustls client configuration for a verification choice.
pub(super) fn tls_config(verification: &TlsVerification) -> Result<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::backend("rustls", e))?;
    let mut roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let config = match verification {
        TlsVerification::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCertificate(provider)))
            .with_no_client_auth(),
        TlsVerification::CustomCa(pem) => {
            for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
                let cert = cert.map_err(|e| {
                    Error::backend("rustls", format!("bad CA certificate PEM: {e}"))
                })?;
                roots.add(cert).map_err(|e| Error::backend("rustls", e))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        TlsVerification::WebPki => builder.with_root_certificates(roots).with_no_client_auth(),
    };
    Ok(config)
}
