//! `GET /v1/monitoring[?since=N]` and `GET /v1/monitoring/metrics`: the private monitor's
//! released windows (guard part 3), for monitoring tokens only — a role of its own, not an
//! inference token (`monitoring_tokens_sha256` in the measured configuration).
//!
//! What leaves is what nacre-guard's monitor released: counts noised under the manifest's ε and
//! what follows from them (distances, thresholds, quantiles), plus the privacy terms. The
//! metrics route states the same in Prometheus' text format, for alert rules
//! (deploy/prometheus/nacre-monitoring.rules.yml): windows by outcome, features drifted in the
//! latest released window, ε spent today.

use std::fmt::Write as _;
use std::time::Instant;

use axum::Extension;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use nacre_guard::monitor::Report;
use serde::Deserialize;

use super::{App, Conn, Reject, Shared, json};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Since {
    #[serde(default)]
    since: u64,
}

impl App {
    /// A monitoring token: 401 without or with a wrong one, 403 when the image names none. A
    /// refused token is charged to the source's bucket, so guessing is rate-limited.
    fn monitoring_reader(&self, conn: &Conn, headers: &HeaderMap) -> Result<(), Reject> {
        let refused = |status, message: &str| Reject::new(status, "unauthorized", message);
        let checked = if self.monitoring_sha256.is_empty() {
            Err(refused(StatusCode::FORBIDDEN, "this image accepts no monitoring tokens"))
        } else {
            match headers
                .get(header::AUTHORIZATION)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("Bearer "))
            {
                None => Err(refused(StatusCode::UNAUTHORIZED, "a monitoring bearer token is required")),
                Some(t) if self.monitoring_sha256.binary_search(&super::sha256(t.as_bytes())).is_err() => {
                    Err(refused(StatusCode::UNAUTHORIZED, "the bearer token is not a monitoring token"))
                }
                Some(_) => Ok(()),
            }
        };
        self.limit(conn, None)?;
        checked
    }

    fn monitoring_report(&self, since: u64) -> Result<Report, Reject> {
        let ready = self.ready()?;
        ready.guard.as_ref().and_then(|g| g.monitoring_report(since, self.now_ms())).ok_or_else(|| {
            Reject::new(
                StatusCode::NOT_FOUND,
                "not_monitored",
                "the model's guard manifest sets no monitoring",
            )
        })
    }
}

pub(super) async fn windows(
    State(app): Shared,
    Extension(conn): Extension<Conn>,
    headers: HeaderMap,
    query: Result<Query<Since>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let t = Instant::now();
    let r = (|| {
        app.monitoring_reader(&conn, &headers)?;
        let Query(Since { since }) = query.map_err(|e| Reject::bad("bad_query", e.body_text()))?;
        Ok(json(StatusCode::OK, &app.monitoring_report(since)?))
    })();
    app.finish("monitoring", t, r)
}

pub(super) async fn metrics(
    State(app): Shared,
    Extension(conn): Extension<Conn>,
    headers: HeaderMap,
) -> Response {
    let t = Instant::now();
    let r = (|| {
        app.monitoring_reader(&conn, &headers)?;
        let report = app.monitoring_report(0)?;
        let ct = HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8");
        Ok(([(header::CONTENT_TYPE, ct)], prometheus_text(&report)).into_response())
    })();
    app.finish("monitoring_metrics", t, r)
}

/// The report as Prometheus text: only released (noised) values and the accountant's state.
pub fn prometheus_text(report: &Report) -> String {
    let mut out = String::new();
    let mut outcomes = [("released", 0u64), ("below_min_window", 0), ("privacy_budget", 0)];
    for w in &report.windows {
        let i = match (&w.release, w.withheld) {
            (Some(_), _) => 0,
            (None, Some(nacre_guard::monitor::Withheld::BelowMinWindow)) => 1,
            (None, _) => 2,
        };
        outcomes[i].1 += 1;
    }
    let _ = writeln!(out, "# HELP nacre_monitor_windows Closed monitoring windows kept, by outcome");
    let _ = writeln!(out, "# TYPE nacre_monitor_windows gauge");
    for (outcome, n) in outcomes {
        let _ = writeln!(out, "nacre_monitor_windows{{outcome=\"{outcome}\"}} {n}");
    }
    let _ =
        writeln!(out, "# HELP nacre_monitor_epsilon_spent_today Privacy budget spent in the current UTC day");
    let _ = writeln!(out, "# TYPE nacre_monitor_epsilon_spent_today gauge");
    let _ = writeln!(out, "nacre_monitor_epsilon_spent_today {}", report.privacy.epsilon_spent_today);
    let _ = writeln!(out, "# HELP nacre_monitor_epsilon_per_day The manifest's daily privacy budget");
    let _ = writeln!(out, "# TYPE nacre_monitor_epsilon_per_day gauge");
    let _ = writeln!(out, "nacre_monitor_epsilon_per_day {}", report.privacy.epsilon_per_day);
    let latest = report.windows.iter().rev().find_map(|w| w.release.as_ref().map(|r| (w, r)));
    if let Some((w, r)) = latest {
        let _ = writeln!(out, "# HELP nacre_monitor_latest_window Index of the latest released window");
        let _ = writeln!(out, "# TYPE nacre_monitor_latest_window gauge");
        let _ = writeln!(out, "nacre_monitor_latest_window {}", w.index);
        let _ = writeln!(
            out,
            "# HELP nacre_monitor_drifted_features Features past a drift threshold in the latest released window"
        );
        let _ = writeln!(out, "# TYPE nacre_monitor_drifted_features gauge");
        let _ = writeln!(out, "nacre_monitor_drifted_features {}", r.drifted.len());
        let _ = writeln!(
            out,
            "# HELP nacre_monitor_psi PSI of each feature in the latest released window (noised counts)"
        );
        let _ = writeln!(out, "# TYPE nacre_monitor_psi gauge");
        for f in &r.features {
            let _ = writeln!(out, "nacre_monitor_psi{{feature=\"{}\"}} {}", escape(&f.name), f.distances.psi);
        }
        let _ = writeln!(
            out,
            "# HELP nacre_monitor_drift Whether each feature passed a threshold in the latest released window"
        );
        let _ = writeln!(out, "# TYPE nacre_monitor_drift gauge");
        for f in &r.features {
            let _ =
                writeln!(out, "nacre_monitor_drift{{feature=\"{}\"}} {}", escape(&f.name), u8::from(f.drift));
        }
    }
    out
}

/// A label value in Prometheus' text format (the manifest's feature names are the owner's).
fn escape(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}
