//! How clients reach the coordinator over TLS, shared by `ipw` and `ipw-agent`.
//!
//! The coordinator is its own certificate authority. Clients trust that CA alone (pinned by
//! its SHA-256 fingerprint at join time, as `kubeadm join --discovery-token-ca-cert-hash`
//! does) and verify the server certificate against the fixed name [`SERVER_NAME`], which every
//! coordinator certificate carries; so the address an agent dials (an IP, a DNS alias, a
//! tunnel) does not need to be in the certificate.

use sha2::{Digest, Sha256};
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// The name every coordinator certificate carries and every client verifies.
pub const SERVER_NAME: &str = "ipw-coordinator";

/// The fingerprint of a DER certificate, as join commands print it: `sha256:<64 hex digits>`.
pub fn fingerprint(der: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(der)))
}

/// Checks that `s` looks like a fingerprint and returns it in canonical (lower-case) form.
pub fn parse_fingerprint(s: &str) -> Result<String, String> {
    let hex_part = s.trim().strip_prefix("sha256:").ok_or_else(|| {
        format!("CA fingerprint \"{s}\" must look like sha256:<64 hex digits> (as `ipw token create` prints it)")
    })?;
    if hex_part.len() != 64 || !hex_part.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("CA fingerprint \"{s}\" must have 64 hex digits after sha256:"));
    }
    Ok(format!("sha256:{}", hex_part.to_ascii_lowercase()))
}

/// The DER bytes of a PEM certificate.
pub fn pem_to_der(pem_text: &str) -> Result<Vec<u8>, String> {
    let p = pem::parse(pem_text).map_err(|e| format!("not a PEM certificate: {e}"))?;
    if p.tag() != "CERTIFICATE" {
        return Err(format!("expected a CERTIFICATE, found {}", p.tag()));
    }
    Ok(p.into_contents())
}

/// A DER certificate as PEM.
pub fn der_to_pem(der: &[u8]) -> String {
    pem::encode(&pem::Pem::new("CERTIFICATE", der))
}

/// A call's error, with a hint when it is what plain text against a TLS server looks like
/// (an HTTP/2 protocol or transport error on an `http://` URL).
pub fn explain(url: &str, message: &str) -> String {
    if url.starts_with("http://") && (message.contains("h2 protocol error") || message == "transport error") {
        format!(
            "{message} (if the coordinator serves TLS, as it does unless started with --insecure, use https:// \
             with the CA fingerprint that `ipw token create` prints)"
        )
    } else {
        message.to_owned()
    }
}

/// What a client needs to talk TLS to the coordinator.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientTls {
    /// The coordinator's CA, PEM.
    pub ca_pem: String,
    /// A client certificate and its key, PEM, for coordinators that require mTLS.
    pub identity: Option<(String, String)>,
}

/// An endpoint for `url`: `https://` with `tls`, or plain `http://` without.
///
/// Mixing them is refused rather than guessed: plain text must be asked for explicitly.
pub fn endpoint(url: &str, tls: Option<&ClientTls>) -> Result<Endpoint, String> {
    let endpoint = Endpoint::from_shared(url.to_owned()).map_err(|e| format!("{url} is not a valid URL: {e}"))?;
    match (url.starts_with("https://"), tls) {
        (true, Some(tls)) => {
            let mut config =
                ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&tls.ca_pem)).domain_name(SERVER_NAME);
            if let Some((cert, key)) = &tls.identity {
                config = config.identity(Identity::from_pem(cert, key));
            }
            endpoint.tls_config(config).map_err(|e| format!("TLS settings for {url}: {e}"))
        }
        (true, None) => Err(format!("{url} is https but no CA certificate of the coordinator is known")),
        (false, None) if url.starts_with("http://") => Ok(endpoint),
        (false, Some(_)) => Err(format!("{url} is plain http but TLS settings were given; use https://")),
        (false, None) => Err(format!("{url} must start with https:// (or http:// with --insecure)")),
    }
}

/// The builder of every HTTP client here (the OpenAI-compatible client, the meters): https
/// through rustls with ring, the crypto the gRPC side uses, and this machine's trusted roots.
/// Installs ring as rustls's process default first, which reqwest needs without a provider of
/// its own.
pub fn http_client() -> reqwest::ClientBuilder {
    // Already installed (by an earlier call, or by the binary) is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_checked_and_canonical() {
        let fp = fingerprint(b"not really a certificate");
        assert_eq!(parse_fingerprint(&fp.to_uppercase().replace("SHA256", "sha256")).unwrap(), fp);
        assert!(parse_fingerprint("abc").unwrap_err().contains("sha256:"));
        assert!(parse_fingerprint("sha256:12").unwrap_err().contains("64 hex digits"));
    }

    #[test]
    fn pem_round_trips() {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x07];
        assert_eq!(pem_to_der(&der_to_pem(&der)).unwrap(), der);
        assert!(pem_to_der("garbage").is_err());
    }

    #[test]
    fn plain_text_against_tls_gets_a_hint() {
        assert!(explain("http://c:1", "h2 protocol error: http2 error").contains("if the coordinator serves TLS"));
        assert_eq!(explain("https://c:1", "h2 protocol error"), "h2 protocol error");
    }

    #[test]
    fn plain_text_and_tls_are_not_mixed() {
        let tls = ClientTls { ca_pem: "x".into(), identity: None };
        assert!(endpoint("http://127.0.0.1:1", None).is_ok());
        assert!(endpoint("https://127.0.0.1:1", None).unwrap_err().contains("no CA"));
        assert!(endpoint("http://127.0.0.1:1", Some(&tls)).unwrap_err().contains("plain http"));
        assert!(endpoint("127.0.0.1:1", None).unwrap_err().contains("https://"));
    }
}
