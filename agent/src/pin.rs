//! Learning the coordinator's CA from a fingerprint, as `kubeadm join
//! --discovery-token-ca-cert-hash` does: one TLS handshake in which the server's chain must
//! hold a certificate with the pinned SHA-256 that really signed the server certificate (for
//! the name `ipw-coordinator`). That CA is then the only one the agent trusts.

use anyhow::Context;
use ipw_proto::tls::{SERVER_NAME, fingerprint};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, ring};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::sync::{Arc, Mutex};

/// Connects to `url` (https://host:port), checks its chain against `pin` (`sha256:<hex>`) and
/// returns the pinned CA certificate, PEM. A mismatch fails the handshake with both
/// fingerprints named.
pub async fn fetch_pinned_ca(url: &str, pin: &str) -> anyhow::Result<String> {
    let pin = ipw_proto::tls::parse_fingerprint(pin).map_err(anyhow::Error::msg)?;
    let uri: tonic::codegen::http::Uri = url.parse().with_context(|| format!("{url} is not a valid URL"))?;
    let host = uri.host().with_context(|| format!("{url} has no host"))?.trim_matches(['[', ']']).to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let provider = Arc::new(ring::default_provider());
    let verifier = Arc::new(PinnedCa { pin, provider: provider.clone(), found: Mutex::default() });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS settings")?
        .dangerous()
        .with_custom_certificate_verifier(verifier.clone())
        .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .with_context(|| format!("cannot reach the coordinator at {url}"))?;
    let name = ServerName::try_from(SERVER_NAME).expect("a valid DNS name");
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.map_err(|e| {
        // The verifier's own words say what did not match.
        anyhow::anyhow!("TLS handshake with {url} failed: {e}")
    })?;
    let der = verifier.found.lock().expect("not poisoned").take().context("the handshake chose no CA")?;
    Ok(ipw_proto::tls::der_to_pem(&der))
}

/// Accepts a server only if its chain holds the pinned CA and that CA signed its certificate.
#[derive(Debug)]
struct PinnedCa {
    pin: String,
    provider: Arc<CryptoProvider>,
    found: Mutex<Option<Vec<u8>>>,
}

impl ServerCertVerifier for PinnedCa {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(ca) = intermediates.iter().find(|c| fingerprint(c) == self.pin) else {
            let presented: Vec<String> = intermediates.iter().map(|c| fingerprint(c)).collect();
            return Err(rustls::Error::General(format!(
                "the coordinator's CA does not match --ca-cert-hash {} (it presented {}); check the join command, \
                 or whether something is in between",
                self.pin,
                if presented.is_empty() { "no CA".into() } else { presented.join(", ") }
            )));
        };
        let mut roots = RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
            .build()
            .map_err(|e| rustls::Error::General(format!("the pinned CA is unusable: {e}")))?;
        webpki.verify_server_cert(end_entity, &[], server_name, ocsp_response, now)?;
        *self.found.lock().expect("not poisoned") = Some(ca.to_vec());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
