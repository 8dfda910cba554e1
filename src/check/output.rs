//! `onus check` output: a table for people, JSON for tools.

use std::io::{self, Write};

use serde_json::{Value, json};

use super::{Ingested, Location, Report, cli::PolicySource, load::InputError};
use crate::{
    crd::{ControlResult, ResponsibilityPolicySpec},
    evaluate::level_name,
    podsecurity::Version,
};

/// What the output says besides the controls.
pub struct Context<'a> {
    pub policy: &'a PolicySource,
    pub spec: &'a ResponsibilityPolicySpec,
    pub files: usize,
    pub ingested: &'a Ingested,
    pub errors: &'a [InputError],
    pub exit_code: i32,
}

fn policy_line(context: &Context<'_>) -> String {
    match context.policy {
        PolicySource::Default => format!(
            "built-in default (no --policy): serviceModel {:?}, Pod Security {}, every family enabled",
            context.spec.service_model,
            level_name(context.spec.controls.pod_security.level)
        ),
        PolicySource::File(path) => format!(
            "{path}: serviceModel {:?}, Pod Security {}",
            context.spec.service_model,
            level_name(context.spec.controls.pod_security.level)
        ),
    }
}

fn version_text(version: Version) -> String {
    match version {
        Version::Latest => format!(
            "latest (v1.{}, the newest onus knows)",
            version.effective_minor()
        ),
        Version::Minor(n) => format!("v1.{n}"),
    }
}

fn location_text(object: &str, location: &Location) -> String {
    match location {
        Location::Object(source) => source.to_string(),
        Location::ImpliedBy(source) if object.starts_with("Namespace/") => {
            format!("no Namespace object in the input; first used at {source}")
        }
        Location::ImpliedBy(source) => {
            format!("not in the input; Kubernetes creates it in the namespace of {source}")
        }
        Location::Unknown => "not in the input".into(),
    }
}

fn skipped_text(ingested: &Ingested) -> String {
    let total: usize = ingested.skipped.values().sum();
    if total == 0 {
        return "0 skipped".into();
    }
    let kinds: Vec<String> = ingested
        .skipped
        .iter()
        .map(|(kind, n)| format!("{kind} {n}"))
        .collect();
    format!(
        "{total} skipped (no control reads them: {})",
        kinds.join(", ")
    )
}

/// The table: a header, one row per control with its offenders below, then errors, gaps and
/// the verdict.
pub fn table(out: &mut dyn Write, context: &Context<'_>, report: &Report) -> io::Result<()> {
    let ingested = context.ingested;
    writeln!(
        out,
        "onus check: {} files, {} objects evaluated, {}, {} input errors",
        context.files,
        ingested.evaluated,
        skipped_text(ingested),
        context.errors.len()
    )?;
    writeln!(out, "policy: {}", policy_line(context))?;
    writeln!(
        out,
        "Pod Security version: {}",
        version_text(report.pod_security_version)
    )?;
    writeln!(out, "namespaces evaluated: {}", report.namespaces)?;
    writeln!(out)?;
    writeln!(
        out,
        "{:<8} {:<14} {:<9} {:>10}  TITLE",
        "CONTROL", "RESULT", "OWNER", "VIOLATIONS"
    )?;
    for c in &report.controls {
        writeln!(
            out,
            "{:<8} {:<14} {:<9} {:>10}  {}",
            c.control.id,
            format!("{:?}", c.result),
            format!("{:?}", c.owner),
            c.offenders.len(),
            c.control.title
        )?;
        for o in &c.offenders {
            writeln!(
                out,
                "    {}  ({})",
                o.object,
                location_text(&o.object, &o.location)
            )?;
        }
    }
    if !context.errors.is_empty() {
        writeln!(out)?;
        writeln!(out, "input errors (the verdict is incomplete):")?;
        for e in context.errors {
            writeln!(out, "    {e}")?;
        }
    }
    for (id, first, second) in &ingested.duplicates {
        writeln!(
            out,
            "note: {}/{}{} defined twice ({first}, {second}); the later one is evaluated",
            id.0,
            if id.1.is_empty() {
                String::new()
            } else {
                format!("{}/", id.1)
            },
            id.2
        )?;
    }
    for note in &ingested.aggregations {
        writeln!(out, "note: {}", note.text())?;
    }
    if !report.gaps.is_empty() {
        writeln!(out)?;
        writeln!(out, "responsibility gaps:")?;
        for g in &report.gaps {
            writeln!(out, "    {} {}: {}", g.control, g.reason, g.message)?;
        }
    }
    writeln!(out)?;
    let failing: Vec<&str> = report.failing().map(|c| c.control.id).collect();
    let violations: usize = report.failing().map(|c| c.offenders.len()).sum();
    let mut verdict = if failing.is_empty() {
        "PASS: every customer-owned control passes".to_string()
    } else {
        format!(
            "FAIL: {} violations in {} controls: {}",
            violations,
            failing.len(),
            failing.join(", ")
        )
    };
    if !context.errors.is_empty() {
        verdict = format!(
            "INCOMPLETE: {} input errors; of what could be read: {verdict}",
            context.errors.len()
        );
    }
    writeln!(out, "{verdict} (exit {})", context.exit_code)
}

fn location_json(location: &Location) -> Value {
    match location {
        Location::Object(s) => json!({"file": &*s.file, "line": s.line}),
        Location::ImpliedBy(s) => {
            json!({"impliedBy": {"file": &*s.file, "line": s.line}})
        }
        Location::Unknown => Value::Null,
    }
}

/// The same as JSON (one object; `exitCode` included).
pub fn json(out: &mut dyn Write, context: &Context<'_>, report: &Report) -> io::Result<()> {
    let ingested = context.ingested;
    let controls: Vec<Value> = report
        .controls
        .iter()
        .map(|c| {
            json!({
                "id": c.control.id,
                "title": c.control.title,
                "family": c.control.family.field(),
                "owner": c.owner,
                "ownerSource": c.owner_source,
                "result": c.result,
                "violations": c.offenders.len(),
                "excepted": c.excepted,
                "frameworks": c.control.frameworks,
                "offenders": c.offenders.iter().map(|o| json!({
                    "object": o.object,
                    "location": location_json(&o.location),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let failing: Vec<&str> = report.failing().map(|c| c.control.id).collect();
    let document = json!({
        "policy": {
            "source": match context.policy {
                PolicySource::Default => Value::String("default".into()),
                PolicySource::File(path) => json!({"file": path}),
            },
            "spec": context.spec,
        },
        "podSecurityVersion": report.pod_security_version.to_string(),
        "input": {
            "files": context.files,
            "evaluated": ingested.evaluated,
            "skipped": ingested.skipped,
            "errors": context.errors.iter().map(|e| json!({
                "file": e.file, "line": e.line, "reason": e.reason,
            })).collect::<Vec<_>>(),
            "aggregatedClusterRoles": ingested.aggregations.iter().map(|a| json!({
                "name": a.name,
                "file": &*a.source.file,
                "line": a.source.line,
                "selected": a.selected,
                "note": a.text(),
            })).collect::<Vec<_>>(),
        },
        "namespaces": report.namespaces,
        "controls": controls,
        "gaps": report.gaps.iter().map(|g| json!({
            "control": g.control, "reason": g.reason, "message": g.message,
        })).collect::<Vec<_>>(),
        "summary": {
            "compliant": failing.is_empty() && context.errors.is_empty(),
            "failing": failing,
            "violations": report.failing().map(|c| c.offenders.len()).sum::<usize>(),
            "passing": report.controls.iter().filter(|c| c.result == ControlResult::Pass).count(),
        },
        "exitCode": context.exit_code,
    });
    serde_json::to_writer_pretty(&mut *out, &document)?;
    writeln!(out)
}

/// A file name as a SARIF `uri` (a relative reference): the characters a URI reference may
/// not hold as they are, percent-encoded.
fn uri_of(file: &str) -> String {
    let mut out = String::with_capacity(file.len());
    for b in file.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn sarif_location(source: &super::load::Source, note: Option<&str>) -> Value {
    let mut location = json!({
        "physicalLocation": {
            "artifactLocation": {"uri": uri_of(&source.file)},
            "region": {"startLine": source.line},
        }
    });
    if let Some(note) = note {
        location["message"] = json!({ "text": note });
    }
    location
}

/// The help of one control: what it requires, what onus reads, what changes the check,
/// whether Enforce fixes it, and the framework items.
pub fn control_help(control: &crate::catalog::Control) -> String {
    let mut help = format!("{}: {}.", control.id, control.title);
    if let Some(check) = crate::catalog::CHECKS.iter().find(|c| c.id == control.id) {
        help.push_str(&format!("\n\nChecks: {}.", check.checks));
        if !check.gates.is_empty() {
            help.push_str(&format!("\n\nPolicy settings: {}.", check.gates));
        }
    }
    help.push_str(match control.fix {
        crate::catalog::Fix::Safe => "\n\nFix: onus applies the fix itself in Enforce mode.",
        crate::catalog::Fix::Report => "\n\nFix: reported only; onus never changes it.",
    });
    if !control.frameworks.is_empty() {
        help.push_str(&format!(
            "\n\nFrameworks: {}.",
            control.frameworks.join(", ")
        ));
    }
    help
}

/// SARIF 2.1.0: one rule per catalog control (help text, framework ids as tags), one result
/// per offender of a control that does not pass (level `error` when it fails, `note` when an
/// exception or the owner keeps it from failing), located at the offending object's first
/// line. Input errors are tool notifications; `executionSuccessful` is false with them.
pub fn sarif(out: &mut dyn Write, context: &Context<'_>, report: &Report) -> io::Result<()> {
    let rules: Vec<Value> = report
        .controls
        .iter()
        .map(|c| {
            let mut tags = vec!["security".to_string(), c.control.family.field().to_string()];
            tags.extend(c.control.frameworks.iter().map(|f| f.to_string()));
            json!({
                "id": c.control.id,
                "shortDescription": {"text": c.control.title},
                "fullDescription": {"text": control_help(c.control)},
                "help": {"text": control_help(c.control)},
                "defaultConfiguration": {"level": "error"},
                "properties": {
                    "tags": tags,
                    "frameworks": c.control.frameworks,
                    "family": c.control.family.field(),
                    "owner": c.owner,
                    "ownerSource": c.owner_source,
                    "result": c.result,
                },
            })
        })
        .collect();
    let mut results = Vec::new();
    for (index, c) in report.controls.iter().enumerate() {
        let level = match c.result {
            ControlResult::Fail => "error",
            _ => "note",
        };
        for o in &c.offenders {
            let locations = match &o.location {
                Location::Object(source) => vec![sarif_location(source, None)],
                Location::ImpliedBy(source) => vec![sarif_location(
                    source,
                    Some(&location_text(&o.object, &o.location)),
                )],
                Location::Unknown => Vec::new(),
            };
            results.push(json!({
                "ruleId": c.control.id,
                "ruleIndex": index,
                "level": level,
                "kind": "fail",
                "message": {"text": format!(
                    "{}: {} (control {:?}, owner {:?})",
                    o.object, c.control.title, c.result, c.owner
                )},
                "locations": locations,
                "properties": {"object": o.object},
            }));
        }
    }
    let mut notifications: Vec<Value> = context
        .errors
        .iter()
        .map(|e| {
            let mut n = json!({
                "level": "error",
                "message": {"text": e.reason},
                "locations": [{"physicalLocation": {"artifactLocation": {"uri": uri_of(&e.file)}}}],
            });
            if let Some(line) = e.line {
                n["locations"][0]["physicalLocation"]["region"] = json!({ "startLine": line });
            }
            n
        })
        .collect();
    notifications.extend(context.ingested.aggregations.iter().map(|a| {
        json!({
            "level": "note",
            "message": {"text": a.text()},
            "locations": [sarif_location(&a.source, None)],
        })
    }));
    let document = json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {
                "name": "onus",
                "version": env!("CARGO_PKG_VERSION"),
                "rules": rules,
            }},
            "invocations": [{
                "executionSuccessful": context.errors.is_empty(),
                "exitCode": context.exit_code,
                "toolExecutionNotifications": notifications,
            }],
            "results": results,
            "properties": {
                "policy": policy_line(context),
                "podSecurityVersion": report.pod_security_version.to_string(),
            },
        }],
    });
    serde_json::to_writer_pretty(&mut *out, &document)?;
    writeln!(out)
}

/// Text escaped for XML attributes and content.
fn xml(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for ch in text.chars() {
        match ch {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            // XML 1.0 cannot hold other control characters, even escaped.
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// JUnit XML: one test suite per control, one test case per control × offending object
/// (a failure when the control fails, skipped when an exception or the owner excuses it); a
/// control without offenders is one test case (passed, or skipped when not the customer's or
/// not observable). Input errors are one failing `input` suite, one case per error.
pub fn junit(out: &mut dyn Write, context: &Context<'_>, report: &Report) -> io::Result<()> {
    let mut suites = String::new();
    let (mut tests, mut failures, mut skipped) = (0usize, 0usize, 0usize);
    if !context.errors.is_empty() {
        suites.push_str(&format!(
            "  <testsuite name=\"input\" tests=\"{n}\" failures=\"{n}\" errors=\"0\" skipped=\"0\">\n",
            n = context.errors.len()
        ));
        for e in context.errors {
            suites.push_str(&format!(
                "    <testcase classname=\"input\" name=\"{}\" file=\"{}\"{}>\n      <failure message=\"{}\" type=\"InputError\"/>\n    </testcase>\n",
                xml(&e.to_string()),
                xml(&e.file),
                e.line.map_or(String::new(), |l| format!(" line=\"{l}\"")),
                xml(&e.reason)
            ));
        }
        suites.push_str("  </testsuite>\n");
        tests += context.errors.len();
        failures += context.errors.len();
    }
    for c in &report.controls {
        let id = c.control.id;
        let title = xml(c.control.title);
        let outcome = match c.result {
            ControlResult::Fail => "failure",
            ControlResult::Pass => "pass",
            _ => "skipped",
        };
        let reason = format!("{:?} (owner {:?})", c.result, c.owner);
        let mut cases = String::new();
        let (mut suite_failures, mut suite_skipped) = (0usize, 0usize);
        let mut case = |name: &str, location: Option<&super::load::Source>, body: &str| {
            let at = location.map_or(String::new(), |s| {
                format!(" file=\"{}\" line=\"{}\"", xml(&s.file), s.line)
            });
            cases.push_str(&format!(
                "    <testcase classname=\"onus.{id}\" name=\"{}\"{at}>{body}</testcase>\n",
                xml(name)
            ));
        };
        if c.offenders.is_empty() {
            let body = match outcome {
                "skipped" => {
                    suite_skipped += 1;
                    format!("<skipped message=\"{}\"/>", xml(&reason))
                }
                // A failing control without offenders is not possible today; shown if it were.
                "failure" => {
                    suite_failures += 1;
                    format!("<failure message=\"{}\" type=\"{id}\"/>", xml(&reason))
                }
                _ => String::new(),
            };
            case(&format!("{id} {}", c.control.title), None, &body);
        }
        for o in &c.offenders {
            let source = match &o.location {
                Location::Object(s) | Location::ImpliedBy(s) => Some(s),
                Location::Unknown => None,
            };
            let detail = format!(
                "{}: {} ({})",
                o.object,
                c.control.title,
                location_text(&o.object, &o.location)
            );
            let body = if outcome == "failure" {
                suite_failures += 1;
                format!(
                    "<failure message=\"{}\" type=\"{id}\">{}</failure>",
                    xml(&detail),
                    xml(&control_help(c.control))
                )
            } else {
                suite_skipped += 1;
                format!("<skipped message=\"{}: {}\"/>", xml(&reason), xml(&detail))
            };
            case(&format!("{id} {}", o.object), source, &body);
        }
        let n = c.offenders.len().max(1);
        suites.push_str(&format!(
            "  <testsuite name=\"{id} {title}\" tests=\"{n}\" failures=\"{suite_failures}\" errors=\"0\" skipped=\"{suite_skipped}\">\n{cases}  </testsuite>\n"
        ));
        tests += n;
        failures += suite_failures;
        skipped += suite_skipped;
    }
    writeln!(out, "<?xml version=\"1.0\" encoding=\"UTF-8\"?>")?;
    writeln!(
        out,
        "<testsuites name=\"onus check\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\">"
    )?;
    write!(out, "{suites}")?;
    writeln!(out, "</testsuites>")
}
