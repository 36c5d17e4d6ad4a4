//! Performance budgets: a p75 ceiling per vital or per route, and how each one stands.
//!
//! # Design
//!
//! A budget names a vital (`"LCP"`, `"INP"`, `"CLS"`, `"FCP"`, `"TTFB"`) or a route
//! (`"route:POST /webhooks/:source"`, the method and the matched template) and a `p75_max`:
//! milliseconds for timings and routes, unitless for CLS. A template's placeholders may be
//! written `{source}` too: they are kept as `:source`, the form the edge records latencies
//! under. [`BudgetTarget`]'s `FromStr` is the one parser of a budget's metric (the config loader
//! uses it), so a budget that loads is one the monitor applies. Without configured budgets the
//! "good" thresholds of Core Web Vitals apply ([`default_budgets`]: LCP 2500 ms, INP 200 ms,
//! CLS 0.1).
//!
//! [`evaluate`] grades one p75 against its ceiling:
//!
//! | p75                         | state      |
//! | --------------------------- | ---------- |
//! | none (too few samples)      | `no_data`  |
//! | above `p75_max`             | `violated` |
//! | above 80 % of `p75_max`     | `at_risk`: within 20 % of the budget |
//! | otherwise                   | `ok`       |
//!
//! Exactly `p75_max` is `at_risk`, not `violated`; exactly 80 % is `ok` (compared with a
//! relative tolerance of 1e-9, so that decimal ceilings such as 0.08 of 0.1 land on it).
//!
//! [`report`] applies every budget: a vital budget is judged per page (one report per page
//! with enough samples, or a single page-less `no_data` one when no page has any), a route
//! budget once over all its ports and status classes.

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use super::latency::RouteLatencies;
use super::vitals::Metric;
use super::window::VitalsWindow;

/// What a budget constrains.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum BudgetTarget {
    Vital(Metric),
    /// `method` is upper case; `path` is a route template starting with `/`, placeholders
    /// written `:name`.
    Route {
        method: String,
        path: String,
    },
}

impl BudgetTarget {
    /// `"METHOD /template"`, the key of [`RouteLatencies`]; `None` for vitals.
    pub fn route_key(&self) -> Option<String> {
        match self {
            BudgetTarget::Vital(_) => None,
            BudgetTarget::Route { method, path } => Some(format!("{method} {path}")),
        }
    }
}

/// As configured: `"LCP"` or `"route:POST /webhooks/{source}"`.
impl fmt::Display for BudgetTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BudgetTarget::Vital(metric) => f.write_str(metric.name()),
            BudgetTarget::Route { method, path } => write!(f, "route:{method} {path}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error(
        "unknown budget metric {0:?} (expected LCP, INP, CLS, FCP, TTFB or \"route:<METHOD> <path>\")"
    )]
    UnknownMetric(String),
    #[error(
        "budget route {0:?} must be \"route:<METHOD> </path template>\" \
         (e.g. \"route:GET /v1/messages/{{id}}\"), the method in upper case"
    )]
    BadRoute(String),
    #[error("p75_max must be a finite number > 0")]
    BadMax,
}

impl FromStr for BudgetTarget {
    type Err = BudgetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let Some(route) = s.strip_prefix("route:") else {
            return s
                .parse::<Metric>()
                .map(BudgetTarget::Vital)
                .map_err(|_| BudgetError::UnknownMetric(s.to_owned()));
        };
        let bad = || BudgetError::BadRoute(s.to_owned());
        let (method, path) = route.split_once(' ').ok_or_else(bad)?;
        // Methods are case-sensitive (RFC 9110 §9.1): `get` is not `GET`.
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(bad());
        }
        if !path.starts_with('/') || path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad());
        }
        Ok(BudgetTarget::Route {
            method: method.to_owned(),
            path: path.replace('{', ":").replace('}', ""),
        })
    }
}

/// A p75 ceiling on one target.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    pub target: BudgetTarget,
    /// Milliseconds for timings and routes, unitless for CLS.
    pub p75_max: f64,
}

impl Budget {
    /// A budget from its configuration: `metric` as in the module docs, `p75_max` finite > 0.
    pub fn parse(metric: &str, p75_max: f64) -> Result<Self, BudgetError> {
        if !p75_max.is_finite() || p75_max <= 0.0 {
            return Err(BudgetError::BadMax);
        }
        Ok(Self {
            target: metric.parse()?,
            p75_max,
        })
    }
}

/// The budgets that apply when none are configured: the "good" Core Web Vitals thresholds.
pub fn default_budgets() -> Vec<Budget> {
    vec![
        Budget {
            target: BudgetTarget::Vital(Metric::Lcp),
            p75_max: 2500.0,
        },
        Budget {
            target: BudgetTarget::Vital(Metric::Inp),
            p75_max: 200.0,
        },
        Budget {
            target: BudgetTarget::Vital(Metric::Cls),
            p75_max: 0.1,
        },
    ]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetState {
    Ok,
    AtRisk,
    Violated,
    NoData,
}

impl BudgetState {
    pub fn as_str(self) -> &'static str {
        match self {
            BudgetState::Ok => "ok",
            BudgetState::AtRisk => "at_risk",
            BudgetState::Violated => "violated",
            BudgetState::NoData => "no_data",
        }
    }
}

/// Share of the budget above which a p75 is at risk.
pub const AT_RISK_RATIO: f64 = 0.8;
/// Relative slack on the at-risk line, for decimal ceilings.
const TOLERANCE: f64 = 1e-9;

/// Grades a p75 against its ceiling (table in the module docs). A NaN p75 is no data.
pub fn evaluate(p75: Option<f64>, p75_max: f64) -> BudgetState {
    let Some(p75) = p75.filter(|p| !p.is_nan()) else {
        return BudgetState::NoData;
    };
    let at_risk_line = p75_max * AT_RISK_RATIO;
    if p75 > p75_max {
        BudgetState::Violated
    } else if p75 > at_risk_line + at_risk_line.abs() * TOLERANCE {
        BudgetState::AtRisk
    } else {
        BudgetState::Ok
    }
}

/// One budget's standing, as `GET /v1/perf` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetReport {
    /// The budget's metric as configured: `"LCP"`, `"route:POST /webhooks/{source}"`.
    pub metric: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub page: Option<String>,
    pub p75_max: f64,
    pub p75: Option<f64>,
    pub samples: u64,
    pub state: BudgetState,
}

impl BudgetReport {
    /// What a `budget_violated` alert is about: `"LCP /checkout"`, `"route:GET /health"`.
    pub fn subject(&self) -> String {
        match &self.page {
            Some(page) => format!("{} {page}", self.metric),
            None => self.metric.clone(),
        }
    }
}

/// Applies every budget to the data at `now_ms` (see the module docs); in budget order, a
/// vital budget's pages sorted by path.
pub fn report(
    budgets: &[Budget],
    vitals: &VitalsWindow,
    routes: &RouteLatencies,
    now_ms: u64,
) -> Vec<BudgetReport> {
    let pages = vitals.pages(now_ms);
    let mut out = Vec::new();
    for budget in budgets {
        let metric = budget.target.to_string();
        match &budget.target {
            BudgetTarget::Vital(vital) => {
                let before = out.len();
                out.extend(pages.iter().filter(|p| p.1 == *vital).map(
                    |(page, _, p75, samples)| BudgetReport {
                        metric: metric.clone(),
                        page: Some(page.clone()),
                        p75_max: budget.p75_max,
                        p75: Some(*p75),
                        samples: *samples as u64,
                        state: evaluate(Some(*p75), budget.p75_max),
                    },
                ));
                if out.len() == before {
                    out.push(BudgetReport {
                        metric,
                        page: None,
                        p75_max: budget.p75_max,
                        p75: None,
                        samples: 0,
                        state: BudgetState::NoData,
                    });
                }
            }
            BudgetTarget::Route { .. } => {
                let found = budget
                    .target
                    .route_key()
                    .and_then(|key| routes.p75_ms(&key));
                out.push(BudgetReport {
                    metric,
                    page: None,
                    p75_max: budget.p75_max,
                    p75: found.map(|(p75, _)| p75),
                    samples: found.map_or(0, |(_, n)| n),
                    state: evaluate(found.map(|(p75, _)| p75), budget.p75_max),
                });
            }
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::float_cmp)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::perf::vitals::Beacon;

    #[test]
    fn boundaries() {
        use BudgetState::{AtRisk, NoData, Ok, Violated};
        assert_eq!(evaluate(None, 2500.0), NoData);
        assert_eq!(evaluate(Some(f64::NAN), 2500.0), NoData);
        assert_eq!(evaluate(Some(0.0), 2500.0), Ok);
        assert_eq!(evaluate(Some(2000.0), 2500.0), Ok);
        assert_eq!(evaluate(Some(2000.001), 2500.0), AtRisk);
        assert_eq!(evaluate(Some(2500.0), 2500.0), AtRisk);
        assert_eq!(evaluate(Some(2500.001), 2500.0), Violated);
        assert_eq!(evaluate(Some(160.0), 200.0), Ok);
        assert_eq!(evaluate(Some(160.5), 200.0), AtRisk);
        assert_eq!(evaluate(Some(200.0), 200.0), AtRisk);
        assert_eq!(evaluate(Some(201.0), 200.0), Violated);
        // Decimal ceilings: 0.08 is exactly 80 % of 0.1 as written.
        assert_eq!(evaluate(Some(0.08), 0.1), Ok);
        assert_eq!(evaluate(Some(0.0801), 0.1), AtRisk);
        assert_eq!(evaluate(Some(0.1), 0.1), AtRisk);
        assert_eq!(evaluate(Some(0.1001), 0.1), Violated);
        assert_eq!(evaluate(Some(0.24), 0.3), Ok);
        assert_eq!(evaluate(Some(0.56), 0.7), Ok);
    }

    #[test]
    fn states_serialise_in_snake_case() {
        let all = [
            BudgetState::Ok,
            BudgetState::AtRisk,
            BudgetState::Violated,
            BudgetState::NoData,
        ];
        for s in all {
            assert_eq!(
                serde_json::to_string(&s).unwrap(),
                format!("\"{}\"", s.as_str())
            );
        }
        assert_eq!(BudgetState::AtRisk.as_str(), "at_risk");
    }

    #[test]
    fn defaults_are_the_good_thresholds() {
        let d: Vec<_> = default_budgets()
            .into_iter()
            .map(|b| (b.target.to_string(), b.p75_max))
            .collect();
        assert_eq!(
            d,
            vec![
                ("LCP".to_owned(), 2500.0),
                ("INP".to_owned(), 200.0),
                ("CLS".to_owned(), 0.1)
            ]
        );
    }

    #[test]
    fn parsing_budget_targets() {
        assert_eq!(
            Budget::parse("TTFB", 800.0).unwrap().target,
            BudgetTarget::Vital(Metric::Ttfb)
        );
        let b = Budget::parse("route:POST /webhooks/{source}", 250.0).unwrap();
        assert_eq!(
            b.target,
            BudgetTarget::Route {
                method: "POST".into(),
                path: "/webhooks/:source".into()
            }
        );
        assert_eq!(b.target.to_string(), "route:POST /webhooks/:source");
        assert_eq!(
            b.target.route_key().as_deref(),
            Some("POST /webhooks/:source")
        );
        assert_eq!(
            Budget::parse("route:POST /webhooks/:source", 250.0).unwrap(),
            b
        );
        assert_eq!(BudgetTarget::Vital(Metric::Cls).route_key(), None);

        for bad in [
            "lcp",
            "FID",
            "",
            "route:",
            "route:GET",
            "route:GET health",
            "route: /x",
            "route:G3T /x",
            "route:GET /a b",
            "route:GET  /x",
            "route:post /x",
        ] {
            assert!(Budget::parse(bad, 1.0).is_err(), "{bad:?}");
        }
        assert!(matches!(
            Budget::parse("lcp", 1.0),
            Err(BudgetError::UnknownMetric(_))
        ));
        assert!(matches!(
            Budget::parse("route:GET x", 1.0),
            Err(BudgetError::BadRoute(_))
        ));
        for max in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert_eq!(Budget::parse("LCP", max), Err(BudgetError::BadMax));
        }
    }

    fn beacon(page: &str, metric: Metric, id: &str, value: f64) -> Beacon {
        Beacon {
            metric,
            value,
            id: id.into(),
            page: page.into(),
        }
    }

    #[test]
    fn the_report_judges_vitals_per_page_and_routes_once() {
        let mut vitals = VitalsWindow::new(60_000, 1);
        for (i, v) in [1000.0, 1500.0, 2100.0, 2600.0].into_iter().enumerate() {
            vitals.record(&beacon("/checkout", Metric::Lcp, &format!("c{i}"), v), 0);
        }
        vitals.record(&beacon("/", Metric::Lcp, "h", 3000.0), 0);
        vitals.record(&beacon("/", Metric::Cls, "c", 0.01), 0);
        let mut routes = RouteLatencies::new();
        for _ in 0..10 {
            routes.record(
                "public",
                "POST /webhooks/:source",
                202,
                Duration::from_millis(45),
            );
        }
        let budgets = vec![
            Budget::parse("LCP", 2500.0).unwrap(),
            Budget::parse("INP", 200.0).unwrap(),
            Budget::parse("CLS", 0.1).unwrap(),
            Budget::parse("route:POST /webhooks/{source}", 50.0).unwrap(),
            Budget::parse("route:GET /v1/perf", 100.0).unwrap(),
        ];
        let got: Vec<_> = report(&budgets, &vitals, &routes, 0)
            .into_iter()
            .map(|r| (r.subject(), r.p75.map(f64::round), r.samples, r.state))
            .collect();
        assert_eq!(
            got,
            vec![
                ("LCP /".to_owned(), Some(3000.0), 1, BudgetState::Violated),
                (
                    "LCP /checkout".to_owned(),
                    Some(2100.0),
                    4,
                    BudgetState::AtRisk
                ),
                ("INP".to_owned(), None, 0, BudgetState::NoData),
                ("CLS /".to_owned(), Some(0.0), 1, BudgetState::Ok),
                (
                    "route:POST /webhooks/:source".to_owned(),
                    Some(45.0),
                    10,
                    BudgetState::AtRisk
                ),
                (
                    "route:GET /v1/perf".to_owned(),
                    None,
                    0,
                    BudgetState::NoData
                ),
            ]
        );
        // After the window, every vital budget has no data.
        let later = report(&budgets[..1], &vitals, &routes, 60_000);
        assert_eq!(later.len(), 1);
        assert_eq!(
            (later[0].page.as_deref(), later[0].state),
            (None, BudgetState::NoData)
        );
    }

    #[test]
    fn reports_serialise_as_the_api_shows_them() {
        let r = BudgetReport {
            metric: "LCP".into(),
            page: None,
            p75_max: 2500.0,
            p75: None,
            samples: 0,
            state: BudgetState::NoData,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            serde_json::json!({"metric":"LCP","p75_max":2500.0,"p75":null,"samples":0,"state":"no_data"})
        );
        let r = BudgetReport {
            page: Some("/a".into()),
            p75: Some(1.5),
            state: BudgetState::Ok,
            ..r
        };
        assert_eq!(serde_json::to_value(&r).unwrap()["page"], "/a");
    }
}
