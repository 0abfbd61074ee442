//! Client certificates of revoked agents, refused at the TLS handshake: a revoked agent's
//! connection fails before any call, not at its first call. Each replica keeps the set in
//! memory and reloads it when the database announces a revocation (`LISTEN`), so a
//! revocation on one replica reaches all of them within moments.

use rustls::client::danger::HandshakeSignatureValid;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{CertificateError, DigitallySignedStruct, DistinguishedName, SignatureScheme};
use std::collections::HashSet;
use std::sync::{Arc, RwLock};

/// The channel a revocation is announced on (`pg_notify`).
pub const CHANNEL: &str = "ipw_agent_revoked";

/// The SHA-256s of the revoked certificates, shared by the verifier and the reloader.
#[derive(Debug, Clone, Default)]
pub struct RevokedCerts(Arc<RwLock<HashSet<Vec<u8>>>>);

impl RevokedCerts {
    /// Whether the certificate with this SHA-256 is revoked.
    pub fn contains(&self, sha256: &[u8]) -> bool {
        self.0.read().expect("not poisoned").contains(sha256)
    }

    /// Replaces the whole set.
    pub fn replace(&self, hashes: impl IntoIterator<Item = Vec<u8>>) {
        *self.0.write().expect("not poisoned") = hashes.into_iter().collect();
    }
}

/// The CA's client-certificate verifier, refusing revoked certificates. Certificates stay
/// optional (an agent joins before it has one); the agent service decides per call whether
/// one is required.
#[derive(Debug)]
pub struct RevocationAware {
    /// The CA's own verifier.
    pub inner: Arc<dyn ClientCertVerifier>,
    /// What it refuses on top.
    pub revoked: RevokedCerts,
}

impl ClientCertVerifier for RevocationAware {
    fn offer_client_auth(&self) -> bool {
        self.inner.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.inner.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if self.revoked.contains(&super::auth::sha256(end_entity)) {
            return Err(rustls::Error::InvalidCertificate(CertificateError::Revoked));
        }
        self.inner.verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
