//! The report as Markdown, as a self-contained HTML page, and as JSON.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
};

use super::{ControlRow, Document, PolicyReport};
use crate::crd::ControlResult;

/// JSON: the [`Document`] as it is.
pub fn json(document: &Document) -> String {
    let mut text = serde_json::to_string_pretty(document).unwrap_or_default();
    text.push('\n');
    text
}

fn source_line(document: &Document) -> String {
    match (document.source.as_str(), &document.file) {
        ("cluster", _) => "the cluster: policy status, offenders from a live read".into(),
        ("check", Some(f)) => format!("`onus check --output json` file {f} (offline)"),
        (_, Some(f)) => format!("exported policy status {f}"),
        (s, None) => s.to_string(),
    }
}

/// Markdown cells cannot hold `|` or line breaks.
fn cell(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

fn result_text(c: &ControlRow) -> String {
    format!("{:?}", c.result)
}

/// Markdown.
pub fn markdown(document: &Document) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "# onus responsibility report\n");
    let _ = writeln!(out, "- Generated: {}", document.generated_at);
    let _ = writeln!(out, "- Source: {}", source_line(document));
    if let Some(c) = &document.cluster {
        let _ = writeln!(out, "- Cluster: {} (Kubernetes {})", c.server, c.version);
        let _ = writeln!(
            out,
            "- Cluster id (kube-system namespace UID): {}",
            c.kube_system_uid
        );
    }
    let _ = writeln!(out, "- Policies: {}", document.policies.len());
    for p in &document.policies {
        policy_markdown(&mut out, p);
    }
    out
}

fn policy_markdown(out: &mut String, p: &PolicyReport) {
    let _ = writeln!(out, "\n## Policy {}\n", p.name);
    let _ = writeln!(
        out,
        "- Service model: {:?}; mode: {:?}; Pod Security version: {}; namespaces governed: {}",
        p.service_model,
        p.mode,
        p.pod_security_version.as_deref().unwrap_or("unknown"),
        p.namespaces
            .map_or("unknown".to_string(), |n| n.to_string())
    );
    let failing: Vec<&str> = p
        .controls
        .iter()
        .filter(|c| c.result == ControlResult::Fail)
        .map(|c| c.id.as_str())
        .collect();
    let _ = writeln!(
        out,
        "- Verdict: {}",
        if p.compliant {
            "compliant: every customer-owned control passes".to_string()
        } else if failing.is_empty() {
            "not compliant".to_string()
        } else {
            format!("not compliant: {} fail", failing.join(", "))
        }
    );
    for note in &p.notes {
        let _ = writeln!(out, "- Note: {note}");
    }
    let _ = writeln!(out, "\n### Responsibility matrix\n");
    let _ = writeln!(
        out,
        "| Control | Title | Owner | Owner from | Mode | Result | Checked at | Violations | Excepted | Frameworks |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---:|---:|---|");
    for c in &p.controls {
        let from = match &c.owner_reason {
            Some(reason) => format!("override: {}", cell(reason)),
            None => format!("{:?}", c.owner_source),
        };
        let _ = writeln!(
            out,
            "| {} | {} | {:?} | {} | {:?} | {} | {} | {} | {} | {} |",
            c.id,
            cell(&c.title),
            c.owner,
            from,
            c.mode,
            result_text(c),
            c.checked_at(),
            c.violations,
            c.excepted,
            cell(&c.frameworks.join(", "))
        );
    }
    let with_offenders: Vec<&ControlRow> = p
        .controls
        .iter()
        .filter(|c| !c.offenders.is_empty())
        .collect();
    if !with_offenders.is_empty() {
        let _ = writeln!(out, "\n### Offenders\n");
        for c in with_offenders {
            let _ = writeln!(
                out,
                "**{}** {} ({:?}, {} of {}{}):\n",
                c.id,
                c.title,
                c.result,
                c.offenders.len(),
                c.violations,
                if c.offenders_complete {
                    ""
                } else {
                    ", a sample"
                }
            );
            for o in &c.offenders {
                match &o.location {
                    Some(at) => {
                        let _ = writeln!(out, "- `{}` ({at})", o.object);
                    }
                    None => {
                        let _ = writeln!(out, "- `{}`", o.object);
                    }
                }
            }
            let _ = writeln!(out);
        }
    }
    let _ = writeln!(out, "\n### Exceptions\n");
    if p.exceptions.is_empty() {
        let _ = writeln!(out, "None.");
    } else {
        let _ = writeln!(
            out,
            "| Controls | Namespaces | Resources | Reason | Expires | Valid |"
        );
        let _ = writeln!(out, "|---|---|---|---|---|---|");
        for e in &p.exceptions {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} | {} | {} |",
                e.controls.join(", "),
                if e.namespaces.is_empty() {
                    "all governed".to_string()
                } else {
                    e.namespaces.join(", ")
                },
                if e.resources.is_empty() {
                    "all".to_string()
                } else {
                    e.resources.join(", ")
                },
                cell(&e.reason),
                e.expires.as_deref().unwrap_or("never"),
                if e.valid { "yes" } else { "no: expired" }
            );
        }
    }
    let _ = writeln!(out, "\n### Responsibility gaps\n");
    if p.gaps.is_empty() {
        let _ = writeln!(
            out,
            "None: every customer-owned control is owned and enabled."
        );
    } else {
        for g in &p.gaps {
            let _ = writeln!(out, "- {} {}: {}", g.control, g.reason, g.message);
        }
    }
    if let Some(e) = &p.enforcement {
        let _ = writeln!(out, "\n### Enforcement\n");
        if let Some(c) = &e.condition {
            let _ = writeln!(out, "- Enforced: {}", cell(c));
        }
        if let Some(r) = &e.remediation {
            for line in remediation_lines(r) {
                let _ = writeln!(out, "- {}", cell(&line));
            }
        }
    }
}

/// Status's remediation in sentences: what is pending (or would be applied), what waits.
fn remediation_lines(r: &serde_json::Value) -> Vec<String> {
    let n = |field: &str| r[field].as_u64().unwrap_or(0);
    let what = match r["kind"].as_str() {
        Some("WouldApply") => "would apply (Audit: a dry run)",
        _ => "still to apply",
    };
    let mut lines = vec![format!(
        "Safe remediations {what}: onus-default-deny in {} namespaces, Pod Security labels in {}, \
         default ServiceAccount token in {}",
        n("networkPolicies"),
        n("podSecurityLabels"),
        n("serviceAccounts")
    )];
    for (field, label) in [
        ("enforceWaiting", "Waits (enforce label)"),
        ("networkPolicyWaiting", "Waits (default-deny)"),
    ] {
        for w in r[field].as_array().into_iter().flatten() {
            lines.push(format!("{label}: {}", w.as_str().unwrap_or_default()));
        }
    }
    lines
}

fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border:1px solid #bbb;padding:3px 6px;text-align:left;vertical-align:top}
th{background:#eee}
.Pass{background:#c8e6c9}.Fail{background:#ffcdd2}.Excepted{background:#fff9c4}
.ProviderOwned,.NotObservable,.Disabled{background:#eceff1;color:#555}
.at-prevented{font-weight:600;color:#1b5e20}.at-warned{color:#e65100}
.owner-Customer{color:#0d47a1;font-weight:600}.owner-Provider{color:#6a1b9a}
.owner-Shared{color:#e65100}
.bar{display:inline-block;height:12px}.bar.pass{background:#43a047}.bar.fail{background:#e53935}
.bar.other{background:#b0bec5}
td.cell-fail{background:#ef9a9a;text-align:center}td.cell-pass{background:#e8f5e9}
td.cell-na{background:#f5f5f5}
@media print{body{margin:0}section{page-break-inside:avoid}}";

/// A self-contained HTML page (no scripts, no fetches): per policy the matrix of controls
/// × namespaces (each failing cell: the control's offenders in that namespace), owners
/// coloured, a bar per family of passing and failing controls, then the offender,
/// exception and gap lists.
pub fn html(document: &Document) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>onus responsibility report</title><style>{STYLE}</style></head><body>\n"
    );
    let _ = writeln!(out, "<h1>onus responsibility report</h1><ul>");
    let _ = writeln!(
        out,
        "<li>Generated: <span id=\"generated\">{}</span></li><li>Source: {}</li>",
        html_escape(&document.generated_at),
        html_escape(&source_line(document))
    );
    if let Some(c) = &document.cluster {
        let _ = writeln!(
            out,
            "<li>Cluster: <span id=\"server\">{}</span> (Kubernetes {})</li>\
             <li>Cluster id (kube-system namespace UID): <span id=\"cluster-id\">{}</span></li>",
            html_escape(&c.server),
            html_escape(&c.version),
            html_escape(&c.kube_system_uid)
        );
    }
    let _ = writeln!(out, "</ul>");
    for p in &document.policies {
        policy_html(&mut out, p);
    }
    out.push_str("</body></html>\n");
    out
}

fn policy_html(out: &mut String, p: &PolicyReport) {
    let _ = writeln!(
        out,
        "<section class=\"policy\" data-policy=\"{name}\"><h2>Policy {name}</h2>\
         <p>Service model {:?}, mode {:?}, Pod Security version {}, namespaces governed: {}. \
         <strong>{}</strong></p>",
        p.service_model,
        p.mode,
        html_escape(p.pod_security_version.as_deref().unwrap_or("unknown")),
        p.namespaces.map_or("unknown".into(), |n| n.to_string()),
        if p.compliant {
            "Compliant"
        } else {
            "Not compliant"
        },
        name = html_escape(&p.name),
    );
    for note in &p.notes {
        let _ = writeln!(out, "<p class=\"note\">Note: {}</p>", html_escape(note));
    }
    // Pass/fail per family.
    let mut families: BTreeMap<&str, (usize, usize, usize)> = BTreeMap::new();
    for c in &p.controls {
        let f = families.entry(c.family.as_str()).or_default();
        match c.result {
            ControlResult::Pass => f.0 += 1,
            ControlResult::Fail => f.1 += 1,
            _ => f.2 += 1,
        }
    }
    let _ = writeln!(
        out,
        "<h3>Controls per family</h3><table class=\"families\"><tr><th>Family</th><th>Pass</th>\
         <th>Fail</th><th>Other</th><th></th></tr>"
    );
    for (family, (pass, fail, other)) in &families {
        let _ = writeln!(
            out,
            "<tr><td>{family}</td><td>{pass}</td><td>{fail}</td><td>{other}</td><td>\
             <span class=\"bar pass\" style=\"width:{}px\"></span>\
             <span class=\"bar fail\" style=\"width:{}px\"></span>\
             <span class=\"bar other\" style=\"width:{}px\"></span></td></tr>",
            pass * 16,
            fail * 16,
            other * 16
        );
    }
    let _ = writeln!(out, "</table>");
    // The matrix.
    let namespaces: BTreeSet<&str> = p
        .controls
        .iter()
        .flat_map(|c| c.offenders.iter())
        .filter_map(|o| o.namespace.as_deref())
        .collect();
    let cluster_scoped = p
        .controls
        .iter()
        .flat_map(|c| c.offenders.iter())
        .any(|o| o.namespace.is_none());
    let _ = write!(
        out,
        "<h3>Responsibility matrix</h3><table class=\"matrix\"><tr><th>Control</th><th>Title</th>\
         <th>Owner</th><th>Owner from</th><th>Mode</th><th>Result</th><th>Checked at</th>\
         <th>Violations</th><th>Excepted</th><th>Frameworks</th>"
    );
    for ns in &namespaces {
        let _ = write!(out, "<th class=\"ns\">{}</th>", html_escape(ns));
    }
    if cluster_scoped {
        let _ = write!(out, "<th class=\"ns\">(cluster)</th>");
    }
    let _ = writeln!(out, "</tr>");
    for c in &p.controls {
        let from = match &c.owner_reason {
            Some(reason) => format!("override: {}", html_escape(reason)),
            None => format!("{:?}", c.owner_source),
        };
        let _ = write!(
            out,
            "<tr data-control=\"{id}\" data-result=\"{result:?}\"><td>{id}</td><td>{}</td>\
             <td class=\"owner-{owner:?}\">{owner:?}</td><td>{from}</td><td>{:?}</td>\
             <td class=\"{result:?}\">{result:?}</td><td class=\"at-{at}\">{at}</td><td>{}</td>\
             <td>{}</td><td>{}</td>",
            html_escape(&c.title),
            c.mode,
            c.violations,
            c.excepted,
            html_escape(&c.frameworks.join(", ")),
            id = c.id,
            at = c.checked_at(),
            owner = c.owner,
            result = c.result,
        );
        let columns = namespaces
            .iter()
            .map(|ns| Some(*ns))
            .chain(cluster_scoped.then_some(None));
        for ns in columns {
            let n = c
                .offenders
                .iter()
                .filter(|o| o.namespace.as_deref() == ns)
                .count();
            let (class, text) = match (c.result, n) {
                (ControlResult::Fail, n) if n > 0 => ("cell-fail", n.to_string()),
                (ControlResult::Pass | ControlResult::Fail, _) => ("cell-pass", String::new()),
                (_, 0) => ("cell-na", String::new()),
                (_, n) => ("cell-na", n.to_string()),
            };
            let _ = write!(out, "<td class=\"{class}\">{text}</td>");
        }
        let _ = writeln!(out, "</tr>");
    }
    let _ = writeln!(out, "</table>");
    let with_offenders: Vec<&ControlRow> = p
        .controls
        .iter()
        .filter(|c| !c.offenders.is_empty())
        .collect();
    if !with_offenders.is_empty() {
        let _ = writeln!(out, "<h3>Offenders</h3>");
        for c in with_offenders {
            let _ = writeln!(
                out,
                "<p><strong>{}</strong> {} ({:?}, {} of {}{}):</p><ul class=\"offenders\" data-control=\"{}\">",
                c.id,
                html_escape(&c.title),
                c.result,
                c.offenders.len(),
                c.violations,
                if c.offenders_complete {
                    ""
                } else {
                    ", a sample"
                },
                c.id
            );
            for o in &c.offenders {
                let at = o
                    .location
                    .as_ref()
                    .map_or(String::new(), |l| format!(" ({})", html_escape(l)));
                let _ = writeln!(out, "<li><code>{}</code>{at}</li>", html_escape(&o.object));
            }
            let _ = writeln!(out, "</ul>");
        }
    }
    let _ = writeln!(out, "<h3>Exceptions</h3>");
    if p.exceptions.is_empty() {
        let _ = writeln!(out, "<p>None.</p>");
    } else {
        let _ = writeln!(
            out,
            "<table class=\"exceptions\"><tr><th>Controls</th><th>Namespaces</th><th>Resources</th>\
             <th>Reason</th><th>Expires</th><th>Valid</th></tr>"
        );
        for e in &p.exceptions {
            let _ = writeln!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td></tr>",
                html_escape(&e.controls.join(", ")),
                html_escape(&if e.namespaces.is_empty() {
                    "all governed".to_string()
                } else {
                    e.namespaces.join(", ")
                }),
                html_escape(&if e.resources.is_empty() {
                    "all".to_string()
                } else {
                    e.resources.join(", ")
                }),
                html_escape(&e.reason),
                html_escape(e.expires.as_deref().unwrap_or("never")),
                if e.valid { "Pass" } else { "Fail" },
                if e.valid { "yes" } else { "no: expired" }
            );
        }
        let _ = writeln!(out, "</table>");
    }
    let _ = writeln!(out, "<h3>Responsibility gaps</h3>");
    if p.gaps.is_empty() {
        let _ = writeln!(
            out,
            "<p>None: every customer-owned control is owned and enabled.</p>"
        );
    } else {
        let _ = writeln!(out, "<ul class=\"gaps\">");
        for g in &p.gaps {
            let _ = writeln!(
                out,
                "<li>{} {}: {}</li>",
                html_escape(&g.control),
                html_escape(&g.reason),
                html_escape(&g.message)
            );
        }
        let _ = writeln!(out, "</ul>");
    }
    if let Some(e) = &p.enforcement {
        let _ = writeln!(out, "<h3>Enforcement</h3><ul>");
        if let Some(c) = &e.condition {
            let _ = writeln!(out, "<li>Enforced: {}</li>", html_escape(c));
        }
        if let Some(r) = &e.remediation {
            for line in remediation_lines(r) {
                let _ = writeln!(out, "<li>{}</li>", html_escape(&line));
            }
        }
        let _ = writeln!(out, "</ul>");
    }
    let _ = writeln!(out, "</section>");
}
