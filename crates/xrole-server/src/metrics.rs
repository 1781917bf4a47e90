//! Prometheus metrics in the text exposition format, written by hand: request
//! counts by route and status, and a latency histogram by route. Other parts of
//! the server (the credential broker, the job worker) add their own lines with
//! [`Metrics::add_collector`].

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Histogram bucket upper bounds, in seconds.
const BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Something that appends its own metrics to the `/metrics` text.
pub trait MetricsCollector: Send + Sync {
    /// Appends complete `# HELP`/`# TYPE`/sample lines.
    fn write_prometheus(&self, out: &mut String);
}

#[derive(Debug, Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Debug, Default)]
struct RouteStats {
    // status → count
    requests: BTreeMap<u16, u64>,
    latency: Histogram,
}

#[derive(Debug, Default)]
struct Inner {
    // method → route → stats: nested so a request looks its entry up with
    // borrowed strings and allocates only the first time a pair is seen.
    routes: BTreeMap<String, BTreeMap<String, RouteStats>>,
}

/// The server's metrics registry; cheap to clone.
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<Inner>>,
    db_checkouts: Arc<AtomicU64>,
    collectors: Arc<RwLock<Vec<Arc<dyn MetricsCollector>>>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Records one finished request. `route` is the matched pattern
    /// (`/v1/users/{id}`), never the raw path, so cardinality stays bounded.
    pub fn observe(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let mut m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if !m.routes.contains_key(method) {
            m.routes.insert(method.to_owned(), BTreeMap::new());
        }
        let Some(by_route) = m.routes.get_mut(method) else {
            return;
        };
        if !by_route.contains_key(route) {
            by_route.insert(route.to_owned(), RouteStats::default());
        }
        let Some(stats) = by_route.get_mut(route) else {
            return;
        };
        *stats.requests.entry(status).or_default() += 1;
        let h = &mut stats.latency;
        for (i, le) in BUCKETS.iter().enumerate() {
            if secs <= *le {
                h.counts[i] += 1;
            }
        }
        h.sum += secs;
        h.count += 1;
    }

    /// Counts one database connection checkout (proves that rejected
    /// credentials never reach the database).
    pub fn db_checkout(&self) {
        self.db_checkouts.fetch_add(1, Ordering::Relaxed);
    }

    /// Adds a collector whose lines follow the HTTP metrics.
    pub fn add_collector(&self, c: Arc<dyn MetricsCollector>) {
        self.collectors
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(c);
    }

    /// The whole exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        {
            let m = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            out.push_str("# HELP xrole_http_requests_total HTTP requests by route and status.\n");
            out.push_str("# TYPE xrole_http_requests_total counter\n");
            for (method, route, stats) in m.iter() {
                for (status, n) in &stats.requests {
                    let _ = writeln!(
                        out,
                        "xrole_http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                        escape(method),
                        escape(route)
                    );
                }
            }
            out.push_str(
                "# HELP xrole_http_request_duration_seconds HTTP request latency by route.\n",
            );
            out.push_str("# TYPE xrole_http_request_duration_seconds histogram\n");
            for (method, route, stats) in m.iter() {
                let h = &stats.latency;
                let labels = format!("method=\"{}\",route=\"{}\"", escape(method), escape(route));
                for (i, le) in BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "xrole_http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {}",
                        h.counts[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "xrole_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {}",
                    h.count
                );
                let _ = writeln!(
                    out,
                    "xrole_http_request_duration_seconds_sum{{{labels}}} {}",
                    h.sum
                );
                let _ = writeln!(
                    out,
                    "xrole_http_request_duration_seconds_count{{{labels}}} {}",
                    h.count
                );
            }
        }
        out.push_str("# HELP xrole_db_checkouts_total Database connections taken from the pool.\n");
        out.push_str("# TYPE xrole_db_checkouts_total counter\n");
        let _ = writeln!(
            out,
            "xrole_db_checkouts_total {}",
            self.db_checkouts.load(Ordering::Relaxed)
        );
        for c in self
            .collectors
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
        {
            c.write_prometheus(&mut out);
        }
        out
    }
}

impl Inner {
    /// (method, route, stats), sorted by method then route.
    fn iter(&self) -> impl Iterator<Item = (&str, &str, &RouteStats)> {
        self.routes.iter().flat_map(|(method, by_route)| {
            by_route
                .iter()
                .map(move |(route, stats)| (method.as_str(), route.as_str(), stats))
        })
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histogram() {
        let m = Metrics::default();
        m.observe("GET", "/v1/users/{id}", 200, Duration::from_millis(3));
        m.observe("GET", "/v1/users/{id}", 404, Duration::from_millis(30));
        let t = m.render();
        assert!(t.contains(
            "xrole_http_requests_total{method=\"GET\",route=\"/v1/users/{id}\",status=\"200\"} 1"
        ));
        assert!(t.contains("le=\"0.005\"} 1\n"));
        assert!(t.contains("le=\"0.05\"} 2\n"));
        assert!(t.contains("le=\"+Inf\"} 2\n"));
        assert!(t.contains(
            "xrole_http_request_duration_seconds_count{method=\"GET\",route=\"/v1/users/{id}\"} 2"
        ));
    }

    #[test]
    fn routes_render_sorted_by_method_then_route() {
        let m = Metrics::default();
        m.observe("POST", "/a", 201, Duration::from_millis(1));
        m.observe("GET", "/b", 200, Duration::from_millis(1));
        m.observe("GET", "/a", 200, Duration::from_millis(1));
        m.observe("GET", "/a", 200, Duration::from_millis(1));
        let t = m.render();
        let at = |s: &str| t.find(s).unwrap_or_else(|| panic!("{s} missing from {t}"));
        let get_a = at("xrole_http_requests_total{method=\"GET\",route=\"/a\",status=\"200\"} 2");
        let get_b = at("xrole_http_requests_total{method=\"GET\",route=\"/b\",status=\"200\"} 1");
        let post_a = at("xrole_http_requests_total{method=\"POST\",route=\"/a\",status=\"201\"} 1");
        assert!(get_a < get_b && get_b < post_a, "{t}");
        assert!(
            t.contains("xrole_http_request_duration_seconds_count{method=\"POST\",route=\"/a\"} 1")
        );
    }

    struct Fixed;
    impl MetricsCollector for Fixed {
        fn write_prometheus(&self, out: &mut String) {
            out.push_str("xrole_jobs_total 7\n");
        }
    }

    #[test]
    fn collectors_append() {
        let m = Metrics::default();
        m.add_collector(Arc::new(Fixed));
        assert!(m.render().ends_with("xrole_jobs_total 7\n"));
    }

    #[test]
    fn labels_are_escaped() {
        assert_eq!(escape("a\"b\\c\n"), "a\\\"b\\\\c\\n");
    }
}
