//! The README's commands reproduce the output it shows.
//!
//! Every `$ kubectl …` line in the README is a command `make demo` (`hack/demo.sh`) runs; this
//! test runs the demo against a control plane of its own and compares each command's output
//! with the README's, in order of appearance (the README's second `kubectl get rp` is the demo's
//! second). `$ onus check …` lines are run from the repository root, `$ echo $?` gives the
//! previous command's exit code.
//!
//! What may differ: ages (`0s`, `3m2s`) and the spacing of table columns that ages widen. Event
//! lists are compared as sets of lines, because Events created in the same second have no
//! order. A line `...` in the README stands for any number of lines (an elision the README says
//! it makes); nothing else is skipped.

use std::{collections::BTreeMap, process::Command};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// One command shown in the README with the output shown after it.
#[derive(Debug)]
struct Shown {
    command: String,
    output: Vec<String>,
    /// Where in the README, for the failure message.
    line: usize,
}

/// `$ command` lines in fenced blocks, each with the lines up to the next command or the end
/// of its block.
fn shown_commands(readme: &str) -> Vec<Shown> {
    let mut shown: Vec<Shown> = Vec::new();
    let mut in_block = false;
    let mut current: Option<Shown> = None;
    for (at, line) in readme.lines().enumerate() {
        if line.starts_with("```") {
            in_block = !in_block;
            shown.extend(current.take());
            continue;
        }
        if !in_block {
            continue;
        }
        if let Some(command) = line.strip_prefix("$ ") {
            shown.extend(current.take());
            current = Some(Shown {
                command: command.to_string(),
                output: Vec::new(),
                line: at + 1,
            });
        } else if let Some(c) = current.as_mut() {
            c.output.push(line.to_string());
        }
    }
    shown
}

/// The demo's transcript: each `+ command` with the lines it printed (up to the next command,
/// a blank line or a `# ` comment), in order.
fn demo_transcript(text: &str) -> Vec<(String, Vec<String>)> {
    let mut out: Vec<(String, Vec<String>)> = Vec::new();
    let mut open = false;
    for line in text.lines() {
        if let Some(command) = line.strip_prefix("+ ") {
            out.push((command.to_string(), Vec::new()));
            open = true;
        } else if line.is_empty() || line.starts_with("# ") {
            open = false;
        } else if open && let Some((_, lines)) = out.last_mut() {
            lines.push(line.to_string());
        }
    }
    out
}

/// An age as kubectl prints it: `0s`, `59s`, `3m2s`, `5h`, `2d`.
fn is_age(token: &str) -> bool {
    let mut digits = false;
    let mut rest = token;
    while !rest.is_empty() {
        let n = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if n == 0 {
            return false;
        }
        rest = &rest[n..];
        let unit = rest.chars().next();
        if !matches!(unit, Some('s' | 'm' | 'h' | 'd')) {
            return false;
        }
        rest = &rest[1..];
        digits = true;
    }
    digits
}

/// A line as compared: whitespace runs collapsed, ages replaced.
fn normal(line: &str) -> String {
    line.split_whitespace()
        .map(|t| if is_age(t) { "<age>" } else { t })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `actual` matches `expected`, where a `...` line in `expected` matches any lines.
fn matches(expected: &[String], actual: &[String]) -> bool {
    match expected.split_first() {
        None => actual.is_empty(),
        Some((first, rest)) if first.trim() == "..." => {
            (0..=actual.len()).any(|skip| matches(rest, &actual[skip..]))
        }
        Some((first, rest)) => actual
            .split_first()
            .is_some_and(|(a, more)| normal(first) == normal(a) && matches(rest, more)),
    }
}

fn compare(shown: &Shown, actual: &[String]) -> Result<(), String> {
    let expected: Vec<String> = shown
        .output
        .iter()
        .filter(|l| !l.trim().is_empty())
        .cloned()
        .collect();
    let actual: Vec<String> = actual
        .iter()
        .filter(|l| !l.trim().is_empty())
        .cloned()
        .collect();
    let same = if shown.command.contains("get events") {
        // Events of the same second come in any order: compare the header, then the set.
        let sorted = |lines: &[String]| {
            let mut body: Vec<String> = lines.iter().skip(1).map(|l| normal(l)).collect();
            body.sort();
            (lines.first().map(|l| normal(l)), body)
        };
        sorted(&expected) == sorted(&actual)
    } else {
        matches(&expected, &actual)
    };
    if same {
        Ok(())
    } else {
        Err(format!(
            "README.md:{}: `{}` shows\n{}\nbut prints\n{}",
            shown.line,
            shown.command,
            expected.join("\n"),
            actual.join("\n")
        ))
    }
}

/// Runs `onus check …` as the README shows it, from the repository root.
fn run_onus(command: &str) -> (Vec<String>, i32) {
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let output = Command::new(env!("CARGO_BIN_EXE_onus"))
        .args(&args)
        .current_dir(ROOT)
        .output()
        .expect("onus runs");
    let text = String::from_utf8_lossy(&output.stdout).to_string()
        + &String::from_utf8_lossy(&output.stderr);
    (
        text.lines().map(str::to_string).collect(),
        output.status.code().unwrap_or(-1),
    )
}

#[test]
fn every_readme_command_prints_what_the_readme_shows() {
    let readme = std::fs::read_to_string(format!("{ROOT}/README.md")).expect("README.md");
    let shown = shown_commands(&readme);
    assert!(
        shown
            .iter()
            .filter(|s| s.command.starts_with("kubectl "))
            .count()
            >= 10,
        "the README's kubectl commands were not found: {shown:#?}"
    );

    let cp =
        onus_testenv::ControlPlane::start(onus_testenv::Options::default()).expect("control plane");
    let demo = Command::new("bash")
        .arg("hack/demo.sh")
        .current_dir(ROOT)
        .env("DEMO_KUBECONFIG", cp.kubeconfig_path())
        .env("DEMO_ONUS_BIN", env!("CARGO_BIN_EXE_onus"))
        .output()
        .expect("hack/demo.sh runs");
    let transcript = String::from_utf8_lossy(&demo.stdout).to_string();
    assert!(
        demo.status.success(),
        "hack/demo.sh failed:\n{transcript}\n{}",
        String::from_utf8_lossy(&demo.stderr)
    );
    let mut runs: BTreeMap<String, Vec<Vec<String>>> = BTreeMap::new();
    for (command, lines) in demo_transcript(&transcript).into_iter().rev() {
        runs.entry(command).or_default().push(lines);
    }

    let mut failures = Vec::new();
    let mut last_exit = None;
    for s in &shown {
        let actual = if s.command.starts_with("kubectl ") {
            match runs.get_mut(&s.command).and_then(Vec::pop) {
                Some(lines) => lines,
                None => {
                    failures.push(format!(
                        "README.md:{}: `{}` is not run by hack/demo.sh (or shown more often \
                         than it runs)\n{transcript}",
                        s.line, s.command
                    ));
                    continue;
                }
            }
        } else if s.command.starts_with("onus check ") && !s.command.contains("broken") {
            let (lines, code) = run_onus(&s.command);
            last_exit = Some(code);
            lines
        } else if s.command == "echo $?" {
            match last_exit {
                Some(code) => vec![code.to_string()],
                None => {
                    failures.push(format!("README.md:{}: `echo $?` of what?", s.line));
                    continue;
                }
            }
        } else {
            // Run elsewhere (a fixture directory) and checked by its own test.
            continue;
        };
        if let Err(e) = compare(s, &actual) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn ages_and_elisions_are_all_that_may_differ() {
    assert!(is_age("0s") && is_age("3m2s") && is_age("12h") && !is_age("s") && !is_age("v1"));
    let lines = |s: &str| s.lines().map(str::to_string).collect::<Vec<_>>();
    assert!(matches(
        &lines("NAME   AGE\nprod   0s"),
        &lines("NAME AGE\nprod 12s")
    ));
    assert!(!matches(
        &lines("NAME AGE\nprod 0s"),
        &lines("NAME AGE\nprod2 0s")
    ));
    assert!(matches(&lines("a\n...\nd"), &lines("a\nb\nc\nd")));
    assert!(!matches(&lines("a\n...\nd"), &lines("a\nb\nc")));
    assert!(!matches(&lines("a\nb"), &lines("a\nb\nc")));
}
