//! The benchmark's results: figures per seed, medians and worsts, targets, and the two ways of
//! printing them.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

/// Which way a figure is better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Higher,
    Lower,
}

/// One measured quantity over the seeds.
#[derive(Clone, Debug, Serialize)]
pub struct Figure {
    pub name: String,
    pub better: Better,
    pub per_seed: Vec<f64>,
    pub median: f64,
    /// The least favourable seed (min when higher is better, max otherwise).
    pub worst: f64,
}

impl Figure {
    pub fn new(name: &str, better: Better, per_seed: Vec<f64>) -> Self {
        let mut v: Vec<f64> = per_seed.clone();
        v.sort_by(f64::total_cmp);
        let median = if v.is_empty() { f64::NAN } else { v[(v.len() - 1) / 2] };
        let worst = match better {
            Better::Higher => v.first().copied().unwrap_or(f64::NAN),
            Better::Lower => v.last().copied().unwrap_or(f64::NAN),
        };
        Figure { name: name.to_owned(), better, per_seed, median, worst }
    }
}

/// A bound on a figure, judged on its worst seed.
#[derive(Clone, Debug, Serialize)]
pub struct TargetCheck {
    pub name: String,
    pub figure: String,
    /// `"<="` or `">="`.
    pub op: &'static str,
    pub bound: f64,
    pub value: f64,
    pub pass: bool,
}

/// What a row is in the matrix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Drove's algorithm: must meet every target.
    Candidate,
    /// The physical best (knows the downstream): shown for reference, not judged.
    Oracle,
    /// A known-imperfect algorithm: must fail the targets listed in `expected_failures`.
    Baseline,
}

/// One cell × algorithm of the matrix, over all seeds.
#[derive(Clone, Debug, Serialize)]
pub struct Row {
    pub scenario: String,
    pub cell: String,
    pub algorithm: String,
    pub role: Role,
    pub seeds: Vec<u64>,
    pub settings: serde_json::Value,
    pub figures: Vec<Figure>,
    pub targets: Vec<TargetCheck>,
    /// Targets this baseline is known to fail (docs/FLOW.md §3.4, §5.1): proof the benchmark discriminates.
    pub expected_failures: Vec<String>,
    /// Candidate: every target passed. Baseline: every expected failure happened. Oracle: true.
    pub as_expected: bool,
}

impl Row {
    pub fn figure(&self, name: &str) -> Option<&Figure> {
        self.figures.iter().find(|f| f.name == name)
    }

    pub fn target(&self, name: &str) -> Option<&TargetCheck> {
        self.targets.iter().find(|t| t.name == name)
    }

    pub(crate) fn judge(&mut self) {
        self.as_expected = match self.role {
            Role::Candidate => self.targets.iter().all(|t| t.pass),
            Role::Oracle => true,
            Role::Baseline => self
                .expected_failures
                .iter()
                .all(|name| self.targets.iter().any(|t| &t.name == name && !t.pass)),
        };
    }
}

/// Everything `drove bench flow` prints.
#[derive(Clone, Debug, Serialize)]
pub struct FlowReport {
    pub seeds: Vec<u64>,
    pub duration_s: f64,
    pub warmup_s: f64,
    pub rows: Vec<Row>,
}

fn fmt_num(x: f64) -> String {
    if x.is_nan() {
        "-".into()
    } else if x.is_infinite() {
        "inf".into()
    } else if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 10.0 {
        format!("{x:.1}")
    } else if x != 0.0 && x.abs() < 0.1 {
        format!("{x:.3}")
    } else {
        format!("{x:.2}")
    }
}

impl FlowReport {
    /// Candidates met every target and baselines failed where expected.
    pub fn all_as_expected(&self) -> bool {
        self.rows.iter().all(|r| r.as_expected)
    }

    /// Rows of one scenario (`"A"`, `"B"`, `"C"`).
    pub fn scenario(&self, s: &str) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(move |r| r.scenario == s)
    }

    pub fn row(&self, scenario: &str, cell: &str, algorithm: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.scenario == scenario && r.cell == cell && r.algorithm == algorithm)
    }

    /// One JSON object per row.
    pub fn to_json_lines(&self) -> String {
        let mut out = String::new();
        for r in &self.rows {
            let mut v = serde_json::to_value(r).unwrap_or(serde_json::Value::Null);
            if let Some(o) = v.as_object_mut() {
                o.insert("duration_s".into(), self.duration_s.into());
                o.insert("warmup_s".into(), self.warmup_s.into());
            }
            out.push_str(&v.to_string());
            out.push('\n');
        }
        out
    }

    /// A table for people: per scenario, one line per cell × algorithm, each figure as
    /// `median/worst` over the seeds, and the verdict.
    pub fn to_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "drove bench flow: {} seeds ({:?}), {} s virtual per run, first {} s discarded; figures are median/worst",
            self.seeds.len(),
            self.seeds,
            self.duration_s,
            self.warmup_s
        );
        let mut scenarios: Vec<&str> = self.rows.iter().map(|r| r.scenario.as_str()).collect();
        scenarios.dedup();
        for s in scenarios {
            let _ = writeln!(out, "\nScenario {s}: {}", scenario_title(s));
            let rows: Vec<&Row> = self.scenario(s).collect();
            // Consecutive rows measuring the same figures share a table.
            let mut start = 0;
            while start < rows.len() {
                let sig = |r: &Row| r.figures.iter().map(|f| f.name.clone()).collect::<Vec<_>>();
                let cols = sig(rows[start]);
                let end = (start..rows.len()).find(|&i| sig(rows[i]) != cols).unwrap_or(rows.len());
                write_table(&mut out, &rows[start..end], &cols);
                start = end;
            }
        }
        let mut by_role: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
        for r in &self.rows {
            let k = match r.role {
                Role::Candidate => "candidate rows meeting every target",
                Role::Baseline => "baseline rows failing where expected",
                Role::Oracle => "oracle rows (reference)",
            };
            let e = by_role.entry(k).or_default();
            e.1 += 1;
            if r.as_expected {
                e.0 += 1;
            }
        }
        let _ = writeln!(out);
        for (k, (ok, n)) in by_role {
            let _ = writeln!(out, "{k}: {ok}/{n}");
        }
        out
    }
}

fn write_table(out: &mut String, rows: &[&Row], cols: &[String]) {
    let mut table: Vec<Vec<String>> = Vec::new();
    let mut head = vec!["cell".to_owned(), "algorithm".to_owned()];
    head.extend(cols.iter().cloned());
    head.push("verdict".into());
    table.push(head);
    for r in rows {
        let mut line = vec![r.cell.clone(), r.algorithm.clone()];
        for c in cols {
            line.push(r.figure(c).map_or(String::new(), |f| {
                if (f.median - f.worst).abs() < 1e-9 || (f.median.is_nan() && f.worst.is_nan()) {
                    fmt_num(f.median)
                } else {
                    format!("{}/{}", fmt_num(f.median), fmt_num(f.worst))
                }
            }));
        }
        line.push(verdict(r));
        table.push(line);
    }
    let widths: Vec<usize> =
        (0..table[0].len()).map(|i| table.iter().map(|l| l[i].chars().count()).max().unwrap_or(0)).collect();
    let _ = writeln!(out);
    for (n, line) in table.iter().enumerate() {
        let cells: Vec<String> =
            line.iter().enumerate().map(|(i, c)| format!("{c:<w$}", w = widths[i])).collect();
        let _ = writeln!(out, "{}", cells.join("  ").trim_end());
        if n == 0 {
            let total: usize = widths.iter().sum::<usize>() + 2 * (widths.len() - 1);
            let _ = writeln!(out, "{}", "-".repeat(total));
        }
    }
}

fn scenario_title(s: &str) -> &'static str {
    match s {
        "A" => {
            "adaptive concurrency (goodput = completions / capacity; p50x, p99x = latency / unloaded at concurrency 1)"
        }
        "B" => "provider rate limit, 429 + Retry-After (accepted / R; 429 share of calls)",
        "C" => {
            "online vs offline on one downstream (online p99 / online alone; offline / capacity left over)"
        }
        _ => "",
    }
}

fn verdict(r: &Row) -> String {
    let failed: Vec<&str> = r.targets.iter().filter(|t| !t.pass).map(|t| t.name.as_str()).collect();
    match r.role {
        Role::Candidate if failed.is_empty() => "PASS".into(),
        Role::Candidate => format!("FAIL: {}", failed.join(", ")),
        Role::Oracle if failed.is_empty() => "(ref) pass".into(),
        Role::Oracle => format!("(ref) misses {}", failed.join(", ")),
        Role::Baseline => {
            let missing: Vec<&str> =
                r.expected_failures.iter().map(String::as_str).filter(|e| !failed.contains(e)).collect();
            if !missing.is_empty() {
                format!("NOT AS EXPECTED: passes {}", missing.join(", "))
            } else if r.expected_failures.is_empty() && failed.is_empty() {
                "passes".into()
            } else if r.expected_failures.is_empty() {
                format!("fails {}", failed.join(", "))
            } else {
                format!("fails as expected: {}", failed.join(", "))
            }
        }
    }
}
