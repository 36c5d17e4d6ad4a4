//! The route table: every route of both ports, written once.
//!
//! Each [`Route`] has its method, its path template (`/v1/messages/{id}`, the form the contract,
//! the OpenAPI document and `route:` budgets are written in), the port that serves it and who may call it
//! ([`Access`]). Everything that needs to know the routes reads them from here:
//!
//! - the ports' routers ([`find`], then one exhaustive `match` on the route, so a route without
//!   a handler does not compile);
//! - the scope check, made once from [`Route::access`] before the handler runs;
//! - the latency histograms, labelled [`Route::label`] (`GET /v1/messages/:id`), or `other` for
//!   anything that is not a route of herald's, so probing random paths or inventing methods
//!   cannot grow the set of metric series;
//! - the OpenAPI document (`super::openapi`), which documents [`Route::ALL`].
//!
//! Matching: a trailing `/` is ignored, a `{param}` takes one non-empty segment
//! (percent-decoded), and where two templates fit a path the one with more literal segments wins
//! (`POST /v1/dlq/retry` over `POST /v1/dlq/{id}`, were there one). `HEAD` is routed as the
//! `GET` of its path (hyper sends no body in answer to a `HEAD`). A path that fits a template
//! of another method only is [`Found::WrongMethod`] (405, with the methods it has); anything
//! else is [`Found::NoRoute`] (404).

use std::sync::LazyLock;

use http::Method;

use super::query::segment;
use crate::config::Scope;

/// Which port serves a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Port {
    /// Public: partner webhooks and web-vitals beacons.
    Ingest,
    /// Private: the API, probes, `/metrics`, the console.
    Api,
}

impl Port {
    /// The `port` label of the latency histograms.
    pub const fn name(self) -> &'static str {
        match self {
            Port::Ingest => "ingest",
            Port::Api => "api",
        }
    }
}

/// The ports a route is served on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ports {
    Ingest,
    Api,
    Both,
}

impl Ports {
    pub fn includes(self, port: Port) -> bool {
        matches!(
            (self, port),
            (Ports::Both, _) | (Ports::Ingest, Port::Ingest) | (Ports::Api, Port::Api)
        )
    }
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// No token: probes, `/metrics`, the OpenAPI document, the console's static files, and the
    /// ingest port (whose webhooks prove themselves by signature).
    Public,
    /// `Authorization: Bearer <token>` of any valid token, whatever its scopes.
    Authenticated,
    /// `Authorization: Bearer <token>` of a token with this scope (`admin` implies every scope).
    Token(Scope),
}

/// Declares [`Route`] and its accessors from one table. Each row:
/// `/// summary` (the first doc line; further lines are a description), then
/// `Variant: ports METHOD "template" => access;`.
macro_rules! routes {
    ($(
        $(#[doc = $doc:literal])*
        $route:ident: $ports:ident $method:ident $path:literal => $access:expr;
    )+) => {
        /// A route of herald's, on either port. See the module docs.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Route {
            $($(#[doc = $doc])* $route,)+
        }

        impl Route {
            /// Every route, in table order.
            pub const ALL: &[Route] = &[$(Route::$route),+];

            pub fn method(self) -> Method {
                match self {
                    $(Route::$route => Method::$method,)+
                }
            }

            /// The path template, e.g. `/v1/messages/{id}`.
            pub const fn template(self) -> &'static str {
                match self {
                    $(Route::$route => $path,)+
                }
            }


            pub const fn ports(self) -> Ports {
                match self {
                    $(Route::$route => Ports::$ports,)+
                }
            }

            pub const fn access(self) -> Access {
                #[allow(unused_imports, reason = "a table may not use every scope")]
                use {Access::{Authenticated, Public, Token}, Scope::{Admin, Publish, Read, Write}};
                match self {
                    $(Route::$route => $access,)+
                }
            }

            /// The variant's name (`ListMessages`), from which the OpenAPI `operationId` is made.
            pub const fn name(self) -> &'static str {
                match self {
                    $(Route::$route => stringify!($route),)+
                }
            }

            /// The row's doc lines: a summary, then a description.
            pub const fn doc(self) -> &'static [&'static str] {
                match self {
                    $(Route::$route => &[$($doc),*],)+
                }
            }
        }
    };
}

routes! {
    // ---- both ports: probes ----------------------------------------------------------------
    /// Liveness: 200 while the process serves requests.
    Healthz: Both GET "/healthz" => Public;

    // ---- ingest port ----------------------------------------------------------------------
    /// A partner's signed webhook.
    Webhook: Ingest POST "/webhooks/{source}" => Public;
    /// Core Web Vitals beacons (`navigator.sendBeacon`).
    Vitals: Ingest POST "/vitals" => Public;
    /// The CORS preflight of a beacon.
    VitalsPreflight: Ingest OPTIONS "/vitals" => Public;

    // ---- API port: operations, no token --------------------------------------------------
    /// Readiness: 200 once storage accepts reads and writes, 503 otherwise.
    Readyz: Api GET "/readyz" => Public;
    /// Prometheus metrics (OpenMetrics text format).
    ///
    /// Every series carries a `node` label, `server.node_name`: the figures are this node's.
    Metrics: Api GET "/metrics" => Public;
    /// This document: OpenAPI 3.1 for every route of the API port.
    OpenApi: Api GET "/openapi.json" => Public;
    /// Redirects to the operator console, `/console/`.
    Root: Api GET "/" => Public;
    /// The operator console: its page and static files, embedded in the binary.
    ///
    /// `path` is the file under `/console/` and may contain `/`; empty is the console's page
    /// (`/console` redirects to `/console/`). Files carry a strong `ETag`.
    ConsoleAsset: Api GET "/console/{path}" => Public;
    /// The caller's token name and scopes (the console offers only what they allow).
    WhoAmI: Api GET "/v1/whoami" => Authenticated;

    // ---- API port: messages ----------------------------------------------------------------
    /// List messages, newest first.
    ListMessages: Api GET "/v1/messages" => Token(Read);
    /// Publish a message to every `"*"` destination whose event types match.
    ///
    /// Answered once it is durably stored; a repeated `idempotency_key` answers the first
    /// message's id with `duplicate: true`.
    PublishMessage: Api POST "/v1/messages" => Token(Publish);
    /// A message with its body and, per destination, its delivery and every attempt.
    GetMessage: Api GET "/v1/messages/{id}" => Token(Read);
    /// Deliver a message again, to one destination or to every one it matched.
    ///
    /// Fresh attempts with the same `webhook-id`, whatever the deliveries' status; a
    /// suppressed recipient stays suppressed.
    ResendMessage: Api POST "/v1/messages/{id}/resend" => Token(Write);

    // ---- API port: destinations ------------------------------------------------------------
    /// List destinations with their circuit state.
    ListDestinations: Api GET "/v1/destinations" => Token(Read);
    /// Create a destination. Its signing secret is in this response only.
    CreateDestination: Api POST "/v1/destinations" => Token(Write);
    /// A destination with its circuit state and queue depth.
    GetDestination: Api GET "/v1/destinations/{name}" => Token(Read);
    /// Change a destination: absent fields are kept, `rate_limit_per_sec: null` removes the limit.
    UpdateDestination: Api PATCH "/v1/destinations/{name}" => Token(Write);
    /// Delete a destination; its pending deliveries move to the DLQ.
    DeleteDestination: Api DELETE "/v1/destinations/{name}" => Token(Write);
    /// Rotate a destination's signing secret; the new one is in this response only.
    ///
    /// The previous secret keeps signing too (both in `webhook-signature`) for `grace_secs`
    /// (default 86400).
    RotateSecret: Api POST "/v1/destinations/{name}/rotate-secret" => Token(Write);

    // ---- API port: dead-letter queue -------------------------------------------------------
    /// List dead deliveries, newest first.
    ListDeadLetters: Api GET "/v1/dlq" => Token(Read);
    /// Re-queue every dead delivery (of one destination, or since a time) with fresh attempts.
    RetryDeadLetters: Api POST "/v1/dlq/retry" => Token(Write);
    /// A dead delivery with its attempts. Its id is `{message id}.{destination}`.
    GetDeadLetter: Api GET "/v1/dlq/{id}" => Token(Read);
    /// Discard a dead delivery.
    DiscardDeadLetter: Api DELETE "/v1/dlq/{id}" => Token(Write);
    /// Re-queue a dead delivery with a fresh round of attempts.
    RetryDeadLetter: Api POST "/v1/dlq/{id}/retry" => Token(Write);

    // ---- API port: suppressions and preferences --------------------------------------------
    /// List suppressions.
    ListSuppressions: Api GET "/v1/suppressions" => Token(Read);
    /// Suppress a recipient on a channel (`*` = every channel).
    CreateSuppression: Api POST "/v1/suppressions" => Token(Write);
    /// Suppress up to 10,000 recipients at once, all or nothing.
    BulkSuppress: Api POST "/v1/suppressions/bulk" => Token(Admin);
    /// Lift a suppression.
    DeleteSuppression: Api DELETE "/v1/suppressions/{recipient}/{channel}" => Token(Write);
    /// A recipient's preferences (defaults when none are stored).
    GetPreferences: Api GET "/v1/preferences/{recipient}" => Token(Read);
    /// Replace a recipient's preferences.
    PutPreferences: Api PUT "/v1/preferences/{recipient}" => Token(Write);
    /// Reset a recipient's preferences to the defaults.
    ResetPreferences: Api DELETE "/v1/preferences/{recipient}" => Token(Write);
    /// Opt a recipient out of a channel, or of a category on a channel.
    OptOut: Api POST "/v1/preferences/{recipient}/opt-out" => Token(Write);
    /// Opt a recipient back in to a channel, or to a category on a channel.
    OptIn: Api POST "/v1/preferences/{recipient}/opt-in" => Token(Write);

    // ---- API port: data subjects (GDPR), audit -----------------------------------------------
    /// Everything held about a recipient, in one document.
    ExportSubject: Api GET "/v1/subjects/{recipient}/export" => Token(Admin);
    /// Erase a recipient: messages and preferences deleted, opt-outs kept under a pseudonym.
    EraseSubject: Api DELETE "/v1/subjects/{recipient}" => Token(Admin);
    /// The audit trail of every change, newest first.
    ListAudit: Api GET "/v1/audit" => Token(Read);

    // ---- API port: monitoring --------------------------------------------------------------
    /// The cache's counters.
    CacheStats: Api GET "/v1/cache/stats" => Token(Read);
    /// Drop cache entries whose key matches a glob (`*` = all).
    InvalidateCache: Api POST "/v1/cache/invalidate" => Token(Write);
    /// Route latencies, web-vitals p75 per page and metric, budgets, storage commit timings.
    Perf: Api GET "/v1/perf" => Token(Read);
    /// Alerts, open and resolved.
    ListAlerts: Api GET "/v1/alerts" => Token(Read);
    /// Storage: tables and their sizes, the last maintenance run's findings, commit timings.
    Storage: Api GET "/v1/storage" => Token(Read);
    /// Verify every secondary index against its table and rebuild what is wrong.
    RunMaintenance: Api POST "/v1/storage/maintenance" => Token(Admin);
}

impl Route {
    /// `METHOD template` with `:param` for `{param}` (`GET /v1/messages/:id`): the latency
    /// histograms' label, and what `route:` budgets are matched against (the config's
    /// `route:GET /v1/messages/{id}` is turned into this form when it is loaded). Not `{param}`
    /// in a label: Prometheus text parsers in the wild (`prometheus-parse` among them) end a
    /// label set at the first `}`, inside a quoted value or not.
    pub fn label(self) -> &'static str {
        static LABELS: LazyLock<Vec<String>> = LazyLock::new(|| {
            Route::ALL
                .iter()
                .map(|r| {
                    format!(
                        "{} {}",
                        r.method(),
                        r.template().replace('{', ":").replace('}', "")
                    )
                })
                .collect()
        });
        // `ALL` lists the variants in declaration order, so a variant's index is its place.
        LABELS.get(self as usize).map_or(OTHER, String::as_str)
    }
}

/// What a request's method and path are, on one port.
#[derive(Debug, PartialEq, Eq)]
pub enum Found {
    Route(Route, Params),
    /// The path is a route's, but not with this method: the methods it has, for `Allow`.
    WrongMethod(Vec<Method>),
    NoRoute,
}

impl Found {
    /// The latency histograms' label: the route's, or `other` for anything else.
    pub fn label(&self) -> &'static str {
        match self {
            Found::Route(route, _) => route.label(),
            Found::WrongMethod(_) | Found::NoRoute => OTHER,
        }
    }
}

/// The label of every request that is not a route's.
pub const OTHER: &str = "other";

/// A matched route's path parameters, percent-decoded, by name.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Params(Vec<(&'static str, String)>);

impl Params {
    /// The parameter `name` of the route's template. Routers only ask for names their route's
    /// template has; the end-to-end tests send a request to every route, which this assertion
    /// checks in debug builds.
    pub fn get(&self, name: &str) -> &str {
        let found = self.0.iter().find(|(n, _)| *n == name);
        debug_assert!(found.is_some(), "no parameter `{name}` in this route");
        found.map_or("", |(_, v)| v.as_str())
    }
}

/// The route `method` and `path` (without the query) name on `port`.
pub fn find(port: Port, method: &Method, path: &str) -> Found {
    let method = if method == Method::HEAD {
        &Method::GET
    } else {
        method
    };
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    let mut best: Option<(usize, &Template)> = None;
    let mut allowed = Vec::new();
    for template in templates() {
        if !template.route.ports().includes(port) {
            continue;
        }
        let Some(literals) = template.fit(&segments) else {
            continue;
        };
        if template.route.method() != method {
            allowed.push(template.route.method());
        } else if best.is_none_or(|(most, _)| literals > most) {
            best = Some((literals, template));
        }
    }
    match best {
        Some((_, template)) => Found::Route(template.route, template.params(&segments)),
        None if allowed.is_empty() => Found::NoRoute,
        None => {
            if allowed.contains(&Method::GET) {
                allowed.push(Method::HEAD);
            }
            Found::WrongMethod(allowed)
        }
    }
}

/// A route's template split into segments, once.
#[derive(Debug)]
struct Template {
    route: Route,
    segments: Vec<&'static str>,
    /// The last segment is a parameter that takes the rest of the path, `/`s and all, or
    /// nothing: the console's `{path}`.
    rest: bool,
}

fn templates() -> &'static [Template] {
    static TEMPLATES: LazyLock<Vec<Template>> = LazyLock::new(|| {
        Route::ALL
            .iter()
            .map(|&route| Template {
                route,
                segments: route
                    .template()
                    .trim_end_matches('/')
                    .split('/')
                    .skip(1)
                    .collect(),
                rest: route == Route::ConsoleAsset,
            })
            .collect()
    });
    &TEMPLATES
}

impl Template {
    /// The segments matched one by one, before the rest.
    fn fixed(&self) -> &[&'static str] {
        let n = self.segments.len() - usize::from(self.rest);
        &self.segments[..n]
    }

    /// Whether `segments` fit: how many literal segments matched. A parameter takes one
    /// non-empty segment.
    fn fit(&self, segments: &[&str]) -> Option<usize> {
        let fixed = self.fixed();
        let fits_length = if self.rest {
            segments.len() >= fixed.len()
        } else {
            segments.len() == fixed.len()
        };
        if !fits_length {
            return None;
        }
        let mut literals = 0;
        for (want, got) in fixed.iter().zip(segments) {
            match param_name(want) {
                Some(_) if got.is_empty() => return None,
                Some(_) => {}
                None if want == got => literals += 1,
                None => return None,
            }
        }
        Some(literals)
    }

    /// The parameters of `segments`, which [`Template::fit`].
    fn params(&self, segments: &[&str]) -> Params {
        let fixed = self.fixed();
        let mut params: Vec<(&'static str, String)> = fixed
            .iter()
            .zip(segments)
            .filter_map(|(want, got)| Some((param_name(want)?, segment(got))))
            .collect();
        if let (true, Some(name)) = (self.rest, self.segments.last().and_then(|t| param_name(t))) {
            let rest = segments.get(fixed.len()..).unwrap_or_default().join("/");
            params.push((name, segment(&rest)));
        }
        Params(params)
    }
}

/// `id` for a template segment `{id}`.
fn param_name(segment: &'static str) -> Option<&'static str> {
    segment.strip_prefix('{')?.strip_suffix('}')
}

/// The parameter names of a template, in order.
pub fn param_names(template: &'static str) -> impl Iterator<Item = &'static str> {
    template.split('/').filter_map(param_name)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn found(port: Port, method: &str, path: &str) -> Found {
        let method = method.parse().unwrap_or(Method::GET);
        find(port, &method, path)
    }

    fn route(port: Port, method: &str, path: &str) -> Option<(Route, Params)> {
        match found(port, method, path) {
            Found::Route(route, params) => Some((route, params)),
            _ => None,
        }
    }

    #[test]
    fn labels_are_method_and_template() {
        assert_eq!(Route::Webhook.label(), "POST /webhooks/:source");
        assert_eq!(Route::GetMessage.label(), "GET /v1/messages/:id");
        assert_eq!(
            Route::DeleteSuppression.label(),
            "DELETE /v1/suppressions/:recipient/:channel"
        );
        assert_eq!(
            found(Port::Ingest, "POST", "/webhooks/stripe").label(),
            "POST /webhooks/:source"
        );
        for (i, r) in Route::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "ALL is in declaration order");
        }
        assert_eq!(
            found(Port::Api, "GET", "/wp-admin/setup.php").label(),
            OTHER
        );
        assert_eq!(found(Port::Api, "BREW", "/v1/messages").label(), OTHER);
    }

    #[test]
    fn paths_match_their_route_with_decoded_parameters() {
        let (r, p) = route(Port::Api, "DELETE", "/v1/suppressions/a%40b.example/email").unwrap();
        assert_eq!(r, Route::DeleteSuppression);
        assert_eq!(
            (p.get("recipient"), p.get("channel")),
            ("a@b.example", "email")
        );
        let (r, p) = route(Port::Api, "POST", "/v1/dlq/msg_1.orders/retry").unwrap();
        assert_eq!((r, p.get("id")), (Route::RetryDeadLetter, "msg_1.orders"));
        assert_eq!(
            route(Port::Api, "POST", "/v1/dlq/retry").unwrap().0,
            Route::RetryDeadLetters
        );
        assert_eq!(
            route(Port::Api, "GET", "/v1/messages/").unwrap().0,
            Route::ListMessages
        );
        assert_eq!(route(Port::Api, "GET", "/").unwrap().0, Route::Root);
        // The ports serve their own routes; both serve the probe.
        assert_eq!(found(Port::Api, "POST", "/webhooks/demo"), Found::NoRoute);
        assert_eq!(found(Port::Ingest, "GET", "/v1/messages"), Found::NoRoute);
        assert_eq!(
            route(Port::Ingest, "GET", "/healthz").unwrap().0,
            Route::Healthz
        );
        assert_eq!(
            route(Port::Api, "GET", "/healthz").unwrap().0,
            Route::Healthz
        );
    }

    #[test]
    fn the_console_takes_the_rest_of_the_path() {
        for (path, asset) in [
            ("/console", ""),
            ("/console/", ""),
            ("/console/app.js", "app.js"),
            ("/console/assets/app%20x.css", "assets/app x.css"),
        ] {
            let (r, p) = route(Port::Api, "GET", path).unwrap();
            assert_eq!((r, p.get("path")), (Route::ConsoleAsset, asset), "{path}");
        }
    }

    #[test]
    fn other_methods_and_unknown_paths() {
        assert_eq!(
            found(Port::Api, "PUT", "/v1/messages"),
            Found::WrongMethod(vec![Method::GET, Method::POST, Method::HEAD])
        );
        assert_eq!(
            found(Port::Ingest, "GET", "/webhooks/demo"),
            Found::WrongMethod(vec![Method::POST])
        );
        assert_eq!(
            found(Port::Api, "POST", "/v1/perf"),
            Found::WrongMethod(vec![Method::GET, Method::HEAD])
        );
        assert_eq!(
            route(Port::Api, "HEAD", "/console/app.js").unwrap().0,
            Route::ConsoleAsset
        );
        // `GET /v1/dlq/retry` is the dead delivery whose id is `retry` (there is none).
        assert_eq!(
            route(Port::Api, "GET", "/v1/dlq/retry").unwrap().0,
            Route::GetDeadLetter
        );
        for path in [
            "/v1/messages/a/b/c",
            "/v1/dlq//retry",
            "/v1",
            "/v1/nothing",
            "/webhooks",
        ] {
            assert_eq!(found(Port::Api, "GET", path), Found::NoRoute, "{path}");
        }
        assert_eq!(found(Port::Ingest, "POST", "/webhooks/"), Found::NoRoute);
    }

    /// Every route is reachable: its own template, with its parameters filled in, finds it.
    /// And no two routes of one port and method fit one path equally well, so which one a
    /// request reaches never depends on table order.
    #[test]
    fn every_route_is_reachable_and_none_is_ambiguous() {
        for &r in Route::ALL {
            let path = r.template().replace(['{', '}'], "");
            for port in [Port::Ingest, Port::Api] {
                if r.ports().includes(port) {
                    let (got, _) = route(port, r.method().as_str(), &path).unwrap();
                    assert_eq!(got, r, "{path}");
                }
            }
            for &other in Route::ALL {
                let same_port = [Port::Ingest, Port::Api]
                    .iter()
                    .any(|&p| r.ports().includes(p) && other.ports().includes(p));
                if other == r || !same_port || other.method() != r.method() {
                    continue;
                }
                let segments: Vec<&str> = path.split('/').skip(1).collect();
                let fit = |r: Route| templates()[r as usize].fit(&segments);
                if let (Some(a), Some(b)) = (fit(r), fit(other)) {
                    assert_ne!(a, b, "{} and {} both fit {path}", r.label(), other.label());
                }
            }
        }
    }

    #[test]
    fn parameter_names() {
        let names: Vec<_> = param_names(Route::DeleteSuppression.template()).collect();
        assert_eq!(names, ["recipient", "channel"]);
        assert_eq!(param_names(Route::ListMessages.template()).count(), 0);
    }
}
