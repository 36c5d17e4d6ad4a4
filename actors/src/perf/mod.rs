//! The performance monitor's pure parts: Core Web Vitals beacons and their rolling p75,
//! per-route latency histograms, budgets graded against both, and the alert book. No I/O and
//! no clocks: time is passed in as `now_ms`.

pub mod alerts;
pub mod budgets;
pub mod latency;
pub mod monitor;
pub mod vitals;
pub mod window;
