//! A rolling window of vitals, and their 75th percentile per (page, metric).
//!
//! # Design
//!
//! Google judges a page by the 75th percentile of its field data, so this keeps raw samples
//! (not a histogram: one page has few of them, and the exact rank matters) per page and
//! metric, each stamped with the time it was recorded:
//!
//! - **Latest value per id wins.** `web-vitals` reports the same metric again, under the same
//!   `id`, when it changes (CLS grows, INP gets worse); a later report replaces the earlier
//!   one, and takes its time, instead of adding a sample.
//! - **Window.** A sample counts at `now_ms` while `now_ms - recorded_at < window_ms`.
//!   Queries take `&self` and skip stale samples; [`VitalsWindow::prune`] (and each
//!   [`VitalsWindow::record`], for the key it touches) frees them.
//! - **p75 is the nearest rank**: with the `n` values sorted ascending, the value at 1-based
//!   rank `⌈0.75·n⌉`. So `1..=100` gives 75 and `[1, 2, 3, 4]` gives 3: always a value that
//!   was measured, never an interpolation.
//! - **Bounded memory.** Pages are chosen by clients, so at most `max_pages` are kept: a
//!   new page beyond that evicts the least recently updated one. Each (page, metric) keeps
//!   its `max_samples_per_key` newest samples, and all pages together at most
//!   `max_samples_total` (whole least recently updated pages are evicted to get there).
//!
//! Time is passed in; nothing here reads a clock.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::vitals::{Beacon, Metric};

pub const DEFAULT_MAX_PAGES: usize = 1_000;
pub const DEFAULT_MAX_SAMPLES_PER_KEY: usize = 10_000;
pub const DEFAULT_MAX_SAMPLES_TOTAL: usize = 200_000;

/// Where a sample sits in its series: recorded at (ms), then record order (ties, and clocks
/// that step back, still give a strict order).
type SampleKey = (u64, u64);

#[derive(Debug)]
struct Sample {
    id: Arc<str>,
    value: f64,
}

/// The samples of one (page, metric), oldest first, indexed by beacon id.
#[derive(Debug, Default)]
struct Series {
    samples: BTreeMap<SampleKey, Sample>,
    by_id: HashMap<Arc<str>, SampleKey>,
}

impl Series {
    fn len(&self) -> usize {
        self.samples.len()
    }

    fn upsert(&mut self, id: &str, value: f64, key: SampleKey) {
        let id: Arc<str> = match self.by_id.get_key_value(id) {
            Some((id, old)) => {
                self.samples.remove(old);
                Arc::clone(id)
            }
            None => Arc::from(id),
        };
        self.by_id.insert(Arc::clone(&id), key);
        self.samples.insert(key, Sample { id, value });
    }

    fn pop_oldest(&mut self) {
        if let Some((_, sample)) = self.samples.pop_first() {
            self.by_id.remove(&sample.id);
        }
    }

    /// Drops samples recorded before `cutoff_ms`.
    fn expire(&mut self, cutoff_ms: u64) {
        while self
            .samples
            .first_key_value()
            .is_some_and(|((at, _), _)| *at < cutoff_ms)
        {
            self.pop_oldest();
        }
    }

    fn keep_newest(&mut self, max: usize) {
        while self.samples.len() > max {
            self.pop_oldest();
        }
    }

    fn live_values(&self, cutoff_ms: u64) -> Vec<f64> {
        self.samples
            .range((cutoff_ms, 0)..)
            .map(|(_, s)| s.value)
            .collect()
    }
}

#[derive(Debug)]
struct Page {
    /// Record order of the page's latest update: its key in `VitalsWindow::recency`.
    touched: u64,
    series: BTreeMap<Metric, Series>,
}

impl Page {
    fn len(&self) -> usize {
        self.series.values().map(Series::len).sum()
    }
}

/// Vitals samples within a rolling window, keyed by (page, metric). See the module docs.
#[derive(Debug)]
pub struct VitalsWindow {
    window_ms: u64,
    min_samples: usize,
    max_pages: usize,
    max_samples_per_key: usize,
    max_samples_total: usize,
    pages: HashMap<String, Page>,
    /// Page by the record order of its latest update; the first is the least recently updated.
    recency: BTreeMap<u64, String>,
    /// Record counter: orders samples and page updates.
    seq: u64,
    total: usize,
}

impl VitalsWindow {
    /// A window of `window_ms` (at least 1) whose p75 needs `min_samples` samples (at least
    /// 1), with the default bounds.
    pub fn new(window_ms: u64, min_samples: usize) -> Self {
        Self {
            window_ms: window_ms.max(1),
            min_samples: min_samples.max(1),
            max_pages: DEFAULT_MAX_PAGES,
            max_samples_per_key: DEFAULT_MAX_SAMPLES_PER_KEY,
            max_samples_total: DEFAULT_MAX_SAMPLES_TOTAL,
            pages: HashMap::new(),
            recency: BTreeMap::new(),
            seq: 0,
            total: 0,
        }
    }

    #[must_use]
    pub fn with_max_pages(mut self, max_pages: usize) -> Self {
        self.max_pages = max_pages.max(1);
        self
    }

    #[must_use]
    pub fn with_max_samples_per_key(mut self, max: usize) -> Self {
        self.max_samples_per_key = max.max(1);
        self
    }

    #[must_use]
    pub fn with_max_samples_total(mut self, max: usize) -> Self {
        self.max_samples_total = max.max(1);
        self
    }

    pub fn window_ms(&self) -> u64 {
        self.window_ms
    }

    pub fn min_samples(&self) -> usize {
        self.min_samples
    }

    /// Pages currently held (including ones whose samples have gone stale but were not
    /// pruned yet).
    pub fn page_count(&self) -> usize {
        self.pages.len()
    }

    /// Samples currently held, stale ones included until pruned.
    pub fn sample_count(&self) -> usize {
        self.total
    }

    /// The earliest recording time that still counts at `now_ms`.
    fn cutoff(&self, now_ms: u64) -> u64 {
        now_ms.saturating_add(1).saturating_sub(self.window_ms)
    }

    /// Records a beacon at `now_ms`, replacing an earlier sample with the same id (same page
    /// and metric).
    pub fn record(&mut self, beacon: &Beacon, now_ms: u64) {
        self.seq += 1;
        let seq = self.seq;
        if !self.pages.contains_key(beacon.page.as_str()) {
            while self.pages.len() >= self.max_pages && self.evict_lru(None) {}
            self.pages.insert(
                beacon.page.clone(),
                Page {
                    touched: seq,
                    series: BTreeMap::new(),
                },
            );
        }
        let cutoff = self.cutoff(now_ms);
        let Some(page) = self.pages.get_mut(beacon.page.as_str()) else {
            return;
        };
        self.recency.remove(&page.touched);
        page.touched = seq;
        self.recency.insert(seq, beacon.page.clone());

        let series = page.series.entry(beacon.metric).or_default();
        let before = series.len();
        series.upsert(&beacon.id, beacon.value, (now_ms, seq));
        series.expire(cutoff);
        series.keep_newest(self.max_samples_per_key);
        self.total = self.total - before + series.len();

        while self.total > self.max_samples_total && self.evict_lru(Some(&beacon.page)) {}
    }

    /// Evicts the least recently updated page other than `except`; whether one was.
    fn evict_lru(&mut self, except: Option<&str>) -> bool {
        let Some(seq) = self
            .recency
            .iter()
            .find(|(_, page)| Some(page.as_str()) != except)
            .map(|(seq, _)| *seq)
        else {
            return false;
        };
        if let Some(name) = self.recency.remove(&seq)
            && let Some(page) = self.pages.remove(&name)
        {
            self.total -= page.len();
        }
        true
    }

    /// The p75 of `metric` on `page` over the window, and how many samples it is over;
    /// `None` with fewer than `min_samples`.
    pub fn p75(&self, page: &str, metric: Metric, now_ms: u64) -> Option<(f64, usize)> {
        let series = self.pages.get(page)?.series.get(&metric)?;
        self.p75_of_series(series, now_ms)
    }

    fn p75_of_series(&self, series: &Series, now_ms: u64) -> Option<(f64, usize)> {
        let mut values = series.live_values(self.cutoff(now_ms));
        if values.len() < self.min_samples {
            return None;
        }
        p75_nearest_rank(&mut values).map(|p| (p, values.len()))
    }

    /// Every (page, metric) with enough samples: `(page, metric, p75, samples)`, sorted by
    /// page then metric.
    pub fn pages(&self, now_ms: u64) -> Vec<(String, Metric, f64, usize)> {
        let mut out: Vec<_> = self
            .pages
            .iter()
            .flat_map(|(name, page)| {
                page.series.iter().filter_map(move |(metric, series)| {
                    self.p75_of_series(series, now_ms)
                        .map(|(p75, n)| (name.clone(), *metric, p75, n))
                })
            })
            .collect();
        out.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
        out
    }

    /// Frees samples outside the window at `now_ms`, and keys and pages left empty.
    pub fn prune(&mut self, now_ms: u64) {
        let cutoff = self.cutoff(now_ms);
        let mut emptied = Vec::new();
        for (name, page) in &mut self.pages {
            for series in page.series.values_mut() {
                series.expire(cutoff);
            }
            page.series.retain(|_, s| s.len() > 0);
            if page.series.is_empty() {
                emptied.push((name.clone(), page.touched));
            }
        }
        for (name, touched) in emptied {
            self.pages.remove(&name);
            self.recency.remove(&touched);
        }
        self.total = self.pages.values().map(Page::len).sum();
    }
}

/// The nearest-rank 75th percentile: sorts `values` ascending and returns the one at 1-based
/// rank `⌈0.75·n⌉`; `None` when empty. Values must not be NaN (beacons never are).
pub fn p75_nearest_rank(values: &mut [f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    // ⌈3n/4⌉ in integers: exact for every n.
    let rank = (3 * values.len()).div_ceil(4);
    values.get(rank - 1).copied()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::cast_precision_loss)]
mod tests {
    use super::*;

    fn beacon(page: &str, metric: Metric, id: &str, value: f64) -> Beacon {
        Beacon {
            metric,
            value,
            id: id.into(),
            page: page.into(),
        }
    }

    #[test]
    fn nearest_rank_on_known_sets() {
        let mut hundred: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        assert_eq!(p75_nearest_rank(&mut hundred), Some(75.0));
        assert_eq!(p75_nearest_rank(&mut [4.0, 2.0, 3.0, 1.0]), Some(3.0));
        assert_eq!(p75_nearest_rank(&mut [7.0]), Some(7.0));
        assert_eq!(p75_nearest_rank(&mut [1.0, 2.0]), Some(2.0));
        assert_eq!(p75_nearest_rank(&mut [1.0, 2.0, 3.0]), Some(3.0));
        assert_eq!(p75_nearest_rank(&mut [1.0, 2.0, 3.0, 4.0, 5.0]), Some(4.0));
        assert_eq!(
            p75_nearest_rank(&mut [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]),
            Some(6.0)
        );
        assert_eq!(p75_nearest_rank(&mut []), None);
    }

    #[test]
    fn p75_over_the_window() {
        let mut w = VitalsWindow::new(60_000, 1);
        for i in 1..=100 {
            w.record(
                &beacon("/", Metric::Lcp, &format!("id{i}"), f64::from(i)),
                1_000,
            );
        }
        assert_eq!(w.p75("/", Metric::Lcp, 1_000), Some((75.0, 100)));
        assert_eq!(w.p75("/", Metric::Inp, 1_000), None);
        assert_eq!(w.p75("/other", Metric::Lcp, 1_000), None);
    }

    #[test]
    fn the_latest_value_per_id_replaces_the_earlier_one() {
        let mut w = VitalsWindow::new(60_000, 1);
        w.record(&beacon("/", Metric::Cls, "a", 0.01), 0);
        w.record(&beacon("/", Metric::Cls, "b", 0.02), 0);
        w.record(&beacon("/", Metric::Cls, "a", 0.30), 10);
        w.record(&beacon("/", Metric::Cls, "a", 0.50), 20);
        assert_eq!(w.sample_count(), 2);
        assert_eq!(w.p75("/", Metric::Cls, 20), Some((0.5, 2)));
        // Same id on another metric or page is another sample.
        w.record(&beacon("/", Metric::Inp, "a", 40.0), 20);
        w.record(&beacon("/x", Metric::Cls, "a", 0.1), 20);
        assert_eq!(w.sample_count(), 4);
        assert_eq!(w.p75("/", Metric::Cls, 20), Some((0.5, 2)));
    }

    #[test]
    fn a_replaced_sample_takes_the_new_time() {
        let mut w = VitalsWindow::new(1_000, 1);
        w.record(&beacon("/", Metric::Inp, "a", 100.0), 0);
        w.record(&beacon("/", Metric::Inp, "a", 300.0), 900);
        // The first report would have expired at 1000; the replacement lives until 1900.
        assert_eq!(w.p75("/", Metric::Inp, 1_500), Some((300.0, 1)));
        assert_eq!(w.p75("/", Metric::Inp, 1_900), None);
    }

    #[test]
    fn too_few_samples_is_none() {
        let mut w = VitalsWindow::new(60_000, 3);
        w.record(&beacon("/", Metric::Lcp, "a", 1.0), 0);
        w.record(&beacon("/", Metric::Lcp, "b", 2.0), 0);
        assert_eq!(w.p75("/", Metric::Lcp, 0), None);
        assert!(w.pages(0).is_empty());
        // A replacement does not add a sample.
        w.record(&beacon("/", Metric::Lcp, "b", 5.0), 0);
        assert_eq!(w.p75("/", Metric::Lcp, 0), None);
        w.record(&beacon("/", Metric::Lcp, "c", 3.0), 0);
        assert_eq!(w.p75("/", Metric::Lcp, 0), Some((5.0, 3)));
    }

    #[test]
    fn samples_older_than_the_window_drop_out() {
        let mut w = VitalsWindow::new(1_000, 1);
        w.record(&beacon("/", Metric::Ttfb, "old", 900.0), 0);
        w.record(&beacon("/", Metric::Ttfb, "new", 100.0), 500);
        assert_eq!(w.p75("/", Metric::Ttfb, 999), Some((900.0, 2)));
        // At 1000 the first is exactly window_ms old: out.
        assert_eq!(w.p75("/", Metric::Ttfb, 1_000), Some((100.0, 1)));
        assert_eq!(w.p75("/", Metric::Ttfb, 1_500), None);
        // Queries do not free; prune does, and drops emptied pages.
        assert_eq!(w.sample_count(), 2);
        w.prune(1_000);
        assert_eq!((w.sample_count(), w.page_count()), (1, 1));
        w.prune(1_500);
        assert_eq!((w.sample_count(), w.page_count()), (0, 0));
    }

    #[test]
    fn recording_expires_the_touched_key() {
        let mut w = VitalsWindow::new(100, 1);
        for t in 0..1_000 {
            w.record(&beacon("/", Metric::Lcp, &format!("{t}"), 1.0), t);
        }
        assert_eq!(w.sample_count(), 100);
    }

    #[test]
    fn each_key_keeps_its_newest_samples() {
        let mut w = VitalsWindow::new(60_000, 1).with_max_samples_per_key(4);
        for i in 1..=10 {
            w.record(&beacon("/", Metric::Lcp, &format!("{i}"), f64::from(i)), 0);
        }
        assert_eq!(w.p75("/", Metric::Lcp, 0), Some((9.0, 4)));
        // The evicted ids are forgotten too: re-recording one adds a sample.
        w.record(&beacon("/", Metric::Lcp, "1", 100.0), 0);
        assert_eq!(w.p75("/", Metric::Lcp, 0), Some((10.0, 4)));
        assert_eq!(w.sample_count(), 4);
        let series = &w.pages["/"].series[&Metric::Lcp];
        assert_eq!(series.by_id.len(), 4);
        assert!(!series.by_id.contains_key("7"));
    }

    #[test]
    fn the_page_cap_evicts_the_least_recently_updated_page() {
        let mut w = VitalsWindow::new(60_000, 1).with_max_pages(3);
        w.record(&beacon("/a", Metric::Lcp, "1", 1.0), 0);
        w.record(&beacon("/b", Metric::Lcp, "2", 2.0), 1);
        w.record(&beacon("/c", Metric::Lcp, "3", 3.0), 2);
        // Touch /a: /b is now the least recently updated.
        w.record(&beacon("/a", Metric::Inp, "4", 4.0), 3);
        w.record(&beacon("/d", Metric::Lcp, "5", 5.0), 4);
        assert_eq!(w.page_count(), 3);
        assert_eq!(w.p75("/b", Metric::Lcp, 4), None);
        assert!(w.p75("/a", Metric::Lcp, 4).is_some());
        assert!(w.p75("/c", Metric::Lcp, 4).is_some());
        assert_eq!(w.sample_count(), 4);
        // A flood of random pages leaves at most max_pages.
        for i in 0..1_000 {
            w.record(&beacon(&format!("/r{i}"), Metric::Cls, "x", 0.1), 5);
        }
        assert_eq!(w.page_count(), 3);
        assert_eq!(w.sample_count(), 3);
        let pages: Vec<_> = w.pages(5).into_iter().map(|p| p.0).collect();
        assert_eq!(pages, vec!["/r997", "/r998", "/r999"]);
    }

    #[test]
    fn the_total_cap_evicts_whole_old_pages_but_not_the_current_one() {
        let mut w = VitalsWindow::new(60_000, 1)
            .with_max_samples_per_key(5)
            .with_max_samples_total(6);
        for i in 0..3 {
            w.record(&beacon("/a", Metric::Lcp, &format!("a{i}"), 1.0), 0);
        }
        for i in 0..3 {
            w.record(&beacon("/b", Metric::Lcp, &format!("b{i}"), 1.0), 0);
        }
        assert_eq!(w.sample_count(), 6);
        w.record(&beacon("/b", Metric::Inp, "b9", 1.0), 0);
        assert_eq!((w.page_count(), w.sample_count()), (1, 4));
        assert_eq!(w.p75("/a", Metric::Lcp, 0), None);
        // One page alone may exceed the total; it is never evicted for its own record.
        for i in 0..5 {
            w.record(&beacon("/b", Metric::Fcp, &format!("f{i}"), 1.0), 0);
        }
        assert_eq!((w.page_count(), w.sample_count()), (1, 9));
    }

    #[test]
    fn pages_lists_every_key_with_data_sorted() {
        let mut w = VitalsWindow::new(60_000, 2);
        for (i, v) in [10.0, 20.0, 30.0, 40.0].into_iter().enumerate() {
            w.record(&beacon("/b", Metric::Lcp, &format!("l{i}"), v), 0);
            w.record(&beacon("/a", Metric::Inp, &format!("i{i}"), v / 10.0), 0);
        }
        w.record(&beacon("/a", Metric::Cls, "c", 0.2), 0); // below min_samples
        assert_eq!(
            w.pages(0),
            vec![
                ("/a".to_owned(), Metric::Inp, 3.0, 4),
                ("/b".to_owned(), Metric::Lcp, 30.0, 4),
            ]
        );
    }

    #[test]
    fn clocks_that_step_back_do_not_break_ordering() {
        let mut w = VitalsWindow::new(1_000, 1);
        w.record(&beacon("/", Metric::Lcp, "a", 1.0), 5_000);
        w.record(&beacon("/", Metric::Lcp, "b", 2.0), 4_000);
        assert_eq!(w.p75("/", Metric::Lcp, 4_500), Some((2.0, 2)));
        assert_eq!(w.p75("/", Metric::Lcp, 5_000), Some((1.0, 1)));
        w.prune(5_500);
        assert_eq!(w.sample_count(), 1);
        assert_eq!(w.p75("/", Metric::Lcp, 5_500), Some((1.0, 1)));
    }
}
