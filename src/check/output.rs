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
