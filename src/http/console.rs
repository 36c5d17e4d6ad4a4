//! The operator console: a web UI served on the API port under `/console/`.
//!
//! # Design
//!
//! - **Embedded.** Every file under `src/http/console/` is compiled into the binary
//!   (`include_bytes!`, listed in [`ASSETS`]): no CDN, works offline, and `cargo build` needs no
//!   Node. The UI is plain HTML, CSS and ES modules; the one library, `web-vitals`, is vendored
//!   by `scripts/vendor-console.sh`.
//! - **Static files need no token; data does.** The files are public (they hold nothing but
//!   code); every API call the console makes carries `Authorization: Bearer <token>`, a token the
//!   operator types in and the page keeps in `sessionStorage`. A bearer header, unlike a cookie,
//!   is never attached by the browser on its own, so a forged cross-site request carries no
//!   credentials: there is no CSRF surface, and no cookie to protect. What remains is XSS, which
//!   the headers below and the UI's rule (every value is rendered as text, never as markup) keep
//!   out.
//! - **Strict headers on every console response.** A Content-Security-Policy with no inline
//!   script or style (`script-src 'self'; style-src 'self'`), `frame-ancestors 'none'`,
//!   `X-Content-Type-Options: nosniff`, no referrer. `connect-src` adds the ingest port's
//!   origin, the one other place the page talks to (`POST /vitals`).
//! - **Caching.** `Cache-Control: no-cache` with a strong `ETag` (SHA-256 of the file): the browser
//!   revalidates and gets a 304, and an upgraded binary is never masked by a stale copy.
//!
//! [`asset`] is the whole interface to the router, called before authentication. It answers
//! `GET /` with a redirect to `/console/`, and `GET|HEAD /console/…` with a file, the console's
//! config, or a 404; anything else is `None` and the router carries on.

use std::sync::LazyLock;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use http_body_util::Full;
use hyper::Response;
use serde_json::json;
use sha2::{Digest, Sha256};

use super::auth::Caller;
use super::response::{Resp, json, with_body};

/// `(path under /console/, content type, bytes)`.
const ASSETS: &[(&str, &str, &[u8])] = &[
    ("", HTML, include_bytes!("console/index.html")),
    ("index.html", HTML, include_bytes!("console/index.html")),
    ("app.css", CSS, include_bytes!("console/app.css")),
    ("favicon.svg", SVG, include_bytes!("console/favicon.svg")),
    ("app.js", JS, include_bytes!("console/app.js")),
    ("api.js", JS, include_bytes!("console/api.js")),
    ("ui.js", JS, include_bytes!("console/ui.js")),
    ("chart.js", JS, include_bytes!("console/chart.js")),
    ("vitals.js", JS, include_bytes!("console/vitals.js")),
    (
        "pages/overview.js",
        JS,
        include_bytes!("console/pages/overview.js"),
    ),
    (
        "pages/messages.js",
        JS,
        include_bytes!("console/pages/messages.js"),
    ),
    (
        "pages/destinations.js",
        JS,
        include_bytes!("console/pages/destinations.js"),
    ),
    ("pages/dlq.js", JS, include_bytes!("console/pages/dlq.js")),
    (
        "pages/recipients.js",
        JS,
        include_bytes!("console/pages/recipients.js"),
    ),
    (
        "pages/audit.js",
        JS,
        include_bytes!("console/pages/audit.js"),
    ),
    (
        "pages/alerts.js",
        JS,
        include_bytes!("console/pages/alerts.js"),
    ),
    (
        "pages/performance.js",
        JS,
        include_bytes!("console/pages/performance.js"),
    ),
    (
        "pages/storage.js",
        JS,
        include_bytes!("console/pages/storage.js"),
    ),
    (
        "vendor/web-vitals.js",
        JS,
        include_bytes!("console/vendor/web-vitals.js"),
    ),
    (
        "vendor/web-vitals.LICENSE.txt",
        TEXT,
        include_bytes!("console/vendor/web-vitals.LICENSE.txt"),
    ),
];

const HTML: &str = "text/html; charset=utf-8";
const CSS: &str = "text/css; charset=utf-8";
const JS: &str = "text/javascript; charset=utf-8";
const SVG: &str = "image/svg+xml";
const TEXT: &str = "text/plain; charset=utf-8";

/// Each asset's `ETag`, computed once.
static ETAGS: LazyLock<Vec<String>> = LazyLock::new(|| {
    ASSETS
        .iter()
        .map(|(_, _, body)| {
            let digest = Sha256::digest(body);
            format!("\"{}\"", hex_prefix(&digest))
        })
        .collect()
});

/// The console's answer to a request before authentication, or `None` when the path is not
/// the console's. `ingest_port` is the ingest port's bound port: the page sends its web vitals
/// there, on the host name it was loaded from.
pub fn asset(method: &Method, path: &str, headers: &HeaderMap, ingest_port: u16) -> Option<Resp> {
    if method != Method::GET && method != Method::HEAD {
        return None;
    }
    let wanted = match path {
        "/" | "/console" => return Some(redirect("/console/")),
        _ => path.strip_prefix("/console/")?,
    };
    let host = request_host(headers);
    let mut resp = if wanted == "config.json" {
        // Where the page sends its vitals. The host is the page's own (`location.hostname`):
        // the listen address may be 0.0.0.0 or a name the browser does not use.
        let mut config = json(StatusCode::OK, &json!({"ingest_port": ingest_port}));
        config
            .headers_mut()
            .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        config
    } else if let Some(i) = ASSETS.iter().position(|(p, _, _)| *p == wanted) {
        file(i, headers)
    } else {
        with_body(StatusCode::NOT_FOUND, "not found\n", TEXT)
    };
    secure(resp.headers_mut(), host.as_deref(), ingest_port);
    if method == Method::HEAD {
        *resp.body_mut() = Full::new(Bytes::new());
    }
    Some(resp)
}

/// `GET /v1/whoami`: the caller's token name and scopes, so the console offers only what the
/// token may do (the API still checks every call).
pub fn whoami(caller: &Caller) -> Resp {
    let scopes: Vec<&str> = caller.scopes().iter().map(|s| s.as_str()).collect();
    json(
        StatusCode::OK,
        &json!({"name": caller.name, "scopes": scopes}),
    )
}

fn file(i: usize, headers: &HeaderMap) -> Resp {
    let (_, content_type, body) = ASSETS[i];
    let etag = ETAGS[i].as_str();
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag || t.trim() == "*"));
    let mut resp = if fresh {
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        resp
    } else {
        with_body(StatusCode::OK, Bytes::from_static(body), content_type)
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if let Ok(etag) = HeaderValue::from_str(etag) {
        h.insert(header::ETAG, etag);
    }
    resp
}

fn redirect(to: &'static str) -> Resp {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SEE_OTHER;
    resp.headers_mut()
        .insert(header::LOCATION, HeaderValue::from_static(to));
    resp
}

/// The security headers of every console response.
fn secure(h: &mut HeaderMap, host: Option<&str>, ingest_port: u16) {
    // A source without a scheme matches the page's own scheme: both ports serve TLS or neither.
    let ingest = host
        .map(|host| format!(" {host}:{ingest_port}"))
        .unwrap_or_default();
    let csp = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
         connect-src 'self'{ingest}; base-uri 'none'; form-action 'self'; \
         frame-ancestors 'none'; object-src 'none'"
    );
    if let Ok(csp) = HeaderValue::from_str(&csp) {
        h.insert(header::CONTENT_SECURITY_POLICY, csp);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
}

/// The host name of the request's `Host` header, without its port, if it is a plain DNS name
/// or IP literal. It goes into the CSP, so anything else (a `;`, a space, a quote) is refused
/// rather than escaped.
fn request_host(headers: &HeaderMap) -> Option<String> {
    let raw = headers.get(header::HOST)?.to_str().ok()?;
    let host = if raw.starts_with('[') {
        // An IPv6 literal keeps its brackets: `[::1]:8081` → `[::1]`.
        &raw[..=raw.find(']')?]
    } else {
        raw.split(':').next()?
    };
    let ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'[' | b']' | b':'));
    ok.then(|| host.to_owned())
}

fn hex_prefix(digest: &[u8]) -> String {
    use std::fmt::Write as _;
    digest.iter().take(16).fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn get(path: &str, host: &str) -> Option<Resp> {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, host.parse().unwrap());
        asset(&Method::GET, path, &h, 8080)
    }

    #[test]
    fn root_redirects_and_files_carry_strict_headers() {
        let r = get("/", "127.0.0.1:8081").unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER);
        assert_eq!(r.headers()[header::LOCATION], "/console/");
        let r = get("/console/", "127.0.0.1:8081").unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert!(csp.contains("connect-src 'self' 127.0.0.1:8080;"), "{csp}");
        assert_eq!(r.headers()[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert!(get("/console/nope.js", "h").unwrap().status() == StatusCode::NOT_FOUND);
        assert!(get("/v1/messages", "h").is_none());
        assert!(asset(&Method::POST, "/console/", &HeaderMap::new(), 1).is_none());
    }

    #[test]
    fn a_hostile_host_header_stays_out_of_the_policy() {
        let r = get("/console/app.js", "evil; script-src *").unwrap();
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("connect-src 'self';"), "{csp}");
        let r = get("/console/app.js", "[::1]:8081").unwrap();
        let csp = r.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("connect-src 'self' [::1]:8080;"), "{csp}");
    }

    #[test]
    fn etags_revalidate() {
        let r = get("/console/app.css", "h").unwrap();
        let etag = r.headers()[header::ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, etag);
        let r = asset(&Method::GET, "/console/app.css", &h, 1).unwrap();
        assert_eq!(r.status(), StatusCode::NOT_MODIFIED);
    }

    #[test]
    fn every_file_of_the_console_is_served() {
        fn walk(dir: &std::path::Path, root: &std::path::Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, root, out);
                } else {
                    let rel = path.strip_prefix(root).unwrap();
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
        }
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/http/console");
        let mut files = Vec::new();
        walk(&root, &root, &mut files);
        for file in files {
            assert!(
                ASSETS.iter().any(|(p, _, _)| *p == file),
                "src/http/console/{file} is not in ASSETS"
            );
        }
    }

    #[test]
    fn no_inline_script_or_style_in_the_html() {
        // The CSP would block them anyway; this catches them before a browser does.
        let html = std::str::from_utf8(ASSETS[0].2).unwrap();
        assert!(!html.contains(" style="), "a style attribute");
        assert!(!html.contains("<style"), "an inline stylesheet");
        for script in html.split("<script").skip(1) {
            assert!(script.contains("src="), "an inline script");
        }
        // Data reaches the page as text nodes only: nothing parses markup at run time.
        for (path, _, body) in ASSETS {
            let text = String::from_utf8_lossy(body);
            for markup in [
                "innerHTML",
                "outerHTML",
                "insertAdjacentHTML",
                "document.write",
            ] {
                assert!(!text.contains(markup), "{path} uses {markup}");
            }
            assert!(!text.contains(".style."), "{path} sets an inline style");
        }
    }
}
