//! Invalid input gets an error that names the file, the field and the reason.

use tinker_core::model::parse_documents;
use tinker_core::validate;

fn findings(yaml: &str) -> Vec<(String, String)> {
    let docs = parse_documents("in.yaml", yaml).unwrap_or_else(|e| panic!("{e}"));
    validate::documents("in.yaml", &docs)
        .0
        .into_iter()
        .map(|e| {
            assert_eq!(e.file, "in.yaml");
            (e.path, e.reason)
        })
        .collect()
}

fn has(findings: &[(String, String)], path: &str, reason: &str) {
    assert!(
        findings
            .iter()
            .any(|(p, r)| p == path && r.contains(reason)),
        "wanted {path}: ...{reason}... in {findings:#?}"
    );
}

const HW: &str = "apiVersion: tinkerbell.org/v1alpha1\nkind: Hardware\nmetadata: {name: m1}\nspec:\n  interfaces:\n";

#[test]
fn bad_mac() {
    let f = findings(&format!("{HW}    - dhcp: {{mac: \"08:00:27:29:4e\"}}\n"));
    has(&f, "spec.interfaces[0].dhcp.mac", "is not a MAC address");
    let f = findings(&format!("{HW}    - dhcp: {{hostname: x}}\n"));
    has(&f, "spec.interfaces[0].dhcp.mac", "missing");
}

#[test]
fn bad_ip_netmask_and_gateway() {
    let f = findings(&format!(
        "{HW}    - dhcp: {{mac: \"08:00:27:29:4e:67\", ip: {{address: 10.0.0.300, netmask: 255.0.255.0, gateway: 10.0.0.1}}}}\n"
    ));
    has(
        &f,
        "spec.interfaces[0].dhcp.ip.address",
        "not an IPv4 address",
    );
    has(&f, "spec.interfaces[0].dhcp.ip.netmask", "not contiguous");
    let f = findings(&format!(
        "{HW}    - dhcp: {{mac: \"08:00:27:29:4e:67\", ip: {{address: 10.0.0.5, netmask: 255.255.255.0, gateway: 10.0.1.1}}, name_servers: [dns.example]}}\n"
    ));
    has(
        &f,
        "spec.interfaces[0].dhcp.ip.gateway",
        "not in the interface's subnet 10.0.0.5/24",
    );
    has(
        &f,
        "spec.interfaces[0].dhcp.name_servers[0]",
        "not an IPv4 address",
    );
}

#[test]
fn duplicate_macs_and_ips_across_hardware() {
    let two = "apiVersion: tinkerbell.org/v1alpha1\nkind: Hardware\nmetadata: {name: a}\nspec: {interfaces: [{dhcp: {mac: \"08:00:27:29:4e:67\", ip: {address: 10.0.0.5}}}]}\n---\napiVersion: tinkerbell.org/v1alpha1\nkind: Hardware\nmetadata: {name: b}\nspec: {interfaces: [{dhcp: {mac: \"08:00:27:29:4E:67\", ip: {address: 10.0.0.5}}}]}\n";
    let f = findings(two);
    has(
        &f,
        "spec.interfaces",
        "MAC 08:00:27:29:4e:67 is also used by Hardware default/a",
    );
    has(&f, "spec.interfaces", "10.0.0.5 is also reserved");
}

fn template(data: &str) -> String {
    let indented: String = data.lines().map(|l| format!("    {l}\n")).collect();
    format!(
        "apiVersion: tinkerbell.org/v1alpha1\nkind: Template\nmetadata: {{name: t1}}\nspec:\n  data: |\n{indented}"
    )
}

#[test]
fn template_rules() {
    let f = findings(&template(
        "name: t1\nglobal_timeout: 0\ntasks:\n  - name: a\n    worker: \"{{.device_1}}\"\n    actions:\n      - name: same\n        image: busybox\n        timeout: -5\n      - name: same\n        image: \"\"\n",
    ));
    has(&f, "spec.data: global_timeout", "positive number");
    has(
        &f,
        "spec.data: tasks[0].actions[0].timeout",
        "positive number of seconds, not -5",
    );
    has(
        &f,
        "spec.data: tasks[0].actions[1].name",
        "duplicate action name \"same\"",
    );
    has(&f, "spec.data: tasks[0].actions[1].image", "missing image");
    let f = findings(&template(
        "name: t1\ntasks:\n  - name: a\n    worker: w\n    actions:\n      - name: x\n        image: \"Not A Ref!\"\n",
    ));
    has(
        &f,
        "spec.data: tasks[0].actions[0].image",
        "not a valid image reference",
    );
}

#[test]
fn template_unknown_keys_and_syntax_errors() {
    let f = findings(&template(
        "name: t1\ntasks:\n  - name: a\n    worker: w\n    actions:\n      - name: x\n        image: busybox\n        enviroment: {A: b}\n",
    ));
    assert!(
        f.iter()
            .any(|(p, r)| p == "spec.data" && r.contains("enviroment")),
        "{f:?}"
    );
    let f = findings(&template("name: t1\n{{ if .device_1 }}\ntasks: []\n"));
    assert!(
        f.iter()
            .any(|(p, r)| p == "spec.data" && r.contains("{{end}}")),
        "{f:?}"
    );
}

#[test]
fn template_variable_without_value_names_it() {
    let docs = "apiVersion: tinkerbell.org/v1alpha1\nkind: Template\nmetadata: {name: t1}\nspec:\n  data: |\n    name: t1\n    tasks:\n      - name: a\n        worker: \"{{.device_1}}\"\n        actions:\n          - name: x\n            image: busybox\n            environment: {URL: \"http://{{.server}}/img\"}\n---\napiVersion: tinkerbell.org/v1alpha1\nkind: Workflow\nmetadata: {name: w1}\nspec: {templateRef: t1, hardwareRef: h1, hardwareMap: {device_1: \"02:00:00:00:00:01\"}}\n";
    let f = findings(docs);
    has(
        &f,
        "spec.templateRef (rendered)",
        "template variable .server has no value: add \"server\" to the hardwareMap of Workflow default/w1",
    );
}

#[test]
fn workflow_rules() {
    let f = findings(
        "apiVersion: tinkerbell.org/v1alpha1\nkind: Workflow\nmetadata: {name: Bad_Name}\nspec: {hardwareMap: {device_1: nope}}\n",
    );
    has(&f, "metadata.name", "not a valid name");
    has(&f, "spec.templateRef", "missing");
    has(&f, "spec.hardwareRef", "missing");
    has(&f, "spec.hardwareMap.device_1", "not a MAC address");
}

#[test]
fn parse_errors_name_the_field() {
    let err = parse_documents(
        "in.yaml",
        &format!("{HW}    - dhcp: {{mac: \"08:00:27:29:4e:67\", lease_time: soon}}\n"),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with("in.yaml: document 1: spec.interfaces[0].dhcp.lease_time: invalid type"),
        "{msg}"
    );
    let err = parse_documents("in.yaml", "a: [unclosed\n").unwrap_err();
    assert!(err.to_string().starts_with("in.yaml: document 1:"), "{err}");
    let err = parse_documents("in.yaml", "just: a map\n").unwrap_err();
    assert!(err.to_string().contains("apiVersion"), "{err}");
}

#[test]
fn unknown_fields_are_kept() {
    let yaml = format!(
        "{HW}    - dhcp: {{mac: \"08:00:27:29:4e:67\", future_option: 7}}\n      isoboot: {{sourceISO: http://x/iso}}\n  resources: {{cpu: \"4\"}}\nstatus: {{state: Ready}}\nextraTop: yes\n"
    );
    let docs = parse_documents("in.yaml", &yaml).unwrap();
    let out = tinker_core::model::to_yaml(&docs).unwrap();
    for kept in [
        "future_option: 7",
        "sourceISO",
        "cpu: '4'",
        "state: Ready",
        "extraTop",
    ] {
        assert!(out.contains(kept), "{kept} lost:\n{out}");
    }
}

#[test]
fn files_are_checked_together() {
    use tinker_core::validate::{FileVerdict, files};
    let template = "apiVersion: tinkerbell.org/v1alpha1\nkind: Template\nmetadata: {name: t1}\nspec:\n  data: |\n    name: t1\n    tasks:\n      - name: a\n        worker: \"{{.device_1}}\"\n        actions:\n          - {name: x, image: busybox, environment: {URL: \"http://{{.server}}/\"}}\n";
    let workflow = "apiVersion: tinkerbell.org/v1alpha1\nkind: Workflow\nmetadata: {name: w1}\nspec: {templateRef: t1, hardwareRef: h1, hardwareMap: {device_1: \"02:00:00:00:00:01\"}}\n";
    let out = files(&[
        ("t.yaml".into(), template.into()),
        ("w.yaml".into(), workflow.into()),
        ("broken.yaml".into(), "kind: [".into()),
    ]);
    assert_eq!(out[0], ("t.yaml".into(), FileVerdict::Ok));
    match &out[1].1 {
        FileVerdict::Invalid(f) => {
            assert_eq!(f[0].file, "w.yaml");
            assert!(f[0].reason.contains(".server has no value"), "{f:?}");
        }
        other => panic!("{other:?}"),
    }
    assert!(
        matches!(&out[2].1, FileVerdict::Unreadable(e) if e.starts_with("broken.yaml: document 1"))
    );
}

/// A template that streams to the second disk, as with an NVMe disk next to a
/// SATA one; and Hardware with `disks` disks for it.
const TWO_DISKS: &str = "apiVersion: tinkerbell.org/v1alpha1\nkind: Template\nmetadata: {name: t2}\nspec:\n  data: |\n    name: t2\n    tasks:\n      - name: a\n        worker: \"{{.device_1}}\"\n        actions:\n          - name: stream\n            image: quay.io/tinkerbell/actions/image2disk:latest\n            environment:\n              DEST_DISK: '{{ index .Hardware.Disks 1 }}'\n              BOOT: '{{ formatPartition (index .hardware.spec.disks 1).device 1 }}'\n";

fn hardware_with_disks(disks: &[&str]) -> String {
    let disks: String = disks
        .iter()
        .map(|d| format!("    - device: {d}\n"))
        .collect();
    format!(
        "apiVersion: tinkerbell.org/v1alpha1\nkind: Hardware\nmetadata: {{name: h2}}\nspec:\n  disks:\n{disks}  interfaces:\n    - dhcp: {{mac: \"02:00:00:00:00:01\", ip: {{address: 10.0.0.5, netmask: 255.255.255.0}}}}\n"
    )
}

const TWO_DISK_WORKFLOW: &str = "apiVersion: tinkerbell.org/v1alpha1\nkind: Workflow\nmetadata: {name: w2}\nspec: {templateRef: t2, hardwareRef: h2, hardwareMap: {device_1: \"02:00:00:00:00:01\"}}\n";

#[test]
fn a_template_for_the_second_disk_is_valid_alone_and_checked_against_its_hardware() {
    // Alone: the placeholder Hardware satisfies any index into its lists.
    assert_eq!(findings(TWO_DISKS), Vec::new());
    // With a Hardware that has two disks: valid.
    let two = format!(
        "{TWO_DISKS}---\n{}---\n{TWO_DISK_WORKFLOW}",
        hardware_with_disks(&["/dev/nvme0n1", "/dev/sda"])
    );
    assert_eq!(findings(&two), Vec::new());
    // With one disk: the workflow is refused, and the finding says why.
    let one = format!(
        "{TWO_DISKS}---\n{}---\n{TWO_DISK_WORKFLOW}",
        hardware_with_disks(&["/dev/nvme0n1"])
    );
    let f = findings(&one);
    has(
        &f,
        "spec.templateRef (rendered)",
        "index out of range: 1 (the list has 1 element)",
    );
    assert_eq!(f.len(), 1, "{f:#?}");
}

#[test]
fn a_template_bomb_checked_alone_is_a_finding() {
    for (data, want) in [
        (
            "{{ range 100000000000 }}x{{ end }}",
            "range of 100000000000 exceeds the limit of 1000000 steps",
        ),
        ("{{ div -9223372036854775808 -1 }}", "integer overflow"),
        (
            "{{ repeat 10000 (repeat 10000 (repeat 10000 \"x\")) }}",
            "over the limit of",
        ),
    ] {
        let f = findings(&template(&format!("name: t1\n{data}\n")));
        has(&f, "spec.data", want);
    }
}

/// Every finding about a stored kind names its object by key, so a caller can
/// refuse that object alone without reading the finding's text.
#[test]
fn findings_name_their_object_by_key() {
    use tinker_core::model::{Kind, ObjectKey, parse_documents};
    let yaml = "apiVersion: tinkerbell.org/v1alpha1\nkind: Hardware\nmetadata: {name: bad, namespace: lab}\nspec: {interfaces: [{dhcp: {mac: \"not-a-mac\"}}]}\n---\napiVersion: tinkerbell.org/v1alpha1\nkind: Hardware\nmetadata: {name: good, namespace: lab}\nspec: {interfaces: [{dhcp: {mac: \"02:00:00:00:00:01\"}}]}\n";
    let docs = parse_documents("f.yaml", yaml).unwrap();
    let findings = tinker_core::validate::documents("f.yaml", &docs);
    assert!(!findings.0.is_empty());
    let bad = ObjectKey::new(Kind::Hardware, "lab", "bad");
    assert!(
        findings.0.iter().all(|f| f.key.as_ref() == Some(&bad)),
        "{findings:?}"
    );
}

#[test]
fn retries_are_accepted_on_v1alpha1_actions_and_bounded() {
    let ok = findings(&template(
        "name: t1\ntasks:\n  - name: a\n    worker: w\n    actions:\n      - name: x\n        image: busybox\n        retries: 3\n",
    ));
    assert!(ok.is_empty(), "{ok:#?}");
    let f = findings(&template(
        "name: t1\ntasks:\n  - name: a\n    worker: w\n    actions:\n      - name: x\n        image: busybox\n        retries: 1000\n",
    ));
    has(
        &f,
        "spec.data: tasks[0].actions[0].retries",
        "at most 20, not 1000",
    );
}
