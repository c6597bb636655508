//! OCSP stapling's fetching side (RFC 6960): build the request for the server certificate,
//! POST it to the responder over HTTP, check the answer is a successful response. rustls
//! staples the bytes as they are; clients verify them. Also the plain HTTP GET that fetches
//! CRLs from distribution points.
//!
//! This runs on the broker's control thread (blocking I/O with a timeout), never on a shard.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use sha1::{Digest, Sha1};

/// DER tag-length-value.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = n.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

/// The DER OCSP request for the certificate `leaf` issued by `issuer` (both DER): one
/// `CertID` with SHA-1 hashes of the issuer's name and key, as responders universally accept.
pub fn request(leaf: &[u8], issuer: &[u8]) -> Result<Vec<u8>, String> {
    let (_, leaf) = x509_parser::parse_x509_certificate(leaf)
        .map_err(|e| format!("the server certificate does not parse: {e}"))?;
    let (_, issuer) = x509_parser::parse_x509_certificate(issuer)
        .map_err(|e| format!("the issuer certificate does not parse: {e}"))?;
    if leaf.issuer().as_raw() != issuer.subject().as_raw() {
        return Err(format!(
            "the issuer certificate ({}) did not issue the server certificate (issuer {})",
            issuer.subject(),
            leaf.issuer()
        ));
    }
    let name_hash = Sha1::digest(leaf.issuer().as_raw());
    let key_hash = Sha1::digest(&issuer.public_key().subject_public_key.data);
    // AlgorithmIdentifier { sha1 (1.3.14.3.2.26), NULL }.
    let sha1 = [0x06, 0x05, 0x2b, 0x0e, 0x03, 0x02, 0x1a, 0x05, 0x00];
    let cert_id = [
        tlv(0x30, &sha1),
        tlv(0x04, &name_hash),
        tlv(0x04, &key_hash),
        tlv(0x02, leaf.raw_serial()),
    ]
    .concat();
    let request = tlv(0x30, &tlv(0x30, &cert_id));
    let tbs = tlv(0x30, &tlv(0x30, &request));
    Ok(tlv(0x30, &tbs))
}

/// Checks that `der` is an `OCSPResponse` with status `successful` (0) and response bytes.
pub fn check_response(der: &[u8]) -> Result<(), String> {
    // SEQUENCE { ENUMERATED status, [0] responseBytes }
    let body = match der {
        [0x30, len, rest @ ..] if *len < 0x80 => rest,
        [0x30, n, rest @ ..] if *n > 0x80 && usize::from(*n - 0x80) <= rest.len() => {
            &rest[usize::from(*n - 0x80)..]
        }
        _ => return Err("not an OCSP response (no DER SEQUENCE)".to_owned()),
    };
    match body {
        [0x0a, 0x01, 0x00, 0xa0, ..] => Ok(()),
        [0x0a, 0x01, status, ..] => Err(format!(
            "the responder answered {} ({status})",
            match status {
                1 => "malformedRequest",
                2 => "internalError",
                3 => "tryLater",
                5 => "sigRequired",
                6 => "unauthorized",
                _ => "an unknown status",
            }
        )),
        _ => Err("not an OCSP response (no responseStatus)".to_owned()),
    }
}

/// POSTs `body` (an OCSP request) to the `http://` URL and returns the body of a 200 answer.
pub fn post(url: &str, body: &[u8], timeout: Duration) -> Result<Vec<u8>, String> {
    http(url, Some(("application/ocsp-request", body)), timeout)
}

/// GETs the `http://` URL and returns the body of a 200 answer (a CRL).
pub fn get(url: &str, timeout: Duration) -> Result<Vec<u8>, String> {
    http(url, None, timeout)
}

/// One HTTP/1.1 exchange on a fresh connection: POST with `body` when given, GET otherwise.
fn http(url: &str, body: Option<(&str, &[u8])>, timeout: Duration) -> Result<Vec<u8>, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// responders are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let target = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let addr = target
        .to_socket_addrs()
        .map_err(|e| format!("{url}: {e}"))?
        .next()
        .ok_or_else(|| format!("{url}: no address"))?;
    let mut s = TcpStream::connect_timeout(&addr, timeout).map_err(|e| format!("{url}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .and_then(|()| s.set_write_timeout(Some(timeout)))
        .map_err(|e| format!("{url}: {e}"))?;
    let (head, payload): (String, &[u8]) = match body {
        Some((kind, body)) => (
            format!(
                "POST {path} HTTP/1.1\r\nHost: {authority}\r\nContent-Type: {kind}\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            ),
            body,
        ),
        None => (
            format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n\r\n"),
            &[],
        ),
    };
    s.write_all(head.as_bytes())
        .and_then(|()| s.write_all(payload))
        .map_err(|e| format!("{url}: {e}"))?;
    // Read the head, then exactly Content-Length bytes (some responders keep the connection
    // open despite `Connection: close`), or to the end without one.
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    let (split, length) = loop {
        if let Some(split) = answer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&answer[..split]);
            let length = head.lines().find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim()
                    .eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse::<usize>().ok())?
            });
            break (split, length);
        }
        let n = s.read(&mut chunk).map_err(|e| format!("{url}: {e}"))?;
        if n == 0 {
            return Err(format!("{url}: no HTTP response"));
        }
        answer.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status = head.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("200") {
        return Err(format!("{url}: {status}"));
    }
    let mut content = answer[split + 4..].to_vec();
    match length {
        Some(n) => {
            while content.len() < n {
                let got = s.read(&mut chunk).map_err(|e| format!("{url}: {e}"))?;
                if got == 0 {
                    return Err(format!("{url}: response cut short"));
                }
                content.extend_from_slice(&chunk[..got]);
            }
            content.truncate(n);
        }
        None => {
            s.read_to_end(&mut content)
                .map_err(|e| format!("{url}: {e}"))?;
        }
    }
    Ok(content)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_lengths_are_encoded_in_long_form() {
        assert_eq!(tlv(0x04, &[7; 3]), [0x04, 3, 7, 7, 7]);
        let long = tlv(0x04, &[0; 300]);
        assert_eq!(&long[..4], [0x04, 0x82, 0x01, 0x2c]);
        assert_eq!(long.len(), 304);
    }

    #[test]
    fn response_status() {
        assert!(check_response(&[0x30, 0x05, 0x0a, 0x01, 0x00, 0xa0, 0x00]).is_ok());
        let err = check_response(&[0x30, 0x03, 0x0a, 0x01, 0x06]).unwrap_err();
        assert!(err.contains("unauthorized"), "{err}");
        assert!(check_response(b"<html>").is_err());
    }
}
