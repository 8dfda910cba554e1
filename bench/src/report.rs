//! The results table: one row per figure, each run's value, the goal and whether it is met.

use std::time::Duration;

use crate::{
    fixture::Size,
    probes::{Latencies, quantile},
};

/// A figure's goal (issue 9), checked against the median of the runs.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Goal {
    None,
    /// At most this many seconds.
    MaxSeconds(f64),
    /// At most this many MiB.
    MaxMib(f64),
    /// p99 at most this many milliseconds.
    MaxMs(f64),
    /// At most this many milliseconds (a mean).
    MaxMsPlain(f64),
    /// A peak at most 1.3 × steady: this many MiB.
    PeakOf(f64),
    Zero,
}

impl Goal {
    pub fn cold_start(size: Size) -> Goal {
        match size {
            Size::S => Goal::None,
            Size::M => Goal::MaxSeconds(2.5),
            Size::L => Goal::MaxSeconds(12.0),
        }
    }

    pub fn rss(size: Size) -> Goal {
        match size {
            Size::S => Goal::None,
            Size::M => Goal::MaxMib(48.0),
            Size::L => Goal::MaxMib(160.0),
        }
    }

    fn text(self) -> String {
        match self {
            Goal::None => String::new(),
            Goal::MaxSeconds(s) => format!("≤ {s} s"),
            Goal::MaxMib(m) => format!("≤ {m} MiB"),
            Goal::MaxMs(ms) => format!("p99 ≤ {ms} ms"),
            Goal::MaxMsPlain(ms) => format!("≤ {ms} ms"),
            Goal::PeakOf(m) => format!("≤ 1.3 × steady ({m:.0} MiB)"),
            Goal::Zero => "0".into(),
        }
    }

    /// Whether `value` (in the row's unit; for latencies the p99) meets the goal.
    fn met(self, value: f64) -> Option<bool> {
        match self {
            Goal::None => None,
            Goal::MaxSeconds(x)
            | Goal::MaxMib(x)
            | Goal::MaxMs(x)
            | Goal::MaxMsPlain(x)
            | Goal::PeakOf(x) => Some(value <= x),
            Goal::Zero => Some(value == 0.0),
        }
    }

    /// Timing and size goals; `Zero` is a correctness goal, asserted in `--quick` too.
    fn is_timing(self) -> bool {
        !matches!(self, Goal::Zero | Goal::None)
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Unit {
    Seconds,
    Mib,
    Number,
    /// p50 / p95 / p99 in ms; the goal looks at p99.
    Latency,
    Text,
}

struct Row {
    figure: String,
    goal: Goal,
    unit: Unit,
    /// One per run; for latencies the p99 (the others are in `latency`).
    values: Vec<f64>,
    latency: Vec<[f64; 3]>,
    texts: Vec<String>,
}

/// Every figure of every run.
pub struct Report {
    size: Size,
    quick: bool,
    rows: Vec<Row>,
}

impl Report {
    pub fn new(size: Size, quick: bool) -> Self {
        Report {
            size,
            quick,
            rows: Vec::new(),
        }
    }

    fn row(&mut self, figure: &str, goal: Goal, unit: Unit) -> &mut Row {
        let i = match self.rows.iter().position(|r| r.figure == figure) {
            Some(i) => i,
            None => {
                self.rows.push(Row {
                    figure: figure.into(),
                    goal,
                    unit,
                    values: Vec::new(),
                    latency: Vec::new(),
                    texts: Vec::new(),
                });
                self.rows.len() - 1
            }
        };
        let row = &mut self.rows[i];
        // A goal relative to this run's figure (the peak) follows the latest run.
        row.goal = goal;
        row
    }

    pub fn seconds(&mut self, figure: &str, goal: Goal, d: Duration) {
        self.row(figure, goal, Unit::Seconds)
            .values
            .push(d.as_secs_f64());
    }

    pub fn mib(&mut self, figure: &str, goal: Goal, mib: f64) {
        self.row(figure, goal, Unit::Mib).values.push(mib);
    }

    pub fn number(&mut self, figure: &str, goal: Goal, n: f64) {
        self.row(figure, goal, Unit::Number).values.push(n);
    }

    pub fn text(&mut self, figure: &str, goal: Goal, text: String) {
        self.row(figure, goal, Unit::Text).texts.push(text);
    }

    /// A probe batch's latencies (`first`: until the first policy shows it, else every one).
    /// A batch that timed out shows how far it got, and misses any goal.
    pub fn latency(&mut self, figure: &str, goal: Goal, lat: &Latencies, first: bool) {
        let samples = if first { &lat.first } else { &lat.all };
        self.latency_of(figure, goal, lat, samples);
    }

    /// A probe batch's latencies counted from the create request being sent (the probe's own
    /// admission and storage included), until the first policy shows it.
    pub fn latency_from_request(&mut self, figure: &str, lat: &Latencies) {
        self.latency_of(figure, Goal::None, lat, &lat.sent_to_first);
    }

    fn latency_of(&mut self, figure: &str, goal: Goal, lat: &Latencies, samples: &[Duration]) {
        let ms = |q| quantile(samples, q).as_secs_f64() * 1000.0;
        let mut q = [ms(0.50), ms(0.95), ms(0.99)];
        if lat.timed_out {
            q[2] = f64::INFINITY;
        }
        let row = self.row(figure, goal, Unit::Latency);
        row.values.push(q[2]);
        row.latency.push(q);
        row.texts.push(if lat.timed_out {
            format!(
                "{} probes, the last not seen within {} s",
                samples.len(),
                lat.probe_timeout.as_secs()
            )
        } else {
            format!("{} probes", samples.len())
        });
    }

    /// Whether every asserted goal is met (timing goals only outside `--quick`).
    pub fn goals_met(&self) -> bool {
        self.rows.iter().all(|r| {
            if self.quick && r.goal.is_timing() {
                return true;
            }
            r.values.is_empty() || r.goal.met(median(&r.values)) != Some(false)
        })
    }

    pub fn markdown(&self, header: &str) -> String {
        let mut out = format!("### make bench, size {}\n\n{header}\n\n", self.size);
        out.push_str("| figure | value | goal |\n|---|---|---|\n");
        for r in &self.rows {
            let value = match r.unit {
                Unit::Text => {
                    let mut texts = r.texts.clone();
                    texts.dedup();
                    texts.join(" · ")
                }
                Unit::Latency => {
                    // The run with the median p99, shown whole.
                    let mut order: Vec<usize> = (0..r.latency.len()).collect();
                    order.sort_by(|&a, &b| r.latency[a][2].total_cmp(&r.latency[b][2]));
                    let m = order[order.len() / 2];
                    let mid = r.latency[m];
                    let mut s = format!(
                        "p50 {} ms, p95 {} ms, p99 {} ms ({})",
                        fmt(mid[0]),
                        fmt(mid[1]),
                        fmt(mid[2]),
                        r.texts[m]
                    );
                    if r.latency.len() > 1 {
                        s.push_str(&format!(
                            " (p99 over runs: {})",
                            spread(&r.values, |v| format!("{} ms", fmt(v)))
                        ));
                    }
                    s
                }
                Unit::Seconds => spread(&r.values, |v| format!("{v:.2} s")),
                Unit::Mib => spread(&r.values, |v| format!("{v:.1} MiB")),
                Unit::Number => spread(&r.values, fmt),
            };
            let goal = match (r.goal, r.values.is_empty()) {
                (Goal::None, _) | (_, true) => r.goal.text(),
                (g, false) => {
                    let verdict = match g.met(median(&r.values)) {
                        Some(true) => "met",
                        _ if self.quick && g.is_timing() => "missed (not asserted in --quick)",
                        _ => "**missed**",
                    };
                    format!("{} — {verdict}", g.text())
                }
            };
            out.push_str(&format!("| {} | {value} | {goal} |\n", r.figure));
        }
        out
    }
}

fn fmt(v: f64) -> String {
    if v.is_infinite() {
        "∞".into()
    } else if v == 0.0 {
        "0".into()
    } else if v.abs() >= 100.0 {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One value, or min / median / max.
fn spread(values: &[f64], show: impl Fn(f64) -> String) -> String {
    if values.len() == 1 {
        return show(values[0]);
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    format!(
        "{} / {} / {}",
        show(v[0]),
        show(median(&v)),
        show(v[v.len() - 1])
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_show_as_min_median_max_and_goals_judge_the_median() {
        let mut r = Report::new(Size::M, false);
        for s in [3.0, 1.0, 2.0] {
            r.seconds("cold", Goal::MaxSeconds(2.5), Duration::from_secs_f64(s));
        }
        let md = r.markdown("h");
        assert!(
            md.contains("| cold | 1.00 s / 2.00 s / 3.00 s | ≤ 2.5 s — met |"),
            "{md}"
        );
        assert!(r.goals_met());
        r.number("writes", Goal::Zero, 1.0);
        assert!(!r.goals_met());
    }

    #[test]
    fn quick_runs_assert_no_timing_goal_but_still_the_zero_ones() {
        let mut r = Report::new(Size::M, true);
        r.mib("rss", Goal::MaxMib(48.0), 300.0);
        assert!(r.goals_met());
        assert!(r.markdown("h").contains("not asserted"));
        r.number("writes", Goal::Zero, 2.0);
        assert!(!r.goals_met());
    }
}
