use std::io::Cursor;

use serde_json::json;

use super::load::{Loaded, STDIN, load_paths, load_text, split_yaml};
use super::*;
use crate::crd::ControlResult;

fn load(file: &str, text: &str, json: bool) -> Loaded {
    let mut loaded = Loaded::default();
    load_text(file, text, json, &mut loaded);
    loaded
}

/// (kind, name, line) of each object.
fn summary(loaded: &Loaded) -> Vec<(String, String, usize)> {
    loaded
        .objects
        .iter()
        .map(|o| {
            (
                o.value["kind"].as_str().unwrap_or_default().to_string(),
                o.value["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                o.source.line,
            )
        })
        .collect()
}

fn owned(items: &[(&str, &str, usize)]) -> Vec<(String, String, usize)> {
    items
        .iter()
        .map(|(k, n, l)| (k.to_string(), n.to_string(), *l))
        .collect()
}

const MULTI: &str = "# leading comment
---
apiVersion: v1
kind: ConfigMap
metadata: {name: a}
---
# only a comment: no object
---

apiVersion: v1
kind: Secret
metadata:
  name: b
...
--- {apiVersion: v1, kind: Service, metadata: {name: c}}
";

#[test]
fn multi_document_yaml_keeps_each_objects_first_line() {
    let loaded = load("m.yaml", MULTI, false);
    assert_eq!(loaded.errors, []);
    assert_eq!(
        summary(&loaded),
        owned(&[
            ("ConfigMap", "a", 3),
            ("Secret", "b", 10),
            ("Service", "c", 15)
        ])
    );
    assert_eq!(&*loaded.objects[0].source.file, "m.yaml");
}

#[test]
fn a_document_marker_inside_text_is_not_a_split() {
    // `---` not at column 0, or followed by other characters, is content.
    let docs = split_yaml("a: |\n  ---\n  x\nb: ---x\n");
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].start, 1);
}

#[test]
fn a_file_of_one_document_is_read_in_place() {
    let text = "# header\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n";
    let docs = split_yaml(text);
    assert_eq!(docs.len(), 1);
    assert_eq!(docs[0].start, 1);
    assert!(matches!(docs[0].text, std::borrow::Cow::Borrowed(t) if t == text));
    // With a marker it is split (copied) as before, lines kept.
    let docs = split_yaml("---\na: 1\n---\nb: 2\n");
    assert_eq!(docs.len(), 2);
    assert_eq!((docs[0].start, docs[1].start), (1, 3));
    assert_eq!(docs[1].text, "   \nb: 2\n");
    // Only comments: no document.
    assert!(split_yaml("# nothing\n\n").is_empty());
}

const YAML_LIST: &str = "apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata:
    name: first
    # a comment
- apiVersion: apps/v1
  kind: Deployment
  metadata: {name: second}
metadata: {}
";

#[test]
fn a_yaml_list_gives_each_item_its_own_line() {
    let loaded = load("l.yaml", YAML_LIST, false);
    assert_eq!(
        summary(&loaded),
        owned(&[("ConfigMap", "first", 4), ("Deployment", "second", 9)])
    );
    // Indented sequences too, and typed lists as `kubectl get -o yaml` writes them.
    let indented = "apiVersion: v1\nkind: PodList\nitems:\n  - apiVersion: v1\n    kind: Pod\n    metadata: {name: p}\n";
    assert_eq!(
        summary(&load("p.yaml", indented, false)),
        owned(&[("Pod", "p", 4)])
    );
}

#[test]
fn a_flow_style_list_falls_back_to_the_lists_line() {
    let text = "# c\napiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: ConfigMap, metadata: {name: x}},\n  {apiVersion: v1, kind: ConfigMap, metadata: {name: y}}]\n";
    assert_eq!(
        summary(&load("f.yaml", text, false)),
        owned(&[("ConfigMap", "x", 2), ("ConfigMap", "y", 2)])
    );
}

#[test]
fn json_lists_and_streams_give_each_object_its_line() {
    let text = r#"{"apiVersion": "v1", "kind": "List", "items": [
  {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}},

  {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "b"}}
]}
{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "c"}}
"#;
    let loaded = load("s.json", text, true);
    assert_eq!(loaded.errors, []);
    assert_eq!(
        summary(&loaded),
        owned(&[
            ("ConfigMap", "a", 2),
            ("ConfigMap", "b", 4),
            ("Secret", "c", 6)
        ])
    );
}

#[test]
fn stdin_is_read_as_yaml_or_json() {
    let mut yaml = Cursor::new(MULTI.as_bytes());
    let loaded = load_paths(&["-".to_string()], &mut yaml);
    assert_eq!(loaded.files, 1);
    assert_eq!(loaded.objects.len(), 3);
    assert_eq!(&*loaded.objects[2].source.file, STDIN);
    let mut json = Cursor::new(
        &b"\n{\"apiVersion\": \"v1\", \"kind\": \"Namespace\", \"metadata\": {\"name\": \"n\"}}"[..],
    );
    let loaded = load_paths(&["-".to_string()], &mut json);
    assert_eq!(summary(&loaded), owned(&[("Namespace", "n", 2)]));
}

#[test]
fn a_bad_document_is_reported_with_its_line_and_the_rest_is_still_read() {
    let text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n   bad: indent\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: after}\n";
    let loaded = load("bad.yaml", text, false);
    assert_eq!(
        summary(&loaded),
        owned(&[("ConfigMap", "ok", 1), ("Secret", "after", 11)])
    );
    assert_eq!(loaded.errors.len(), 1);
    let error = &loaded.errors[0];
    assert_eq!(error.file, "bad.yaml");
    assert_eq!(error.line, Some(9), "{error}");
    // The parser's own positions count within the file too.
    assert!(error.reason.contains("line 9"), "{error}");
    assert!(!error.reason.contains("line 5 "), "{error}");
    // Not an object at all.
    let loaded = load("s.yaml", "just a string\n", false);
    assert_eq!(loaded.errors[0].line, Some(1));
    // Broken JSON: the line of the syntax error.
    let loaded = load("b.json", "{\"kind\": \"List\",\n \"items\": [\n}", true);
    assert_eq!(loaded.errors[0].line, Some(3));
}

fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("onus-check-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("sub")).expect("dir");
    dir
}

#[test]
fn a_bad_file_among_good_ones_fails_alone_and_directories_are_walked() {
    let dir = temp_dir("walk");
    std::fs::write(
        dir.join("a.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\n",
    )
    .expect("write");
    std::fs::write(dir.join("b.yml"), "kind: [unclosed\n").expect("write");
    std::fs::write(
        dir.join("sub/c.json"),
        r#"{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}"#,
    )
    .expect("write");
    std::fs::write(dir.join("notes.txt"), "not: [a manifest").expect("write");
    let missing = dir.join("missing.yaml").display().to_string();
    let loaded = load_paths(
        &[dir.display().to_string(), missing.clone()],
        &mut std::io::empty(),
    );
    assert_eq!(loaded.files, 4, "a.yaml, b.yml, sub/c.json, missing.yaml");
    let names: Vec<_> = summary(&loaded).into_iter().map(|(_, n, _)| n).collect();
    assert_eq!(names, ["a", "c"]);
    assert_eq!(loaded.errors.len(), 2);
    assert!(loaded.errors[0].file.ends_with("b.yml"));
    assert_eq!(loaded.errors[0].line, Some(2), "{}", loaded.errors[0]);
    assert_eq!(loaded.errors[1].file, missing);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn files_read_on_several_threads_arrive_in_input_order() {
    let dir = temp_dir("threads");
    std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
    for i in 0..23 {
        let text = match i {
            7 => "kind: [unclosed\n".to_string(),
            // A name defined twice: the later file's definition counts, so order matters.
            11 | 17 => format!(
                "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: twice, namespace: n}}\n\
                 # file {i}\n"
            ),
            _ => format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}}}\n---\n\
                 apiVersion: v1\nkind: Namespace\nmetadata: {{name: ns{i}}}\n"
            ),
        };
        let sub = if i % 3 == 0 { "sub/" } else { "" };
        std::fs::write(dir.join(format!("{sub}f{i:02}.yaml")), text).expect("write");
    }
    let missing = dir.join("missing.yaml").display().to_string();
    let paths = [dir.display().to_string(), missing, "-".to_string()];
    let read = |readers: usize| {
        let mut loaded = Loaded::default();
        let mut stdin = Cursor::new("apiVersion: v1\nkind: Namespace\nmetadata: {name: last}\n");
        load::read_paths_on(&paths, &mut stdin, &mut loaded, readers);
        loaded
    };
    let one = read(1);
    assert_eq!(one.files, 25);
    assert_eq!(one.objects.len(), 22 * 2 - 2 + 1);
    assert_eq!(one.errors.len(), 2, "{:?}", one.errors);
    for readers in [2, 3, 4, 30] {
        let many = read(readers);
        assert_eq!(many.files, one.files, "{readers}");
        assert_eq!(many.objects, one.objects, "{readers}");
        assert_eq!(many.errors, one.errors, "{readers}");
    }
    // Decoded and projected on the reader threads, put into the index in input order: the
    // same as the objects pushed one by one (the later definition of `twice` counts).
    let expected = ingest(one.objects, "default");
    assert_eq!(expected.duplicates.len(), 1);
    for readers in [1, 2, 3, 30] {
        let mut sink = PreparedSink::default();
        let mut stdin = Cursor::new("apiVersion: v1\nkind: Namespace\nmetadata: {name: last}\n");
        let prepare = |object| prepare(object, "default");
        load::read_paths_prepared_on(&paths, &mut stdin, &prepare, &mut sink, readers);
        assert_eq!(sink.files, one.files, "{readers}");
        assert_eq!(sink.errors, one.errors, "{readers}");
        let got = sink.ingester.finish();
        assert_eq!(got.evaluated, expected.evaluated, "{readers}");
        assert_eq!(got.skipped, expected.skipped, "{readers}");
        assert_eq!(got.errors, expected.errors, "{readers}");
        assert_eq!(got.duplicates, expected.duplicates, "{readers}");
        assert_eq!(got.locations, expected.locations, "{readers}");
        assert_eq!(
            got.implied_namespaces, expected.implied_namespaces,
            "{readers}"
        );
        let namespaces =
            |i: &Ingested| format!("{:?}", i.index.namespaces.iter().collect::<Vec<_>>());
        assert_eq!(namespaces(&got), namespaces(&expected), "{readers}");
        let accounts = |i: &Ingested| {
            format!(
                "{:?}",
                i.index.default_service_accounts.iter().collect::<Vec<_>>()
            )
        };
        assert_eq!(accounts(&got), accounts(&expected), "{readers}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A sink of prepared objects into an ingester.
struct PreparedSink {
    ingester: Ingester,
    errors: Vec<InputError>,
    files: usize,
}

impl Default for PreparedSink {
    fn default() -> Self {
        PreparedSink {
            ingester: Ingester::new("default", None),
            errors: Vec::new(),
            files: 0,
        }
    }
}

impl load::Sink<Prepared> for PreparedSink {
    fn object(&mut self, object: Prepared) {
        self.ingester.push_prepared(object);
    }
    fn error(&mut self, error: InputError) {
        self.errors.push(error);
    }
    fn file(&mut self) {
        self.files += 1;
    }
}

#[test]
fn streaming_check_equals_reading_everything_first() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/check");
    let paths: Vec<String> = ["cluster", "compliant", "broken", "agreement"]
        .iter()
        .map(|d| format!("{fixtures}/{d}"))
        .collect();
    let spec = default_policy();
    let now = Timestamp::UNIX_EPOCH;
    // Everything read first, then ingested (as onus check did before it streamed).
    let loaded = load_paths(&paths, &mut std::io::empty());
    let ingested = ingest(loaded.objects, "default");
    let before = check(&spec, &ingested, now);
    let mut errors = loaded.errors;
    errors.extend(ingested.errors.iter().cloned());
    errors.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    let context = output::Context {
        policy: &cli::PolicySource::Default,
        spec: &spec,
        files: loaded.files,
        ingested: &ingested,
        errors: &errors,
        exit_code: exit_code(&before, errors.len()),
    };
    let mut expected = Vec::new();
    output::json(&mut expected, &context, &before).expect("json");
    // The command, which streams.
    let args = cli::Args {
        paths,
        policy: None,
        format: cli::Format::Json,
        namespace: "default".into(),
        kube_minor: None,
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let code = cli::run(&args, &mut std::io::empty(), &mut out, &mut err);
    assert_eq!(code, context.exit_code);
    assert_eq!(code, EXIT_BAD_INPUT, "broken/ holds bad YAML");
    assert_eq!(
        String::from_utf8(out).expect("utf-8"),
        String::from_utf8(expected).expect("utf-8")
    );
    assert!(!err.is_empty());
}

fn object(file: &str, line: usize, value: serde_json::Value) -> Object {
    Object {
        source: Source {
            file: file.into(),
            line,
        },
        value,
    }
}

fn privileged_deployment(ns: Option<&str>, name: &str) -> serde_json::Value {
    let mut metadata = json!({"name": name});
    if let Some(ns) = ns {
        metadata["namespace"] = json!(ns);
    }
    json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": metadata, "spec": {
        "selector": {}, "template": {"spec": {"containers": [
            {"name": "c", "securityContext": {"privileged": true}}]}}}})
}

#[test]
fn unknown_kinds_and_crds_are_skipped_and_counted_and_bad_objects_are_errors() {
    let objects = vec![
        object(
            "a.yaml",
            1,
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w", "namespace": "x"}}),
        ),
        object(
            "a.yaml",
            5,
            json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition", "metadata": {"name": "widgets.example.com"}}),
        ),
        object(
            "a.yaml",
            9,
            json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}),
        ),
        // A Deployment whose containers are not a list: the watch could not decode it either.
        object(
            "a.yaml",
            12,
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}, "spec": {"template": {"spec": {"containers": "x"}}}}),
        ),
        object(
            "a.yaml",
            20,
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {}}),
        ),
        object("a.yaml", 25, json!({"kind": "Pod"})),
        // An old API version of a known kind: the same shape.
        object("a.yaml", 30, {
            let mut d = privileged_deployment(Some("x"), "old");
            d["apiVersion"] = json!("apps/v1beta2");
            d
        }),
    ];
    let ingested = ingest(objects, "default");
    assert_eq!(ingested.evaluated, 1);
    assert_eq!(
        ingested.skipped,
        BTreeMap::from([
            ("ConfigMap".to_string(), 1),
            ("CustomResourceDefinition".to_string(), 1),
            ("Widget (example.com/v1)".to_string(), 1),
        ])
    );
    let lines: Vec<_> = ingested.errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, [Some(12), Some(20), Some(25)]);
    assert!(ingested.errors[0].reason.contains("Deployment d"));
    // The Widget's and the ConfigMap's namespaces exist, the CRD names none.
    assert_eq!(
        ingested.implied_namespaces.keys().collect::<Vec<_>>(),
        ["default", "x"]
    );
}

#[test]
fn objects_without_a_namespace_land_in_the_default_one_and_offenders_have_lines() {
    let objects = vec![
        object("d.yaml", 3, privileged_deployment(None, "web")),
        object(
            "d.yaml",
            30,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}),
        ),
        object("d.yaml", 40, privileged_deployment(Some("shop"), "api")),
    ];
    let ingested = ingest(objects, "apps");
    let report = check(&default_policy(), &ingested, Timestamp::UNIX_EPOCH);
    let wkl03 = report
        .controls
        .iter()
        .find(|c| c.control.id == "WKL-03")
        .expect("WKL-03");
    assert_eq!(wkl03.result, ControlResult::Fail);
    let at = |file: &str, line| {
        Location::Object(Source {
            file: file.into(),
            line,
        })
    };
    assert_eq!(
        wkl03.offenders,
        [
            Offender {
                object: "Deployment/apps/web".into(),
                location: at("d.yaml", 3)
            },
            Offender {
                object: "Deployment/shop/api".into(),
                location: at("d.yaml", 40)
            },
        ]
    );
    let wkl01 = report
        .controls
        .iter()
        .find(|c| c.control.id == "WKL-01")
        .expect("WKL-01");
    let implied = |line| {
        Location::ImpliedBy(Source {
            file: "d.yaml".into(),
            line,
        })
    };
    assert_eq!(
        wkl01.offenders,
        [
            Offender {
                object: "Namespace/apps".into(),
                location: implied(3)
            },
            Offender {
                object: "Namespace/shop".into(),
                location: at("d.yaml", 30)
            },
        ]
    );
    assert_eq!(exit_code(&report, 0), EXIT_VIOLATIONS);
    assert_eq!(exit_code(&report, 1), EXIT_BAD_INPUT);
}

#[test]
fn a_selector_on_the_name_label_selects_namespaces_as_in_a_cluster() {
    let mut spec = default_policy();
    spec.namespace_selector = Some(
        serde_json::from_value(json!({"matchLabels": {NAME_LABEL: "shop"}})).expect("selector"),
    );
    let objects = vec![
        object("d.yaml", 1, privileged_deployment(Some("shop"), "api")),
        object(
            "d.yaml",
            20,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "other", "labels": {"team": "x"}}}),
        ),
        object("d.yaml", 30, privileged_deployment(Some("other"), "web")),
    ];
    let report = check(&spec, &ingest(objects, "default"), Timestamp::UNIX_EPOCH);
    assert_eq!(report.namespaces, 1);
    let wkl03 = report
        .controls
        .iter()
        .find(|c| c.control.id == "WKL-03")
        .expect("WKL-03");
    assert_eq!(wkl03.offenders.len(), 1);
    assert_eq!(wkl03.offenders[0].object, "Deployment/shop/api");
}

#[test]
fn a_binding_to_a_default_role_grants_what_it_grants_in_a_cluster() {
    // `admin` is not in the input: a cluster has it, with the secrets it reads.
    let binding = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": "devs", "namespace": "shop"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin"},
        "subjects": [{"kind": "Group", "name": "devs", "apiGroup": "rbac.authorization.k8s.io"}]});
    let report = check(
        &default_policy(),
        &ingest(vec![object("r.yaml", 1, binding)], "default"),
        Timestamp::UNIX_EPOCH,
    );
    let iam03 = report
        .controls
        .iter()
        .find(|c| c.control.id == "IAM-03")
        .expect("IAM-03");
    assert_eq!(iam03.result, ControlResult::Fail);
    assert_eq!(
        iam03.offenders[0].object,
        "RoleBinding/shop/devs: Group/devs"
    );
}

#[test]
fn an_aggregated_cluster_role_grants_what_the_roles_it_selects_grant() {
    // As a chart ships it: the aggregated role has no rules; kube-controller-manager would
    // fill them from the roles its selector picks.
    let rbac = |kind: &str, metadata: serde_json::Value, rest: serde_json::Value| {
        let mut v = json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": kind,
            "metadata": metadata});
        for (k, x) in rest.as_object().expect("fields") {
            v[k] = x.clone();
        }
        v
    };
    let objects = vec![
        object(
            "r.yaml",
            1,
            rbac(
                "ClusterRole",
                json!({"name": "widgets"}),
                json!({
            "aggregationRule": {"clusterRoleSelectors": [
                {"matchLabels": {"example.com/aggregate-to-widgets": "true"}}]}}),
            ),
        ),
        object(
            "r.yaml",
            9,
            rbac(
                "ClusterRole",
                json!({"name": "widgets-all",
            "labels": {"example.com/aggregate-to-widgets": "true"}}),
                json!({
            "rules": [{"apiGroups": ["example.com"], "resources": ["*"], "verbs": ["*"]}]}),
            ),
        ),
        object(
            "r.yaml",
            20,
            rbac(
                "RoleBinding",
                json!({"name": "ops", "namespace": "shop"}),
                json!({"roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                "name": "widgets"},
            "subjects": [{"kind": "User", "name": "bob", "apiGroup": "rbac.authorization.k8s.io"}]}),
            ),
        ),
    ];
    let ingested = ingest(objects, "default");
    let report = check(&default_policy(), &ingested, Timestamp::UNIX_EPOCH);
    let iam02 = report
        .controls
        .iter()
        .find(|c| c.control.id == "IAM-02")
        .expect("IAM-02");
    assert_eq!(iam02.result, ControlResult::Fail);
    assert_eq!(
        iam02.offenders,
        [Offender {
            object: "RoleBinding/shop/ops: User/bob".into(),
            location: Location::Object(Source {
                file: "r.yaml".into(),
                line: 20
            }),
        }]
    );
    // The output says what the rules were computed from.
    assert_eq!(
        ingested.aggregations,
        [AggregationNote {
            name: "widgets".into(),
            source: Source {
                file: "r.yaml".into(),
                line: 1
            },
            selected: vec!["widgets-all".into()],
        }]
    );
}

#[test]
fn policies_are_read_from_an_object_or_a_bare_spec_and_typos_are_refused() {
    let spec = cli::parse_policy(
        "p.yaml",
        "apiVersion: onus.dev/v1alpha1\nkind: ResponsibilityPolicy\nmetadata: {name: p}\nspec:\n  serviceModel: IaaS\n  controls: {podSecurity: {level: baseline}}\n",
    )
    .expect("policy");
    assert_eq!(spec.service_model, ServiceModel::IaaS);
    assert!(cli::parse_policy("p.yaml", "serviceModel: SaaS\n").is_ok());
    let typo = cli::parse_policy(
        "p.yaml",
        "serviceModel: PaaS\ncontrols:\n  podSecurity: {levle: baseline}\n",
    )
    .unwrap_err();
    assert!(
        typo.contains("unknown field spec.controls.podSecurity.levle"),
        "{typo}"
    );
    let invalid = cli::parse_policy(
        "p.yaml",
        "serviceModel: PaaS\nexceptions: [{controls: [XYZ-01], reason: r}]\n",
    )
    .unwrap_err();
    assert!(invalid.contains("unknown control"), "{invalid}");
    let version = cli::parse_policy(
        "p.yaml",
        "serviceModel: PaaS\ncontrols: {podSecurity: {version: v2}}\n",
    )
    .unwrap_err();
    assert!(version.contains("version"), "{version}");
    assert!(cli::parse_policy("p.yaml", "apiVersion: v1\nkind: ConfigMap\n").is_err());
    assert!(cli::parse_policy("p.yaml", "serviceModel: PaaS\n---\nserviceModel: IaaS\n").is_err());
}

#[test]
fn the_command_line_is_parsed() {
    let parse = |args: &[&str]| cli::parse(args.iter().map(|a| a.to_string()));
    assert_eq!(
        parse(&[
            "-f",
            "a",
            "--filename=b",
            "-f",
            "-",
            "--policy",
            "p.yaml",
            "-o",
            "json",
            "-n",
            "apps",
            "--kube-version=v1.30"
        ]),
        Ok(cli::Command::Check(cli::Args {
            paths: vec!["a".into(), "b".into(), "-".into()],
            policy: Some("p.yaml".into()),
            format: cli::Format::Json,
            namespace: "apps".into(),
            kube_minor: Some(30),
        }))
    );
    assert!(parse(&[]).is_err(), "no input");
    assert!(parse(&["-f", "a", "--output", "xml"]).is_err());
    for bad in ["latest", "v2.1", "v1.", "v1.x", "1", "v1.030", ""] {
        assert!(
            parse(&["-f", "a", "--kube-version", bad]).is_err(),
            "--kube-version {bad:?}"
        );
    }
    assert_eq!(cli::kube_minor("1.33"), Ok(33));
    assert!(parse(&["-f"]).is_err());
    assert!(parse(&["-f", "a", "--policy", "p", "--policy", "q"]).is_err());
    assert_eq!(parse(&["--help"]), Ok(cli::Command::Help));
}

/// The controller's way into the index, written out from `controller::watch::watch_all`: each
/// watched kind decoded from its JSON text into the watch's shape, projected by the watch's
/// facts function into the watch's map(s).
fn controller_index(objects: &[serde_json::Value]) -> Index {
    fn from<T: DeserializeOwned>(v: &serde_json::Value) -> T {
        serde_json::from_str(&v.to_string()).expect("decodes as the watch decodes it")
    }
    let mut index = Index::default();
    for v in objects {
        let meta = &v["metadata"];
        let key = Key::new(
            meta["namespace"].as_str(),
            meta["name"].as_str().unwrap_or_default(),
        );
        let k = key.clone();
        match v["kind"].as_str().unwrap_or_default() {
            "Namespace" => {
                index.namespaces.apply(k, facts::namespace(&from(v)));
            }
            "NetworkPolicy" => {
                index
                    .network_policies
                    .apply(k, facts::network_policy(&from(v)));
            }
            "ServiceAccount" => {
                index
                    .default_service_accounts
                    .apply(k, facts::default_service_account(&from(v)));
            }
            "Service" => {
                index.external_ips.apply(k, facts::external_ips(&from(v)));
            }
            "Role" => {
                index.roles.apply(k, facts::role(&from(v)));
            }
            "ClusterRole" => {
                index.cluster_roles.apply(k, facts::cluster_role(&from(v)));
            }
            "RoleBinding" => {
                index.role_bindings.apply(k, facts::role_binding(&from(v)));
            }
            "ClusterRoleBinding" => {
                index
                    .cluster_role_bindings
                    .apply(k, facts::cluster_role_binding(&from(v)));
            }
            "Deployment" => {
                index
                    .workloads_mut(WorkloadKind::Deployment)
                    .apply(k, facts::deployment(&from(v)));
            }
            "StatefulSet" => {
                index
                    .workloads_mut(WorkloadKind::StatefulSet)
                    .apply(k, facts::stateful_set(&from(v)));
            }
            "DaemonSet" => {
                index
                    .workloads_mut(WorkloadKind::DaemonSet)
                    .apply(k, facts::daemon_set(&from(v)));
            }
            "ReplicaSet" => {
                let rs: WorkloadObject = from(v);
                index
                    .workloads_mut(WorkloadKind::ReplicaSet)
                    .apply(k.clone(), facts::replica_set(&rs));
                index
                    .replica_set_owners
                    .apply(k, facts::replica_set_owner(&rs));
            }
            "Job" => {
                let job: WorkloadObject = from(v);
                index
                    .workloads_mut(WorkloadKind::Job)
                    .apply(k.clone(), facts::job(&job));
                index.job_owners.apply(k, facts::job_owner(&job));
            }
            "CronJob" => {
                index
                    .workloads_mut(WorkloadKind::CronJob)
                    .apply(k, facts::cron_job(&from(v)));
            }
            "Pod" => {
                let pod: PodObject = from(v);
                index
                    .workloads_mut(WorkloadKind::Pod)
                    .apply(k.clone(), facts::pod(&pod));
                index.owned_pods.apply(k, facts::owned_pod(&pod));
            }
            _ => {}
        }
    }
    index
}

/// What a cluster holds for these manifests once applied: every object with its namespace
/// set, a Namespace (with the name label the API server sets) for every namespace used, and
/// Kubernetes' default roles.
fn as_applied(objects: &[Object]) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let mut namespaces = std::collections::BTreeSet::new();
    for o in objects {
        let mut v = o.value.clone();
        let kind = v["kind"].as_str().unwrap_or_default().to_string();
        if kind == "Namespace" {
            let name = v["metadata"]["name"].clone();
            v["metadata"]["labels"][NAME_LABEL] = name;
            namespaces.insert(
                v["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
        } else if !matches!(kind.as_str(), "ClusterRole" | "ClusterRoleBinding")
            && v["metadata"]["namespace"].is_null()
        {
            v["metadata"]["namespace"] = json!("default");
        }
        out.push(v);
    }
    let used: std::collections::BTreeSet<String> = out
        .iter()
        .filter_map(|v| v["metadata"]["namespace"].as_str().map(String::from))
        .collect();
    for ns in used.difference(&namespaces) {
        out.push(json!({"apiVersion": "v1", "kind": "Namespace",
            "metadata": {"name": ns, "labels": {NAME_LABEL: ns}}}));
    }
    let (cluster_roles, roles) = crate::rbac::defaults::bootstrap_roles();
    let defined = |kind: &str, ns: Option<&str>, name: Option<&str>| {
        out.iter().any(|v| {
            v["kind"] == kind
                && v["metadata"]["namespace"].as_str() == ns
                && v["metadata"]["name"].as_str() == name
        })
    };
    let mut defaults = Vec::new();
    for r in cluster_roles {
        if !defined("ClusterRole", None, r.metadata.name.as_deref()) {
            let mut v = serde_json::to_value(&r).expect("role");
            v["kind"] = json!("ClusterRole");
            defaults.push(v);
        }
    }
    for r in roles {
        if !defined(
            "Role",
            r.metadata.namespace.as_deref(),
            r.metadata.name.as_deref(),
        ) {
            let mut v = serde_json::to_value(&r).expect("role");
            v["kind"] = json!("Role");
            defaults.push(v);
        }
    }
    out.extend(defaults);
    out
}

/// (control, result, offenders) of an evaluation.
fn verdicts(evaluation: &Evaluation) -> Vec<(&'static str, ControlResult, Vec<String>)> {
    evaluation
        .outcomes
        .iter()
        .map(|o| {
            (
                o.control.id,
                o.result,
                o.violations.iter().map(|v| v.example.clone()).collect(),
            )
        })
        .collect()
}

#[test]
fn check_verdicts_equal_the_controllers_evaluation_of_the_same_objects() {
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/check/cluster");
    let loaded = load_paths(&[fixtures.to_string()], &mut std::io::empty());
    assert_eq!(loaded.errors, []);
    let objects = loaded.objects;
    let policy = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/check/policy.yaml"
    );
    let specs = [
        default_policy(),
        cli::read_policy(policy).expect("policy"),
        ResponsibilityPolicySpec {
            service_model: ServiceModel::SaaS,
            ..default_policy()
        },
    ];
    let now = Timestamp::UNIX_EPOCH;
    let ingested = ingest(objects.clone(), "default");
    let controller = controller_index(&as_applied(&objects));
    for spec in &specs {
        let from_check = check(spec, &ingested, now);
        let expected = evaluate::evaluate(spec, &controller, now);
        let got: Vec<_> = from_check
            .controls
            .iter()
            .map(|c| {
                (
                    c.control.id,
                    c.result,
                    c.offenders
                        .iter()
                        .map(|o| o.object.clone())
                        .collect::<Vec<_>>(),
                )
            })
            .collect();
        assert_eq!(got, verdicts(&expected), "{:?}", spec.service_model);
        assert_eq!(from_check.namespaces, expected.namespaces);
        assert_eq!(from_check.gaps, expected.gaps);
    }
    // The fixture exercises every map the watches feed that a control reads.
    let failing: Vec<&str> = check(&specs[0], &ingested, now)
        .failing()
        .map(|c| c.control.id)
        .collect();
    for id in [
        "IAM-01", "IAM-09", "WKL-01", "WKL-02", "WKL-03", "WKL-10", "NET-01", "NET-05", "DAT-01",
        "AUD-01",
    ] {
        assert!(failing.contains(&id), "{id} not failing: {failing:?}");
    }
}
