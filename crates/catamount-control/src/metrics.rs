//! Prometheus text exposition (format 0.0.4) of a stats snapshot.
//!
//! The snapshot is typed and every part of it optional: whatever the stats did not carry is
//! simply not rendered (a family with no samples is left out whole). Names follow Prometheus
//! conventions: the `catamount_` prefix, base units (`_seconds`, `_bytes`), `_total` on
//! counters, HELP and TYPE before each family. In a cluster every per-server series carries
//! `worker="<index>"`, and the master's own memory `role="master"`; single mode has no such
//! labels. docs/metrics.md lists every metric.

use std::fmt::Write;

/// The content type of the text `render` makes.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A cumulative histogram as the stats carry it: `counts[i]` observations were at most
/// `bounds[i]` seconds; the last count (one more than the bounds) is the total.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Histogram {
    pub bounds: Vec<f64>,
    pub counts: Vec<u64>,
    pub sum: f64,
}

/// One serving process's stats (contract shape A).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ServerStats {
    pub backlog: Option<u64>,
    pub running: Option<u64>,
    pub pool_capacity: Option<u64>,
    pub busy_threads: Option<u64>,
    pub io_threads: Option<u64>,
    pub max_threads: Option<u64>,
    pub requests_count: Option<u64>,
    /// `(status class such as "2xx", count)`.
    pub responses: Vec<(String, u64)>,
    pub request_duration: Option<Histogram>,
    pub queue_time: Option<Histogram>,
    pub bytes_in: Option<u64>,
    pub bytes_out: Option<u64>,
    pub connections_open: Option<u64>,
    pub connections_accepted: Option<u64>,
    pub request_timeouts: Option<u64>,
    pub threads_lost: Option<u64>,
}

/// One worker as the master sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct WorkerStats {
    pub index: u64,
    pub phase: Option<u64>,
    pub booted: Option<bool>,
    /// Its last check-in; `None` before the first (no per-server series then).
    pub server: Option<ServerStats>,
}

/// The master's view (contract shape B).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterStats {
    pub workers: Option<u64>,
    pub booted_workers: Option<u64>,
    pub old_workers: Option<u64>,
    pub phase: Option<u64>,
    pub worker_boots: Option<u64>,
    pub worker_restarts: Option<u64>,
    pub worker_status: Vec<WorkerStats>,
}

/// Whose memory a [`ProcessMemory`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The single-mode server process: no label.
    Single,
    /// The cluster master: `role="master"`.
    Master,
    /// Worker `index`: `worker="<index>"`.
    Worker(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessMemory {
    pub role: Role,
    pub rss_bytes: u64,
    /// Only where the kernel let us read it.
    pub pss_bytes: Option<u64>,
}

/// What `render` draws: single mode has `server`, a cluster has `cluster`.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Snapshot {
    pub server: Option<ServerStats>,
    pub cluster: Option<ClusterStats>,
    pub memory: Vec<ProcessMemory>,
}

/// A sample's labels, in order.
type Labels = Vec<(&'static str, String)>;

/// A gauge or counter read from a `T`: name, type, help, its value.
struct Series<T> {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&T) -> Option<u64>,
}

/// The per-server gauges and counters.
const SERVER_SERIES: [Series<ServerStats>; 13] = [
    Series {
        name: "catamount_requests_total",
        kind: "counter",
        help: "Requests handed to the application since the process started.",
        value: |s| s.requests_count,
    },
    Series {
        name: "catamount_threads_busy",
        kind: "gauge",
        help: "Pool threads serving a request, plus requests waiting for one.",
        value: |s| s.busy_threads,
    },
    Series {
        name: "catamount_threads_io",
        kind: "gauge",
        help: "Pool threads whose request marked itself IO-bound (max_io_threads).",
        value: |s| s.io_threads,
    },
    Series {
        name: "catamount_threads_running",
        kind: "gauge",
        help: "Pool threads spawned.",
        value: |s| s.running,
    },
    Series {
        name: "catamount_threads_max",
        kind: "gauge",
        help: "Configured maximum of pool threads.",
        value: |s| s.max_threads,
    },
    Series {
        name: "catamount_pool_capacity",
        kind: "gauge",
        help: "Requests the pool could take now: idle threads plus threads not yet spawned, minus the backlog.",
        value: |s| s.pool_capacity,
    },
    Series {
        name: "catamount_backlog",
        kind: "gauge",
        help: "Requests read in full and waiting for a pool thread.",
        value: |s| s.backlog,
    },
    Series {
        name: "catamount_connections_open",
        kind: "gauge",
        help: "Client connections open now.",
        value: |s| s.connections_open,
    },
    Series {
        name: "catamount_connections_accepted_total",
        kind: "counter",
        help: "Client connections accepted since the process started.",
        value: |s| s.connections_accepted,
    },
    Series {
        name: "catamount_request_timeouts_total",
        kind: "counter",
        help: "Requests past request_timeout, answered or cut by the server.",
        value: |s| s.request_timeouts,
    },
    Series {
        name: "catamount_threads_lost",
        kind: "gauge",
        help: "Pool threads still on a timed-out request past request_timeout_grace.",
        value: |s| s.threads_lost,
    },
    Series {
        name: "catamount_received_bytes_total",
        kind: "counter",
        help: "Bytes read from client sockets.",
        value: |s| s.bytes_in,
    },
    Series {
        name: "catamount_sent_bytes_total",
        kind: "counter",
        help: "Bytes written to client sockets (heads, bodies, sendfile).",
        value: |s| s.bytes_out,
    },
];

/// The cluster-wide gauges and counters, from the master's books.
const CLUSTER_SERIES: [Series<ClusterStats>; 6] = [
    Series {
        name: "catamount_workers",
        kind: "gauge",
        help: "Workers the master tracks now.",
        value: |c| c.workers,
    },
    Series {
        name: "catamount_workers_booted",
        kind: "gauge",
        help: "Workers that have booted.",
        value: |c| c.booted_workers,
    },
    Series {
        name: "catamount_workers_old",
        kind: "gauge",
        help: "Workers started in an earlier phase than the master's.",
        value: |c| c.old_workers,
    },
    Series {
        name: "catamount_phase",
        kind: "gauge",
        help: "The master's phase: phased restarts and reforks so far.",
        value: |c| c.phase,
    },
    Series {
        name: "catamount_worker_boots_total",
        kind: "counter",
        help: "Worker boots since the master started.",
        value: |c| c.worker_boots,
    },
    Series {
        name: "catamount_worker_restarts_total",
        kind: "counter",
        help: "Workers started to replace one that exited or was stopped.",
        value: |c| c.worker_restarts,
    },
];

/// Per worker, from the master's books.
const WORKER_SERIES: [Series<WorkerStats>; 2] = [
    Series {
        name: "catamount_worker_phase",
        kind: "gauge",
        help: "The phase each worker was started in.",
        value: |w| w.phase,
    },
    Series {
        name: "catamount_worker_booted",
        kind: "gauge",
        help: "1 when the worker has booted, else 0.",
        value: |w| w.booted.map(u64::from),
    },
];

/// Per process: the server process, or the master and each worker.
const MEMORY_SERIES: [Series<ProcessMemory>; 2] = [
    Series {
        name: "catamount_process_resident_memory_bytes",
        kind: "gauge",
        help: "Resident set size of the process (RSS).",
        value: |m| Some(m.rss_bytes),
    },
    Series {
        name: "catamount_process_proportional_memory_bytes",
        kind: "gauge",
        help: "Proportional set size of the process (PSS: shared pages divided among their sharers), where readable.",
        value: |m| m.pss_bytes,
    },
];

/// The whole exposition of `snapshot`.
pub fn render(snapshot: &Snapshot) -> String {
    let mut out = String::new();
    let servers = servers(snapshot);
    families(&mut out, &SERVER_SERIES, &servers);
    let responses = servers
        .iter()
        .flat_map(|(labels, s)| {
            s.responses.iter().map(move |(class, n)| {
                let mut labels = labels.clone();
                labels.push(("status_class", class.clone()));
                (labels, n.to_string())
            })
        })
        .collect::<Vec<_>>();
    family(
        &mut out,
        "catamount_responses_total",
        "counter",
        "Responses whose head was written, by status class (the server's own error responses included, 103 Early Hints not).",
        &responses,
    );
    histogram(
        &mut out,
        "catamount_request_duration_seconds",
        "From a request read in full to its response finished by the pool thread.",
        &servers,
        |s| s.request_duration.as_ref(),
    );
    histogram(
        &mut out,
        "catamount_request_queue_time_seconds",
        "From a request read in full to a pool thread taking it.",
        &servers,
        |s| s.queue_time.as_ref(),
    );
    if let Some(cluster) = &snapshot.cluster {
        families(&mut out, &CLUSTER_SERIES, &[(Labels::new(), cluster)]);
        let workers: Vec<_> = cluster
            .worker_status
            .iter()
            .map(|w| (worker_label(w.index), w))
            .collect();
        families(&mut out, &WORKER_SERIES, &workers);
    }
    let memory: Vec<_> = snapshot
        .memory
        .iter()
        .map(|m| (role_labels(m.role), m))
        .collect();
    families(&mut out, &MEMORY_SERIES, &memory);
    out
}

/// One family per series, a sample per item that has a value.
fn families<T>(out: &mut String, series: &[Series<T>], items: &[(Labels, &T)]) {
    for series in series {
        let samples: Vec<_> = items
            .iter()
            .filter_map(|(labels, item)| {
                (series.value)(item).map(|v| (labels.clone(), v.to_string()))
            })
            .collect();
        family(out, series.name, series.kind, series.help, &samples);
    }
}

/// Every server's stats with the labels its series carry.
fn servers(snapshot: &Snapshot) -> Vec<(Labels, &ServerStats)> {
    let mut list = Vec::new();
    if let Some(server) = &snapshot.server {
        list.push((Labels::new(), server));
    }
    if let Some(cluster) = &snapshot.cluster {
        for w in &cluster.worker_status {
            if let Some(server) = &w.server {
                list.push((worker_label(w.index), server));
            }
        }
    }
    list
}

fn worker_label(index: u64) -> Labels {
    vec![("worker", index.to_string())]
}

fn role_labels(role: Role) -> Labels {
    match role {
        Role::Single => Labels::new(),
        Role::Master => vec![("role", "master".to_string())],
        Role::Worker(index) => worker_label(index),
    }
}

/// HELP, TYPE and the samples; nothing at all without samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(Labels, String)]) {
    if samples.is_empty() {
        return;
    }
    header(out, name, kind, help);
    for (labels, value) in samples {
        sample(out, name, labels, value);
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let help = help.replace('\\', "\\\\").replace('\n', "\\n");
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

fn sample(out: &mut String, name: &str, labels: &Labels, value: &str) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (key, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{key}=\"{}\"", escape_label(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

/// A label value as the format wants it: backslash, double quote and line feed escaped.
pub fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A float as the format wants it (`+Inf`, `-Inf`, `NaN`; never an exponent Go cannot read).
fn float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// One histogram family over every server that has it; a malformed one (counts not one more
/// than bounds) is left out rather than drawn wrong.
fn histogram(
    out: &mut String,
    name: &str,
    help: &str,
    servers: &[(Labels, &ServerStats)],
    get: fn(&ServerStats) -> Option<&Histogram>,
) {
    let present: Vec<(&Labels, &Histogram)> = servers
        .iter()
        .filter_map(|(labels, s)| get(s).map(|h| (labels, h)))
        .filter(|(_, h)| h.counts.len() == h.bounds.len() + 1)
        .collect();
    if present.is_empty() {
        return;
    }
    header(out, name, "histogram", help);
    let bucket = format!("{name}_bucket");
    for (labels, h) in present {
        let les = h
            .bounds
            .iter()
            .map(|b| float(*b))
            .chain(["+Inf".to_string()]);
        for (le, count) in les.zip(&h.counts) {
            let mut with_le = labels.clone();
            with_le.push(("le", le));
            sample(out, &bucket, &with_le, &count.to_string());
        }
        let total = h.counts.last().copied().unwrap_or(0);
        sample(out, &format!("{name}_sum"), labels, &float(h.sum));
        sample(out, &format!("{name}_count"), labels, &total.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(requests: u64) -> ServerStats {
        ServerStats {
            backlog: Some(1),
            running: Some(2),
            pool_capacity: Some(3),
            busy_threads: Some(4),
            io_threads: Some(1),
            max_threads: Some(5),
            requests_count: Some(requests),
            responses: vec![("2xx".into(), requests), ("4xx".into(), 1)],
            request_duration: Some(Histogram {
                bounds: vec![0.001, 0.5, 1.0],
                counts: vec![1, 2, 3, 4],
                sum: 2.25,
            }),
            queue_time: None,
            bytes_in: Some(100),
            bytes_out: Some(200),
            connections_open: Some(1),
            connections_accepted: Some(9),
            request_timeouts: Some(1),
            threads_lost: Some(0),
        }
    }

    #[test]
    fn single_mode_has_no_worker_label() {
        let text = render(&Snapshot {
            server: Some(server(7)),
            cluster: None,
            memory: vec![ProcessMemory {
                role: Role::Single,
                rss_bytes: 4096,
                pss_bytes: None,
            }],
        });
        for line in [
            "# HELP catamount_requests_total Requests handed to the application since the process started.",
            "# TYPE catamount_requests_total counter",
            "catamount_requests_total 7",
            "catamount_threads_busy 4",
            "catamount_threads_io 1",
            "catamount_responses_total{status_class=\"2xx\"} 7",
            "catamount_responses_total{status_class=\"4xx\"} 1",
            "# TYPE catamount_request_duration_seconds histogram",
            "catamount_request_duration_seconds_bucket{le=\"0.001\"} 1",
            "catamount_request_duration_seconds_bucket{le=\"1\"} 3",
            "catamount_request_duration_seconds_bucket{le=\"+Inf\"} 4",
            "catamount_request_duration_seconds_sum 2.25",
            "catamount_request_duration_seconds_count 4",
            "catamount_process_resident_memory_bytes 4096",
        ] {
            assert!(text.lines().any(|l| l == line), "{line:?} missing from\n{text}");
        }
        assert!(!text.contains("worker="));
        assert!(
            !text.contains("queue_time"),
            "no queue_time histogram, no family"
        );
        assert!(!text.contains("proportional"), "no PSS, no family");
        assert!(!text.contains("catamount_workers"));
        assert!(text.ends_with('\n'));
    }

    #[test]
    fn cluster_series_carry_the_worker() {
        let text = render(&Snapshot {
            server: None,
            cluster: Some(ClusterStats {
                workers: Some(2),
                booted_workers: Some(1),
                old_workers: Some(0),
                phase: Some(3),
                worker_boots: Some(4),
                worker_restarts: Some(2),
                worker_status: vec![
                    WorkerStats {
                        index: 0,
                        phase: Some(3),
                        booted: Some(true),
                        server: Some(server(5)),
                    },
                    WorkerStats {
                        index: 1,
                        phase: Some(2),
                        booted: Some(false),
                        server: None,
                    },
                ],
            }),
            memory: vec![
                ProcessMemory {
                    role: Role::Master,
                    rss_bytes: 1,
                    pss_bytes: Some(2),
                },
                ProcessMemory {
                    role: Role::Worker(0),
                    rss_bytes: 3,
                    pss_bytes: Some(4),
                },
            ],
        });
        for line in [
            "catamount_requests_total{worker=\"0\"} 5",
            "catamount_responses_total{worker=\"0\",status_class=\"2xx\"} 5",
            "catamount_request_duration_seconds_bucket{worker=\"0\",le=\"0.5\"} 2",
            "catamount_request_duration_seconds_count{worker=\"0\"} 4",
            "catamount_workers 2",
            "catamount_workers_booted 1",
            "catamount_phase 3",
            "catamount_worker_boots_total 4",
            "catamount_worker_restarts_total 2",
            "catamount_worker_phase{worker=\"1\"} 2",
            "catamount_worker_booted{worker=\"0\"} 1",
            "catamount_worker_booted{worker=\"1\"} 0",
            "catamount_process_resident_memory_bytes{role=\"master\"} 1",
            "catamount_process_proportional_memory_bytes{worker=\"0\"} 4",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line:?} missing from\n{text}"
            );
        }
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("catamount_requests_total{worker=\"1\"")),
            "a worker without a check-in has no per-server series"
        );
        // Each family's HELP and TYPE come once, before its samples.
        let types = text
            .lines()
            .filter(|l| l.starts_with("# TYPE catamount_requests_total "))
            .count();
        assert_eq!(types, 1);
    }

    #[test]
    fn escaping_and_floats() {
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        assert_eq!(float(0.0025), "0.0025");
        assert_eq!(float(10.0), "10");
        assert_eq!(float(f64::INFINITY), "+Inf");
        assert_eq!(float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(float(f64::NAN), "NaN");
        let mut out = String::new();
        sample(&mut out, "m", &vec![("l", "x\"y".to_string())], "1");
        assert_eq!(out, "m{l=\"x\\\"y\"} 1\n");
    }

    #[test]
    fn a_malformed_histogram_and_an_empty_snapshot_draw_nothing() {
        let s = ServerStats {
            queue_time: Some(Histogram {
                bounds: vec![1.0],
                counts: vec![1],
                sum: 0.5,
            }),
            ..ServerStats::default()
        };
        let text = render(&Snapshot {
            server: Some(s),
            ..Snapshot::default()
        });
        assert_eq!(text, "");
        assert_eq!(render(&Snapshot::default()), "");
    }
}
