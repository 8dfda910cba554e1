//! Property tests of the facts projection: an object decoded straight into its wire shape and
//! projected gives the fact that the full typed object gives (k8s-openapi's decoding, the
//! reference), whatever the pod spec, the kind, the owner and the fields no control reads.

use k8s_openapi::{
    api::{
        apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet},
        batch::v1::{CronJob, Job},
        core::v1::{Pod, PodSpec, PodTemplateSpec},
    },
    apimachinery::pkg::apis::meta::v1::ObjectMeta,
};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::podsecurity::{Verdicts, tests::verdicts::pods};

const KINDS: [WorkloadKind; 7] = [
    WorkloadKind::Deployment,
    WorkloadKind::StatefulSet,
    WorkloadKind::DaemonSet,
    WorkloadKind::ReplicaSet,
    WorkloadKind::Job,
    WorkloadKind::CronJob,
    WorkloadKind::Pod,
];

/// How a container takes its configuration: the DAT-01 cases and their look-alikes.
fn env_variant(choice: u8) -> Option<(&'static str, Value)> {
    match choice % 7 {
        0 => None,
        1 => Some(("env", json!([{"name": "A", "value": "plain"}]))),
        2 => Some((
            "env",
            json!([{"name": "PW", "valueFrom": {"secretKeyRef": {"name": "db", "key": "pw"}}}]),
        )),
        3 => Some((
            "env",
            json!([{"name": "C", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}]),
        )),
        4 => Some(("envFrom", json!([{"secretRef": {"name": "db"}}]))),
        5 => Some(("envFrom", json!([{"configMapRef": {"name": "c"}}]))),
        _ => Some((
            "env",
            json!([{"name": "F", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]),
        )),
    }
}

/// The generated pod spec as JSON, each container given an env variant.
fn spec_json(spec: &PodSpec, env: &[u8]) -> Value {
    let mut spec = serde_json::to_value(spec).expect("a pod spec serialises");
    let mut choices = env.iter().copied().cycle();
    for list in ["initContainers", "containers", "ephemeralContainers"] {
        for c in spec[list].as_array_mut().into_iter().flatten() {
            if let Some((key, value)) = env_variant(choices.next().unwrap_or(0)) {
                c[key] = value;
            }
        }
    }
    spec
}

/// Fields no control reads, in the places real objects carry them.
fn add_noise(object: &mut Value, template_path: &[&str]) {
    object["metadata"]["managedFields"] = json!([{
        "manager": "kubectl", "operation": "Apply", "apiVersion": "apps/v1",
        "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:replicas": {}}}
    }]);
    object["metadata"]["labels"] = json!({"app": "web", "tier": "x".repeat(60)});
    object["metadata"]["uid"] = json!("6b7f0c56-0d6e-4b8e-9d1a-2f3e4c5d6e7f");
    object["status"] =
        json!({"replicas": 3, "conditions": [{"type": "Available", "status": "True"}]});
    let mut spec = &mut *object;
    for key in template_path {
        spec = &mut spec[*key];
    }
    let spec = &mut spec["spec"];
    spec["nodeSelector"] = json!({"zone": "a"});
    spec["serviceAccountName"] = json!("builder");
    spec["terminationGracePeriodSeconds"] = json!(30);
    for c in spec["containers"].as_array_mut().into_iter().flatten() {
        c["image"] = json!("registry.example/app@sha256:0123");
        c["command"] = json!(["/bin/app", "--serve"]);
        c["resources"] = json!({"limits": {"cpu": "1", "memory": "1Gi"}});
        c["volumeMounts"] = json!([{"name": "data", "mountPath": "/data"}]);
    }
}

/// Where the pod template is in each kind (the Pod is its own template).
fn template_path(kind: WorkloadKind) -> &'static [&'static str] {
    match kind {
        WorkloadKind::Pod => &[],
        WorkloadKind::CronJob => &["spec", "jobTemplate", "spec", "template"],
        _ => &["spec", "template"],
    }
}

/// The object of `kind` around the generated template, controlled by `owner` if any.
fn object(kind: WorkloadKind, template: &Value, owner: Option<(&str, &str)>) -> Value {
    let mut object = match kind {
        WorkloadKind::Pod => template.clone(),
        WorkloadKind::CronJob => json!({
            "spec": {"schedule": "@daily", "jobTemplate": {"spec": {"template": template}}}
        }),
        _ => json!({"spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template}}),
    };
    object["metadata"]["name"] = json!("web");
    object["metadata"]["namespace"] = json!("shop");
    if let Some((api_version, owner_kind)) = owner {
        object["metadata"]["ownerReferences"] = json!([{
            "apiVersion": api_version, "kind": owner_kind, "name": "up",
            "uid": "u", "controller": true
        }]);
    }
    object
}

/// The reference: the typed object's template, as k8s-openapi decodes it.
fn typed_template(kind: WorkloadKind, object: &Value) -> PodTemplateSpec {
    fn de<T: serde::de::DeserializeOwned>(v: &Value) -> T {
        serde_json::from_value(v.clone()).expect("the typed object decodes")
    }
    match kind {
        WorkloadKind::Deployment => de::<Deployment>(object).spec.template,
        WorkloadKind::StatefulSet => de::<StatefulSet>(object).spec.template,
        WorkloadKind::DaemonSet => de::<DaemonSet>(object).spec.template,
        WorkloadKind::ReplicaSet => de::<ReplicaSet>(object).spec.template.expect("a template"),
        WorkloadKind::Job => de::<Job>(object).spec.expect("a spec").template,
        WorkloadKind::CronJob => {
            de::<CronJob>(object)
                .spec
                .job_template
                .spec
                .expect("a job spec")
                .template
        }
        WorkloadKind::Pod => {
            let pod = de::<Pod>(object);
            PodTemplateSpec {
                metadata: Some(pod.metadata),
                spec: pod.spec,
            }
        }
    }
}

/// The reference's DAT-01 answer: every container (init, regular, ephemeral) that takes a
/// Secret through `env` or `envFrom`.
fn reference_secret_env(spec: &PodSpec) -> Vec<String> {
    let reads = |env: &Option<Vec<k8s_openapi::api::core::v1::EnvVar>>,
                 from: &Option<Vec<k8s_openapi::api::core::v1::EnvFromSource>>| {
        env.iter().flatten().any(|e| {
            e.value_from
                .as_ref()
                .is_some_and(|v| v.secret_key_ref.is_some())
        }) || from.iter().flatten().any(|e| e.secret_ref.is_some())
    };
    let regular = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .filter(|c| reads(&c.env, &c.env_from))
        .map(|c| c.name.clone());
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .filter(|c| reads(&c.env, &c.env_from))
        .map(|c| c.name.clone());
    regular.chain(ephemeral).collect()
}

/// The fact the wire path gives for the JSON text of an object of `kind`.
fn projected(kind: WorkloadKind, text: &str) -> Option<WorkloadFact> {
    if kind == WorkloadKind::Pod {
        pod(&serde_json::from_str(text).expect("the wire shape decodes"))
    } else {
        workload(
            kind,
            &serde_json::from_str(text).expect("the wire shape decodes"),
        )
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// An uncontrolled object of every kind projects to the verdicts and DAT-01 answer of its
    /// full typed template; fields no control reads change nothing.
    #[test]
    fn a_workload_projects_to_what_its_typed_object_says(
        (meta, spec) in pods(),
        env in proptest::collection::vec(any::<u8>(), 8),
        kind in proptest::sample::select(KINDS.to_vec()),
        noise in any::<bool>(),
    ) {
        let template = json!({"metadata": meta, "spec": spec_json(&spec, &env)});
        let mut object = object(kind, &template, None);
        let quiet = projected(kind, &object.to_string());
        if noise {
            add_noise(&mut object, template_path(kind));
        }
        let text = object.to_string();
        let fact = projected(kind, &text);
        prop_assert_eq!(&fact, &quiet, "fields no control reads changed the fact");
        let fact = fact.expect("an uncontrolled workload is a fact");
        let typed = typed_template(kind, &object);
        let typed_spec = typed.spec.expect("a template spec");
        let annotations = ObjectMeta {
            annotations: typed.metadata.and_then(|m| m.annotations),
            ..ObjectMeta::default()
        };
        prop_assert_eq!(fact.verdicts, Verdicts::of(&annotations, &typed_spec));
        prop_assert_eq!(fact.secret_env, reference_secret_env(&typed_spec));
        prop_assert_eq!((fact.kind, fact.namespace.as_str(), fact.name.as_str()), (kind, "shop", "web"));
    }

    /// A Pod its controller runs is no workload of its own but an owned Pod, with the running
    /// Pod's own verdicts (which can differ from the template's); a claim of control from a
    /// look-alike API group is not believed.
    #[test]
    fn an_owned_pod_keeps_its_own_verdicts_and_a_look_alike_owner_is_not_believed(
        (meta, spec) in pods(),
        env in proptest::collection::vec(any::<u8>(), 8),
        owner in proptest::sample::select(vec![
            ("apps/v1", "ReplicaSet", true),
            ("apps/v1", "StatefulSet", true),
            ("apps/v1", "DaemonSet", true),
            ("batch/v1", "Job", true),
            ("batch/v1", "ReplicaSet", false),
            ("example.com/v1", "Job", false),
            ("apps.example.com/v1", "ReplicaSet", false),
            ("v1", "DaemonSet", false),
            ("apps/v1", "Deployment", false),
        ]),
    ) {
        let (api_version, owner_kind, believed) = owner;
        let pod_json = object(
            WorkloadKind::Pod,
            &json!({"metadata": meta, "spec": spec_json(&spec, &env)}),
            Some((api_version, owner_kind)),
        );
        let wire: wire::PodObject = serde_json::from_str(&pod_json.to_string()).expect("decodes");
        let typed: Pod = serde_json::from_value(pod_json).expect("typed");
        let typed_spec = typed.spec.expect("spec");
        if believed {
            prop_assert!(pod(&wire).is_none(), "counted through its controller");
            let owned = owned_pod(&wire).expect("an owned Pod");
            prop_assert_eq!(&owned.controller.1, "up");
            let annotations = ObjectMeta {
                annotations: typed.metadata.annotations,
                ..ObjectMeta::default()
            };
            prop_assert_eq!(owned.verdicts, Verdicts::of(&annotations, &typed_spec));
        } else {
            prop_assert!(owned_pod(&wire).is_none());
            let fact = pod(&wire).expect("a bare Pod of its own");
            prop_assert_eq!(fact.secret_env, reference_secret_env(&typed_spec));
        }
    }
}
