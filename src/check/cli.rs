//! The `onus check` command line and its run.

use std::io::{Read, Write};

use serde_json::Value;

use super::{
    EXIT_BAD_INPUT, Ingester, Prepared, check, default_policy, exit_code, load, output, prepare,
};
use crate::{crd::ResponsibilityPolicySpec, podsecurity::Version, validate};

pub const USAGE: &str =
    "usage: onus check -f PATH... [--policy FILE] [--output table|json|sarif|junit]
                  [--kube-version v1.N] [--namespace NS]

Evaluates manifests offline with the controller's own checks and prints each control's
result, owner and offenders (file:line).

  -f, --filename PATH   a file, a directory (read recursively: *.yaml, *.yml, *.json) or -
                        (stdin); repeat for more
  --policy FILE         a ResponsibilityPolicy (YAML or JSON); without it, a built-in
                        default: serviceModel PaaS, Pod Security restricted, every family
  -o, --output FORMAT   table (default), json, sarif (SARIF 2.1.0, for code scanning) or
                        junit (JUnit XML, one test case per control and offending object)
  --kube-version v1.N   the cluster's Kubernetes version: Pod Security `latest` is judged as
                        it (default: the newest version onus knows)
  -n, --namespace NS    namespace of objects that name none (default: default)

Exit codes: 0 every customer-owned control passes, 1 violations, 2 bad input or bad policy
(every readable file is still evaluated and reported).";

/// Output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
    Sarif,
    Junit,
}

/// The parsed `onus check` arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Args {
    pub paths: Vec<String>,
    pub policy: Option<String>,
    pub format: Format,
    pub namespace: String,
    /// `--kube-version`: the minor version of the cluster the manifests are for.
    pub kube_minor: Option<u32>,
}

/// What the `check` command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Check(Args),
    Help,
}

/// Parses the arguments after `check`; `--flag value` and `--flag=value` both work.
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Command, String> {
    let mut out = Args {
        paths: Vec::new(),
        policy: None,
        format: Format::Table,
        namespace: "default".into(),
        kube_minor: None,
    };
    let mut args = crate::args::Flags::new(args);
    while let Some((flag, inline)) = args.next_flag() {
        let mut value = || {
            args.value(&flag, &inline)
                .ok()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(Command::Help),
            "-f" | "--filename" => out.paths.push(value()?),
            "--policy" => {
                if out.policy.replace(value()?).is_some() {
                    return Err("--policy may be given once".into());
                }
            }
            "-o" | "--output" => {
                out.format = match value()?.as_str() {
                    "table" => Format::Table,
                    "json" => Format::Json,
                    "sarif" => Format::Sarif,
                    "junit" => Format::Junit,
                    other => return Err(format!("unknown output format {other:?}")),
                }
            }
            "-n" | "--namespace" => out.namespace = value()?,
            "--kube-version" => out.kube_minor = Some(kube_minor(&value()?)?),
            _ => return Err(format!("unknown argument {flag:?}")),
        }
    }
    if out.paths.is_empty() {
        return Err("no input: give -f PATH (a file, a directory or -)".into());
    }
    Ok(Command::Check(out))
}

/// The minor of a `--kube-version` value: `v1.N` (or `1.N`, as `kubectl version` prints it).
pub fn kube_minor(value: &str) -> Result<u32, String> {
    let given = if value.starts_with('v') {
        value.to_string()
    } else {
        format!("v{value}")
    };
    match given.parse::<Version>() {
        Ok(Version::Minor(n)) => Ok(n),
        _ => Err(format!(
            "--kube-version {value:?}: must be a Kubernetes version v1.N (e.g. v1.33)"
        )),
    }
}

/// Where the policy came from, for the output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PolicySource {
    Default,
    File(String),
}

/// Reads the policy file: a `ResponsibilityPolicy` object (its spec), or a bare spec. Fields
/// the spec does not know are refused (a misspelt setting would otherwise be ignored).
pub fn read_policy(path: &str) -> Result<ResponsibilityPolicySpec, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: cannot read: {e}"))?;
    parse_policy(path, &text)
}

/// Parses a policy from text; see [`read_policy`].
pub fn parse_policy(path: &str, text: &str) -> Result<ResponsibilityPolicySpec, String> {
    let mut specs = Vec::new();
    for doc in load::split_yaml(text) {
        let value: Value = serde_yaml::from_str(&doc.text).map_err(|e| {
            let line = e
                .location()
                .map_or(doc.start, |l| doc.start + l.line().saturating_sub(1));
            format!(
                "{path}:{line}: {}",
                load::shift_lines(&e.to_string(), doc.start - 1)
            )
        })?;
        let spec = match value.get("kind").and_then(Value::as_str) {
            Some("ResponsibilityPolicy") => value.get("spec").cloned().unwrap_or(Value::Null),
            Some(other) => {
                return Err(format!(
                    "{path}:{}: a {other}, not a ResponsibilityPolicy",
                    doc.start
                ));
            }
            None if value.is_null() => continue,
            None => value,
        };
        specs.push((doc.start, spec));
    }
    let (line, value) = match specs.len() {
        0 => return Err(format!("{path}: no ResponsibilityPolicy in the file")),
        1 => specs.remove(0),
        n => {
            return Err(format!(
                "{path}: {n} policies in the file; check evaluates one at a time"
            ));
        }
    };
    let spec: ResponsibilityPolicySpec = serde_json::from_value(value.clone())
        .map_err(|e| format!("{path}:{line}: invalid spec: {e}"))?;
    let known = serde_json::to_value(&spec).map_err(|e| e.to_string())?;
    if let Some(field) = unknown_field(&value, &known, "spec") {
        return Err(format!("{path}:{line}: unknown field {field}"));
    }
    validate::validate(&spec).map_err(|e| format!("{path}:{line}: {e}"))?;
    spec.controls
        .pod_security
        .version
        .parse::<Version>()
        .map_err(|e| format!("{path}:{line}: spec.controls.podSecurity.version: {e}"))?;
    Ok(spec)
}

/// The first field of `given` that the decoded-and-encoded spec `known` lost (empty values,
/// which encoding leaves out, aside).
fn unknown_field(given: &Value, known: &Value, path: &str) -> Option<String> {
    match (given, known) {
        (Value::Object(g), Value::Object(k)) => g.iter().find_map(|(key, v)| {
            let here = format!("{path}.{key}");
            match k.get(key) {
                Some(kv) => unknown_field(v, kv, &here),
                None if is_empty(v) => None,
                None => Some(here),
            }
        }),
        (Value::Array(g), Value::Array(k)) if g.len() == k.len() => g
            .iter()
            .zip(k)
            .enumerate()
            .find_map(|(i, (g, k))| unknown_field(g, k, &format!("{path}[{i}]"))),
        _ => None,
    }
}

fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
        _ => false,
    }
}

/// The reader's [`load::Sink`] for `onus check`: objects, decoded and projected by the reader
/// threads ([`prepare`]), go straight into the index.
struct Streaming {
    ingester: Ingester,
    /// The reader's errors (the ingester keeps its own, added after these as before).
    errors: Vec<load::InputError>,
    files: usize,
}

impl load::Sink<Prepared> for Streaming {
    fn object(&mut self, object: Prepared) {
        self.ingester.push_prepared(object);
    }
    fn error(&mut self, error: load::InputError) {
        self.errors.push(error);
    }
    fn file(&mut self) {
        self.files += 1;
    }
}

/// Runs `onus check`; returns the exit code.
pub fn run(args: &Args, stdin: &mut dyn Read, out: &mut dyn Write, err: &mut dyn Write) -> i32 {
    let (spec, source) = match &args.policy {
        Some(path) => match read_policy(path) {
            Ok(spec) => (spec, PolicySource::File(path.clone())),
            Err(e) => {
                let _ = writeln!(err, "onus check: bad policy: {e}");
                return EXIT_BAD_INPUT;
            }
        },
        None => (default_policy(), PolicySource::Default),
    };
    // Each object is projected into the index's facts as soon as it is parsed and then
    // dropped (streaming); the cross-object analyses run on the facts once all are read.
    // The server's PodSecurity admission judges `latest` (and newer pins) as its own version,
    // and its default roles are its version's.
    let mut reading = Streaming {
        ingester: Ingester::new(&args.namespace, args.kube_minor),
        errors: Vec::new(),
        files: 0,
    };
    // The reader threads decode and project what they parse; this one only fills the index.
    let on_reader = |object| prepare(object, &args.namespace);
    load::read_paths_prepared(&args.paths, stdin, &on_reader, &mut reading);
    let Streaming {
        ingester,
        mut errors,
        files,
    } = reading;
    let ingested = ingester.finish();
    errors.extend(ingested.errors.iter().cloned());
    errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    let report = check(&spec, &ingested, jiff::Timestamp::now());
    let code = exit_code(&report, errors.len());
    let context = output::Context {
        policy: &source,
        spec: &spec,
        files,
        ingested: &ingested,
        errors: &errors,
        exit_code: code,
    };
    let written = match args.format {
        Format::Table => output::table(out, &context, &report),
        Format::Json => output::json(out, &context, &report),
        Format::Sarif => output::sarif(out, &context, &report),
        Format::Junit => output::junit(out, &context, &report),
    };
    for e in &errors {
        let _ = writeln!(err, "onus check: {e}");
    }
    if args.format != Format::Table {
        // The table shows them; the other formats hold them where tools may not look.
        for note in &ingested.aggregations {
            let _ = writeln!(err, "onus check: note: {}", note.text());
        }
    }
    if let Err(e) = written {
        // A reader that stopped early (`| head`) needs no message; the code still says the
        // report was not delivered whole.
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            let _ = writeln!(err, "onus check: cannot write the report: {e}");
        }
        return EXIT_BAD_INPUT;
    }
    code
}

/// Runs `onus check` with the process's arguments after `check`; returns the exit code.
pub fn main(args: impl IntoIterator<Item = String>) -> i32 {
    match parse(args) {
        Ok(Command::Help) => {
            println!("{USAGE}");
            0
        }
        Ok(Command::Check(args)) => run(
            &args,
            &mut std::io::stdin().lock(),
            &mut std::io::stdout().lock(),
            &mut std::io::stderr().lock(),
        ),
        Err(message) => {
            eprintln!("onus check: {message}\n\n{USAGE}");
            EXIT_BAD_INPUT
        }
    }
}
