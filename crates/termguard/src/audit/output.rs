//! The audit's report as a terminal table, as JSON and as SARIF 2.1.0 (for CI code scanning).

use super::{Finding, Report, Severity};
use serde_json::{json, Value};
use std::fmt::Write;

/// How to print the report (`-o`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// A table for people.
    Table,
    /// The report as one JSON object.
    Json,
    /// SARIF 2.1.0, for code-scanning uploads.
    Sarif,
}

/// Renders the report.
pub fn render(report: &Report, format: Format) -> String {
    match format {
        Format::Table => table(report),
        Format::Json => serde_json::to_string_pretty(report).unwrap_or_default() + "\n",
        Format::Sarif => serde_json::to_string_pretty(&sarif(report)).unwrap_or_default() + "\n",
    }
}

/// Wraps `text`, which starts at column `start`, at `width` columns; each line after the
/// first is indented by `indent`.
fn wrap(text: &str, width: usize, start: usize, indent: &str) -> String {
    let mut out = String::new();
    let mut col = start;
    let mut fresh = true;
    for word in text.split_whitespace() {
        if !fresh && col + 1 + word.len() > width {
            out.push('\n');
            out.push_str(indent);
            col = indent.len();
            fresh = true;
        }
        if !fresh {
            out.push(' ');
            col += 1;
        }
        out.push_str(word);
        col += word.len();
        fresh = false;
    }
    out
}

fn table(report: &Report) -> String {
    let mut out = String::new();
    let groups: Vec<&str> = report.groups.iter().map(|g| g.group.as_str()).collect();
    let _ = writeln!(
        out,
        "Auto Scaling groups audited: {}",
        if groups.is_empty() {
            "none found".to_string()
        } else {
            groups.join(", ")
        }
    );
    for u in &report.unreadable {
        let _ = writeln!(out, "could not read: {u}");
    }
    out.push('\n');
    if report.findings.is_empty() {
        out.push_str("No findings.\n");
    } else {
        let sev = report
            .findings
            .iter()
            .map(|f| f.severity.as_str().len())
            .max()
            .unwrap_or(8)
            .max(8);
        let res = report
            .findings
            .iter()
            .map(|f| f.resource.len())
            .max()
            .unwrap_or(8)
            .max(8);
        let _ = writeln!(out, "{:sev$}  {:res$}  FINDING", "SEVERITY", "RESOURCE");
        let indent = " ".repeat(sev + res + 4);
        for f in &report.findings {
            let _ = writeln!(
                out,
                "{:sev$}  {:res$}  {}\n{indent}{}\n{indent}fix: {}",
                f.severity.as_str().to_uppercase(),
                f.resource,
                f.id,
                wrap(&f.message, 100, indent.len(), &indent),
                wrap(&f.fix, 100, indent.len() + 5, &format!("{indent}     ")),
            );
        }
    }
    if !report.history.is_empty() {
        let _ = writeln!(
            out,
            "\nHistory (the groups' scaling activities; AWS keeps {} days):",
            super::history::KEPT_DAYS
        );
        for h in &report.history {
            let _ = writeln!(out, "  {}", h.summary());
            for line in h.undrained_lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    out
}

fn level(s: Severity) -> &'static str {
    match s {
        Severity::Critical | Severity::High => "error",
        Severity::Medium => "warning",
        Severity::Low | Severity::Info => "note",
    }
}

/// GitHub code scanning's `security-severity` scale (0–10).
fn security_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "9.5",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "3.0",
        Severity::Info => "0.0",
    }
}

fn sarif(report: &Report) -> Value {
    let mut rules: Vec<&Finding> = Vec::new();
    for f in &report.findings {
        if !rules.iter().any(|r| r.id == f.id) {
            rules.push(f);
        }
    }
    let rules: Vec<Value> = rules
        .iter()
        .map(|f| {
            json!({
                "id": f.id,
                "name": f.id,
                "shortDescription": {"text": f.id.replace('-', " ")},
                "help": {"text": format!("docs/audit.md, rule {}", f.id)},
                "defaultConfiguration": {"level": level(f.severity)},
                "properties": {"security-severity": security_severity(f.severity), "tags": ["termguard", "aws", "kubernetes"]},
            })
        })
        .collect();
    let results: Vec<Value> = report
        .findings
        .iter()
        .map(|f| {
            json!({
                "ruleId": f.id,
                "level": level(f.severity),
                "message": {"text": format!("{}: {}. Fix: {}", f.resource, f.message, f.fix)},
                "locations": [{
                    "physicalLocation": {"artifactLocation": {"uri": f.resource}},
                    "logicalLocations": [{"name": f.resource, "kind": "resource"}],
                }],
                "partialFingerprints": {"termguardFinding/v1": format!("{}:{}", f.id, f.resource)},
                "properties": {"severity": f.severity.as_str()},
            })
        })
        .collect();
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "termguard",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "results": results,
        }],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> Report {
        let mut r = Report {
            findings: vec![
                Finding {
                    id: "queue-without-dead-letter-queue",
                    severity: Severity::Low,
                    resource: "queue/tg".into(),
                    message: "no DLQ".into(),
                    fix: "add one".into(),
                },
                Finding {
                    id: "az-rebalance-without-termination-hook",
                    severity: Severity::Critical,
                    resource: "asg/workers".into(),
                    message: "the incident".into(),
                    fix: "a hook".into(),
                },
            ],
            ..Default::default()
        };
        r.sort();
        r
    }

    #[test]
    fn findings_go_most_severe_first_and_the_worst_sets_the_exit() {
        let r = report();
        assert_eq!(r.findings[0].severity, Severity::Critical);
        assert_eq!(r.worst(), Some(Severity::Critical));
        assert_eq!(Report::default().worst(), None);
    }

    #[test]
    fn the_table_names_each_finding_with_its_fix() {
        let t = render(&report(), Format::Table);
        let crit = t.find("CRITICAL").unwrap_or(usize::MAX);
        let low = t.find("LOW").unwrap_or(0);
        assert!(crit < low, "{t}");
        assert!(
            t.contains("asg/workers  az-rebalance-without-termination-hook"),
            "{t}"
        );
        assert!(t.contains("fix: a hook"), "{t}");
    }

    #[test]
    fn sarif_has_one_rule_per_id_and_one_result_per_finding() {
        let s: Value = serde_json::from_str(&render(&report(), Format::Sarif)).unwrap_or_default();
        assert_eq!(s["version"], "2.1.0");
        let run = &s["runs"][0];
        assert_eq!(
            run["tool"]["driver"]["rules"].as_array().map(Vec::len),
            Some(2)
        );
        assert_eq!(
            run["results"][0]["ruleId"],
            "az-rebalance-without-termination-hook"
        );
        assert_eq!(run["results"][0]["level"], "error");
        assert_eq!(run["results"][1]["level"], "note");
        assert_eq!(
            run["results"][0]["locations"][0]["logicalLocations"][0]["name"],
            "asg/workers"
        );
    }

    #[test]
    fn long_text_wraps_under_its_column() {
        assert_eq!(wrap("aaa bbb ccc ddd", 9, 2, "  "), "aaa bbb\n  ccc ddd");
        // The first line counts from where it starts.
        assert_eq!(wrap("aaa bbb ccc", 9, 4, "  "), "aaa\n  bbb ccc");
        // A word longer than the width stands alone.
        assert_eq!(wrap("a bcdefghijk c", 5, 0, ""), "a\nbcdefghijk\nc");
    }
}
