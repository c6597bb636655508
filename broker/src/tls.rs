//! The rustls server configuration of a TLS listener, from its `ssl_options`. Every failure
//! names the key and the file, so a broker that cannot serve TLS says why before it starts.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;

use crate::config::SslOptions;

/// Builds the server configuration of the listener whose keys start with `prefix`
/// (`listeners.ssl.default`).
pub fn server_config(prefix: &str, o: &SslOptions) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let key_name = |k: &str| format!("{prefix}.ssl_options.{k}");
    let certs = certificates(&key_name("certfile"), &o.certfile)?;
    let key = private_key(&key_name("keyfile"), &o.keyfile)?;
    let certified = CertifiedKey::from_der(certs, key, &provider).map_err(|e| {
        format!(
            "{} {} and {} {}: {e} (the key does not belong to the certificate?)",
            key_name("certfile"),
            o.certfile.display(),
            key_name("keyfile"),
            o.keyfile.display()
        )
    })?;
    let versions: Vec<&'static rustls::SupportedProtocolVersion> = o
        .versions
        .iter()
        .map(|v| match *v {
            "tlsv1.2" => &rustls::version::TLS12,
            _ => &rustls::version::TLS13,
        })
        .collect();
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&versions)
        .map_err(|e| format!("{}: {e}", key_name("versions")))?;
    let builder = if o.verify_peer {
        let roots = ca_roots(&key_name("cacertfile"), &o.cacertfile)?;
        let mut verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
        if o.enable_crl_check {
            verifier = verifier.with_crls(crls(&key_name("crlfile"), &o.crlfile)?);
        }
        if !o.fail_if_no_peer_cert {
            verifier = verifier.allow_unauthenticated();
        }
        let verifier = verifier
            .build()
            .map_err(|e| format!("{}: {e}", key_name("cacertfile")))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let config = builder.with_cert_resolver(Arc::new(SingleCert(Arc::new(certified))));
    Ok(Arc::new(config))
}

/// Serves the one certificate to every client.
#[derive(Debug)]
struct SingleCert(Arc<CertifiedKey>);

impl rustls::server::ResolvesServerCert for SingleCert {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }
}

fn required<'a>(key: &str, path: &'a Path) -> Result<&'a Path, String> {
    if path.as_os_str().is_empty() {
        return Err(format!("{key} is not set"));
    }
    Ok(path)
}

fn certificates(key: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let path = required(key, path)?;
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{key} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{key} {}: no PEM certificate in the file",
            path.display()
        ));
    }
    Ok(certs)
}

fn private_key(key: &str, path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let path = required(key, path)?;
    PrivateKeyDer::from_pem_file(path).map_err(|e| format!("{key} {}: {e}", path.display()))
}

fn ca_roots(key: &str, path: &Path) -> Result<Arc<RootCertStore>, String> {
    let certs = certificates(key, path)?;
    let mut roots = RootCertStore::empty();
    for c in certs {
        roots
            .add(c)
            .map_err(|e| format!("{key} {}: {e}", path.display()))?;
    }
    Ok(Arc::new(roots))
}

fn crls(key: &str, path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, String> {
    let path = required(key, path)?;
    let crls = CertificateRevocationListDer::pem_file_iter(path)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{key} {}: {e}", path.display()))?;
    if crls.is_empty() {
        return Err(format!("{key} {}: no PEM CRL in the file", path.display()));
    }
    Ok(crls)
}
