//! The rustls server configuration of a TLS listener, from its `ssl_options`. Every failure
//! names the key and the file, so a broker that cannot serve TLS says why before it starts.
//! Certificates, keys, CAs and CRLs can be re-read while the broker runs (SIGHUP, or a changed
//! file): new handshakes use them, established connections are not touched.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::sign::CertifiedKey;
use rustls::{DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme};

use crate::config::{CrlCache, SslOptions};

/// A TLS listener's rustls configuration, with its certificate, key, CA and CRL swappable
/// while it runs: [`TlsListener::reload`] re-reads the files and new handshakes use them;
/// established connections keep the session they have.
#[derive(Debug)]
pub struct TlsListener {
    prefix: String,
    options: SslOptions,
    provider: Arc<CryptoProvider>,
    cert: Arc<ArcSwap<CertifiedKey>>,
    verifier: Option<Arc<SwapVerifier>>,
    config: Arc<rustls::ServerConfig>,
    stamps: Vec<Option<SystemTime>>,
    /// With OCSP stapling: the request for the current certificate and when to fetch next.
    ocsp: Option<(Vec<u8>, Instant)>,
    /// With a CRL check: CRLs fetched from client certificates' distribution points.
    dp: Option<DpCrls>,
}

/// CRLs of distribution points, fetched by the control thread as client certificates name them.
#[derive(Debug)]
struct DpCrls {
    /// URLs the verifier met and has no CRL for.
    wanted: Receiver<String>,
    crls: HashMap<String, CertificateRevocationListDer<'static>>,
    next_refresh: Instant,
    refresh: Duration,
    timeout: Duration,
}

impl TlsListener {
    /// Reads the files of the listener whose keys start with `prefix` (`listeners.ssl.default`)
    /// and builds its configuration; the error names the key and the file.
    pub fn new(prefix: &str, o: &SslOptions, crl_cache: &CrlCache) -> Result<Self, String> {
        let provider = Arc::new(provider(prefix, o)?);
        let cert = Arc::new(ArcSwap::from_pointee(certified_key(prefix, o, &provider)?));
        if o.versions.is_empty() {
            return Err(format!(
                "{prefix}.ssl_options.versions: empty: no TLS version to offer"
            ));
        }
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
            .map_err(|e| format!("{prefix}.ssl_options.versions: {e}"))?;
        let mut dp = None;
        let (builder, verifier) = if o.verify_peer {
            let inner = client_verifier(prefix, o, &provider, &[])?;
            let dp_check = o.enable_crl_check.then(|| {
                let (tx, rx) = std::sync::mpsc::channel();
                dp = Some(DpCrls {
                    wanted: rx,
                    crls: HashMap::new(),
                    next_refresh: Instant::now() + crl_cache.refresh_interval,
                    refresh: crl_cache.refresh_interval,
                    timeout: crl_cache.http_timeout,
                });
                DpCheck {
                    known: ArcSwap::from_pointee(HashSet::new()),
                    wanted: tx,
                }
            });
            let swap = Arc::new(SwapVerifier {
                inner: ArcSwap::from_pointee(inner),
                mandatory: o.fail_if_no_peer_cert,
                dp: dp_check,
            });
            (builder.with_client_cert_verifier(swap.clone()), Some(swap))
        } else {
            (builder.with_no_client_auth(), None)
        };
        let config = builder.with_cert_resolver(Arc::new(Resolver(cert.clone())));
        let ocsp = ocsp_request(prefix, o, &cert.load())?.map(|r| (r, Instant::now()));
        Ok(Self {
            prefix: prefix.to_owned(),
            options: o.clone(),
            provider,
            cert,
            verifier,
            config: Arc::new(config),
            stamps: stamps(o),
            ocsp,
            dp,
        })
    }

    /// With a CRL check: fetches the CRLs of distribution points client certificates named
    /// since the last call, and all of them again when the refresh interval has passed; then
    /// verifies with them. Returns what to log.
    pub fn refresh_crls(&mut self, now: Instant) -> Vec<Result<String, String>> {
        let (Some(dp), Some(swap)) = (self.dp.as_mut(), self.verifier.as_ref()) else {
            return Vec::new();
        };
        let mut urls: Vec<String> = dp.wanted.try_iter().collect();
        if now >= dp.next_refresh {
            dp.next_refresh = now + dp.refresh;
            urls.extend(dp.crls.keys().cloned());
        }
        urls.sort();
        urls.dedup();
        if urls.is_empty() {
            return Vec::new();
        }
        let mut log = Vec::new();
        for url in urls {
            let got = crate::ocsp::get(&url, dp.timeout).and_then(|body| parse_crl(&url, body));
            match got {
                Ok(crl) => {
                    dp.crls.insert(url.clone(), crl);
                    log.push(Ok(format!("{}: CRL of {url} fetched", self.prefix)));
                }
                Err(e) => log.push(Err(format!("{}: CRL: {e}", self.prefix))),
            }
        }
        let fetched: Vec<CertificateRevocationListDer<'static>> =
            dp.crls.values().cloned().collect();
        match client_verifier(&self.prefix, &self.options, &self.provider, &fetched) {
            Ok(v) => {
                swap.inner.store(Arc::new(v));
                if let Some(check) = &swap.dp {
                    check
                        .known
                        .store(Arc::new(dp.crls.keys().cloned().collect()));
                }
            }
            Err(e) => log.push(Err(e)),
        }
        log
    }

    /// With OCSP stapling, when due: fetches a fresh response and staples it to the
    /// certificate. `None` when there was nothing to do; on an error the previous response
    /// (if any) stays stapled and the next attempt is one refresh interval later.
    pub fn refresh_ocsp(&mut self, now: Instant) -> Option<Result<(), String>> {
        let (request, due) = self.ocsp.as_mut()?;
        if now < *due {
            return None;
        }
        let o = &self.options.ocsp;
        *due = now + o.refresh_interval;
        let result = crate::ocsp::post(&o.responder_url, request, o.refresh_http_timeout)
            .and_then(|resp| crate::ocsp::check_response(&resp).map(|()| resp))
            .map(|resp| {
                let mut key = CertifiedKey::clone(&self.cert.load());
                key.ocsp = Some(resp);
                self.cert.store(Arc::new(key));
            });
        Some(result.map_err(|e| format!("{}.ssl_options.ocsp: {e}", self.prefix)))
    }

    /// The configuration the shards use.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.config.clone()
    }

    /// The listener's key prefix (`listeners.ssl.default`).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether a certificate, key, CA or CRL file changed since the last (re)load.
    pub fn files_changed(&self) -> bool {
        stamps(&self.options) != self.stamps
    }

    /// Re-reads the files. On an error the listener keeps what it had and the error names the
    /// key and the file.
    pub fn reload(&mut self) -> Result<(), String> {
        self.stamps = stamps(&self.options);
        let key = certified_key(&self.prefix, &self.options, &self.provider)?;
        let fetched: Vec<CertificateRevocationListDer<'static>> = self
            .dp
            .as_ref()
            .map(|d| d.crls.values().cloned().collect())
            .unwrap_or_default();
        let verifier = match &self.verifier {
            Some(_) => Some(client_verifier(
                &self.prefix,
                &self.options,
                &self.provider,
                &fetched,
            )?),
            None => None,
        };
        // A new certificate needs its own OCSP response, fetched at once.
        self.ocsp = ocsp_request(&self.prefix, &self.options, &key)?.map(|r| (r, Instant::now()));
        self.cert.store(Arc::new(key));
        if let (Some(swap), Some(v)) = (&self.verifier, verifier) {
            swap.inner.store(Arc::new(v));
        }
        Ok(())
    }
}

/// rustls' ring provider with the cipher suites `ciphers` names (all when empty).
fn provider(prefix: &str, o: &SslOptions) -> Result<CryptoProvider, String> {
    use rustls::crypto::ring::cipher_suite as cs;
    let mut p = rustls::crypto::ring::default_provider();
    if o.ciphers.is_empty() {
        return Ok(p);
    }
    let suite = |name: &str| match name {
        "TLS_AES_256_GCM_SHA384" => cs::TLS13_AES_256_GCM_SHA384,
        "TLS_AES_128_GCM_SHA256" => cs::TLS13_AES_128_GCM_SHA256,
        "TLS_CHACHA20_POLY1305_SHA256" => cs::TLS13_CHACHA20_POLY1305_SHA256,
        "ECDHE-ECDSA-AES256-GCM-SHA384" | "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384" => {
            cs::TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
        }
        "ECDHE-ECDSA-AES128-GCM-SHA256" | "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256" => {
            cs::TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
        }
        "ECDHE-ECDSA-CHACHA20-POLY1305" | "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256" => {
            cs::TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
        }
        "ECDHE-RSA-AES256-GCM-SHA384" | "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384" => {
            cs::TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
        }
        "ECDHE-RSA-AES128-GCM-SHA256" | "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256" => {
            cs::TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
        }
        _ => cs::TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
    };
    p.cipher_suites = o.ciphers.iter().map(|n| suite(n)).collect();
    let tls13 = p
        .cipher_suites
        .iter()
        .any(|s| s.version() == &rustls::version::TLS13);
    let tls12 = p
        .cipher_suites
        .iter()
        .any(|s| s.version() == &rustls::version::TLS12);
    let usable = o
        .versions
        .iter()
        .any(|v| (*v == "tlsv1.3" && tls13) || (*v == "tlsv1.2" && tls12));
    if !usable {
        return Err(format!(
            "{prefix}.ssl_options.ciphers: none of {:?} works with versions {:?}",
            o.ciphers, o.versions
        ));
    }
    Ok(p)
}

/// The OCSP request for `key`'s certificate, if stapling is on; the error names the key.
fn ocsp_request(
    prefix: &str,
    o: &SslOptions,
    key: &CertifiedKey,
) -> Result<Option<Vec<u8>>, String> {
    let ocsp = &o.ocsp;
    if !ocsp.enable_ocsp_stapling {
        return Ok(None);
    }
    let name = |k: &str| format!("{prefix}.ssl_options.ocsp.{k}");
    if !ocsp.responder_url.starts_with("http://") {
        return Err(format!(
            "{}: expected an http:// URL with enable_ocsp_stapling, got {:?}",
            name("responder_url"),
            ocsp.responder_url
        ));
    }
    let issuer = certificates(&name("issuer_pem"), &ocsp.issuer_pem)?;
    let leaf = key
        .cert
        .first()
        .ok_or_else(|| format!("{}: no certificate", name("issuer_pem")))?;
    let issuer = issuer.first().map(|c| c.as_ref()).unwrap_or_default();
    crate::ocsp::request(leaf, issuer)
        .map(Some)
        .map_err(|e| format!("{} {}: {e}", name("issuer_pem"), ocsp.issuer_pem.display()))
}

/// Modification times of the listener's files, in a fixed order (`None`: unreadable/unset).
fn stamps(o: &SslOptions) -> Vec<Option<SystemTime>> {
    [&o.certfile, &o.keyfile, &o.cacertfile, &o.crlfile]
        .iter()
        .map(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
        .collect()
}

fn certified_key(
    prefix: &str,
    o: &SslOptions,
    provider: &Arc<CryptoProvider>,
) -> Result<CertifiedKey, String> {
    let key_name = |k: &str| format!("{prefix}.ssl_options.{k}");
    let certs = certificates(&key_name("certfile"), &o.certfile)?;
    let key = private_key(&key_name("keyfile"), &o.keyfile)?;
    CertifiedKey::from_der(certs, key, provider).map_err(|e| {
        format!(
            "{} {} and {} {}: {e} (the key does not belong to the certificate?)",
            key_name("certfile"),
            o.certfile.display(),
            key_name("keyfile"),
            o.keyfile.display()
        )
    })
}

/// The webpki client verifier of the CA file, with the CRL file's CRLs and `fetched` ones
/// (from distribution points) when the CRL check is on. A certificate no CRL covers is
/// accepted, as in EMQX.
fn client_verifier(
    prefix: &str,
    o: &SslOptions,
    provider: &Arc<CryptoProvider>,
    fetched: &[CertificateRevocationListDer<'static>],
) -> Result<Arc<dyn ClientCertVerifier>, String> {
    let key_name = |k: &str| format!("{prefix}.ssl_options.{k}");
    let roots = ca_roots(&key_name("cacertfile"), &o.cacertfile)?;
    let mut verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone());
    if o.enable_crl_check {
        let mut all = if o.crlfile.as_os_str().is_empty() {
            Vec::new()
        } else {
            crls(&key_name("crlfile"), &o.crlfile)?
        };
        all.extend_from_slice(fetched);
        verifier = verifier.with_crls(all).allow_unknown_revocation_status();
    }
    if !o.fail_if_no_peer_cert {
        verifier = verifier.allow_unauthenticated();
    }
    verifier
        .build()
        .map_err(|e| format!("{}: {e}", key_name("cacertfile")))
}

/// Serves the current certificate to every client.
#[derive(Debug)]
struct Resolver(Arc<ArcSwap<CertifiedKey>>);

impl rustls::server::ResolvesServerCert for Resolver {
    fn resolve(&self, _hello: rustls::server::ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// Verifies client certificates with the current CA and CRLs. It sends no CA names in the
/// certificate request (they could change under it); clients send their certificate anyway.
#[derive(Debug)]
struct SwapVerifier {
    inner: ArcSwap<Arc<dyn ClientCertVerifier>>,
    mandatory: bool,
    dp: Option<DpCheck>,
}

/// The handshake side of distribution-point CRLs: which URLs have a CRL, and where to ask for
/// the others.
#[derive(Debug)]
struct DpCheck {
    known: ArcSwap<HashSet<String>>,
    wanted: Sender<String>,
}

impl DpCheck {
    /// Refuses a certificate whose distribution point has no CRL yet, asking for it: the
    /// client's next attempt is checked against it (EMQX fetches during the handshake; a shard
    /// never blocks on the network).
    fn check(&self, cert: &CertificateDer<'_>) -> Result<(), rustls::Error> {
        let Ok((_, parsed)) = x509_parser::parse_x509_certificate(cert) else {
            return Ok(());
        };
        let known = self.known.load();
        for url in distribution_points(&parsed) {
            if !known.contains(&url) {
                let _ = self.wanted.send(url.clone());
                return Err(rustls::Error::General(format!(
                    "the CRL of {url} is not fetched yet; try again"
                )));
            }
        }
        Ok(())
    }
}

/// The `http://` URLs of a certificate's CRL distribution points.
fn distribution_points(cert: &x509_parser::certificate::X509Certificate<'_>) -> Vec<String> {
    use x509_parser::extensions::{DistributionPointName, GeneralName, ParsedExtension};
    let mut urls = Vec::new();
    for ext in cert.extensions() {
        let ParsedExtension::CRLDistributionPoints(points) = ext.parsed_extension() else {
            continue;
        };
        for point in points.iter() {
            if let Some(DistributionPointName::FullName(names)) = &point.distribution_point {
                for name in names {
                    if let GeneralName::URI(uri) = name
                        && uri.starts_with("http://")
                    {
                        urls.push((*uri).to_owned());
                    }
                }
            }
        }
    }
    urls
}

/// A CRL as a distribution point serves it: DER, or PEM.
fn parse_crl(url: &str, body: Vec<u8>) -> Result<CertificateRevocationListDer<'static>, String> {
    if body.starts_with(b"-----BEGIN") {
        return CertificateRevocationListDer::from_pem_slice(&body)
            .map_err(|e| format!("{url}: {e}"));
    }
    if body.first() != Some(&0x30) {
        return Err(format!("{url}: not a CRL (neither DER nor PEM)"));
    }
    Ok(CertificateRevocationListDer::from(body))
}

impl ClientCertVerifier for SwapVerifier {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        self.mandatory
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        if let Some(dp) = &self.dp {
            dp.check(end_entity)?;
        }
        self.inner
            .load()
            .verify_client_cert(end_entity, intermediates, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.load().verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.load().verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.load().supported_verify_schemes()
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
