//! Tinkerbell's own files: every one parses, round-trips, and renders or validates
//! the way Tinkerbell would.

use std::path::{Path, PathBuf};
use tinker_core::model::{
    Document, Hardware, Object, Template, Workflow, parse_documents, to_yaml,
};
use tinker_core::{Error, render, validate};

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/tinkerbell")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("fixtures folder") {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

fn load(rel: &str) -> Vec<Document> {
    let path = fixtures_dir().join(rel);
    let text = std::fs::read_to_string(&path).unwrap();
    parse_documents(rel, &text).unwrap()
}

fn objects(docs: &[Document]) -> Vec<&Object> {
    docs.iter()
        .filter_map(|d| match d {
            Document::Object(o) => Some(o),
            _ => None,
        })
        .collect()
}

#[test]
fn every_fixture_parses_and_round_trips() {
    let mut files = Vec::new();
    yaml_files(&fixtures_dir(), &mut files);
    assert!(files.len() >= 10, "fixtures found: {files:?}");
    for path in files {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(&path).unwrap();
        let docs = parse_documents(&name, &text).unwrap_or_else(|e| panic!("{e}"));
        assert!(!docs.is_empty(), "{name}: no documents");
        let written = to_yaml(&docs).unwrap();
        let again = parse_documents(&name, &written)
            .unwrap_or_else(|e| panic!("{name} rewritten: {e}\n{written}"));
        assert_eq!(
            docs, again,
            "{name}: parse -> write -> parse changed the value"
        );
    }
}

#[test]
fn v1alpha1_kinds_are_typed_and_others_kept_verbatim() {
    let list = load("v1alpha1/backend-file-hardware-list.yaml");
    assert_eq!(objects(&list).len(), 5);
    assert!(
        objects(&list)
            .iter()
            .all(|o| matches!(o, Object::Hardware(_)))
    );
    let actions = load("v1alpha1/file_template.yaml");
    assert!(
        matches!(&actions[..], [Document::AgentActions(a)] if a.len() == 4 && a[0].env[1].key == "key2")
    );
    let v2 = load("v1alpha2/hardware.yaml");
    assert!(
        matches!(&v2[..], [Document::Unsupported { api_version, kind, .. }] if api_version == "tinkerbell.org/v1alpha2" && kind == "Hardware")
    );
    let job = load("v1alpha2/job.yaml");
    assert!(matches!(&job[..], [Document::Unsupported { kind, .. }] if kind == "Job"));
}

fn hardware_for(name: &str, mac: &str, disk: &str) -> Hardware {
    let mut hw = Hardware::new(
        name,
        mac.parse().unwrap(),
        "192.168.2.20".parse().unwrap(),
        "255.255.255.0",
    );
    hw.metadata.namespace = Some("tinkerbell".into());
    hw.spec.disks.push(tinker_core::model::Disk {
        device: disk.into(),
        extra: Default::default(),
    });
    hw
}

fn template_and_workflow(docs: &[Document]) -> (Template, Workflow) {
    let mut t = None;
    let mut w = None;
    for o in objects(docs) {
        match o {
            Object::Template(x) => t = Some(x.clone()),
            Object::Workflow(x) => w = Some(x.clone()),
            _ => {}
        }
    }
    (t.unwrap(), w.unwrap())
}

#[test]
fn docs_template_needs_every_variable_it_names() {
    let docs = load("v1alpha1/docs-ubuntu-template.yaml");
    let (template, mut workflow) = template_and_workflow(&docs);
    let hw = hardware_for("hardware-1", "02:00:00:00:00:01", "/dev/nvme0n1");

    // The documentation's workflow maps only device_1: rendering names what is missing.
    let err = render::instantiate(&workflow, &template, Some(&hw)).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains(".artifact_server_ip_port") && msg.contains("hardwareMap"),
        "{msg}"
    );
    assert!(
        matches!(&err, Error::Template(e) if e.missing_key.as_deref() == Some(".artifact_server_ip_port"))
    );

    workflow
        .spec
        .hardware_map
        .insert("artifact_server_ip_port".into(), "10.1.1.11:8080".into());
    workflow
        .spec
        .hardware_map
        .insert("tootles_ip_port".into(), "10.1.1.11:7080".into());
    let status = render::instantiate(&workflow, &template, Some(&hw)).unwrap();
    assert_eq!(status.action_count(), 4);
    assert_eq!(status.global_timeout, Some(9800));
    let task = &status.tasks[0];
    assert_eq!(task.agent_id, "02:00:00:00:00:01");
    let stream = &task.actions[0];
    assert_eq!(stream.environment["DEST_DISK"], "/dev/nvme0n1");
    assert_eq!(
        stream.environment["IMG_URL"],
        "http://10.1.1.11:8080/jammy-server-cloudimg-amd64.raw.gz"
    );
    assert_eq!(stream.environment["COMPRESSED"], "true");
    assert_eq!(
        stream.environment["GLOBAL_VALUE"], "my global value",
        "task environment is inherited"
    );
    assert_eq!(stream.volumes[0], "/dev:/dev");
    let ds = &task.actions[2];
    assert_eq!(
        ds.environment["DEST_DISK"], "/dev/nvme0n1p1",
        "formatPartition"
    );
    assert_eq!(
        ds.environment["MODE"], "0600",
        "octal text is kept as written"
    );
    assert_eq!(ds.environment["UID"], "0");
    assert!(
        task.actions[1].environment["CONTENTS"]
            .contains("metadata_urls: [\"http://10.1.1.11:7080\"]")
    );
}

#[test]
fn grpc_template_renders_with_its_workflow() {
    let mut docs = load("v1alpha1/grpc_template.yaml");
    docs.extend(load("v1alpha1/grpc_workflow.yaml"));
    let (template, workflow) = template_and_workflow(&docs);
    let status = render::instantiate(&workflow, &template, None).unwrap();
    assert_eq!(status.action_count(), 6);
    assert_eq!(status.tasks[0].agent_id, "52:54:00:0f:2e:67");
    assert_eq!(status.tasks[0].actions[5].pid.as_deref(), Some("host"));
    assert_eq!(status.tasks[0].actions[0].command, ["sleep", "2"]);
    assert!(
        validate::documents("grpc", &docs).0.is_empty(),
        "{}",
        validate::documents("grpc", &docs)
    );
}

#[test]
fn fixture_bad_data_is_reported_with_file_field_and_reason() {
    let docs = load("v1alpha1/backend-file-hardware-list.yaml");
    let errs = validate::documents("backend-file-hardware-list.yaml", &docs);
    assert_eq!(errs.0.len(), 1, "{errs}");
    let e = &errs.0[0];
    assert_eq!(e.file, "backend-file-hardware-list.yaml");
    assert_eq!(e.object, "Hardware default/bad-data");
    assert_eq!(e.path, "spec.interfaces[0].dhcp.ip.address");
    assert!(e.reason.contains("\"3\" is not an IPv4 address"), "{e}");
}

#[test]
fn the_clean_fixtures_validate() {
    for f in [
        "v1alpha1/docs-ubuntu-template.yaml",
        "v1alpha1/file_template.yaml",
        "v1alpha1/grpc_template.yaml",
        "v1alpha1/grpc_workflow.yaml",
    ] {
        let errs = validate::documents(f, &load(f));
        assert!(errs.0.is_empty(), "{f}: {errs}");
    }
}
