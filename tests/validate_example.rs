//! The `validate` example as an operator runs it: a template checked on its own is
//! rendered against a placeholder Hardware (so a template for the second disk is
//! valid), a workflow against its real Hardware, and any refused file makes the
//! process exit 1 with the reason, a template bomb included (it used to abort).
//! Needs the example built (`cargo test` builds examples; after a narrower run,
//! `cargo build --example validate`).

#[path = "support/netlab.rs"]
mod netlab;

use std::process::Command;

const BOMB: &str = "apiVersion: tinkerbell.org/v1alpha1\nkind: Template\nmetadata: {name: bomb}\nspec:\n  data: |\n    name: bomb\n    {{ range 100000000000 }}x{{ end }}\n";

const TWO_DISKS: &str = "apiVersion: tinkerbell.org/v1alpha1\nkind: Template\nmetadata: {name: t2}\nspec:\n  data: |\n    name: t2\n    tasks:\n      - name: a\n        worker: \"{{.device_1}}\"\n        actions:\n          - name: stream\n            image: quay.io/tinkerbell/actions/image2disk:latest\n            environment: {DEST_DISK: '{{ index .Hardware.Disks 1 }}'}\n";

const WORKFLOW: &str = "apiVersion: tinkerbell.org/v1alpha1\nkind: Workflow\nmetadata: {name: w2}\nspec: {templateRef: t2, hardwareRef: h2, hardwareMap: {device_1: \"02:00:00:00:00:01\"}}\n";

fn hardware(disks: &[&str]) -> String {
    let disks: String = disks
        .iter()
        .map(|d| format!("    - device: {d}\n"))
        .collect();
    format!(
        "apiVersion: tinkerbell.org/v1alpha1\nkind: Hardware\nmetadata: {{name: h2}}\nspec:\n  disks:\n{disks}  interfaces:\n    - dhcp: {{mac: \"02:00:00:00:00:01\", ip: {{address: 10.0.0.5, netmask: 255.255.255.0}}}}\n"
    )
}

/// Runs the example on files holding `texts`; returns its exit code and output.
fn validate(texts: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut args = Vec::new();
    for (name, text) in texts {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        args.push(p);
    }
    let out = Command::new(netlab::example("validate"))
        .args(&args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

#[test]
fn a_template_bomb_is_refused_with_exit_code_1() {
    let (code, out) = validate(&[("bomb.yaml", BOMB)]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("range of 100000000000 exceeds the limit of 1000000 steps"),
        "{out}"
    );
}

#[test]
fn a_template_for_the_second_disk_is_valid_alone_and_checked_with_its_hardware() {
    let (code, out) = validate(&[("t2.yaml", TWO_DISKS)]);
    assert_eq!(code, Some(0), "{out}");
    let two = hardware(&["/dev/nvme0n1", "/dev/sda"]);
    let (code, out) = validate(&[
        ("t2.yaml", TWO_DISKS),
        ("h2.yaml", &two),
        ("w2.yaml", WORKFLOW),
    ]);
    assert_eq!(code, Some(0), "{out}");
    let one = hardware(&["/dev/nvme0n1"]);
    let (code, out) = validate(&[
        ("t2.yaml", TWO_DISKS),
        ("h2.yaml", &one),
        ("w2.yaml", WORKFLOW),
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("w2.yaml"), "{out}");
    assert!(
        out.contains("index out of range: 1 (the list has 1 element)"),
        "{out}"
    );
}

/// A Rufio Machine is checked with the same findings the operator API answers:
/// a Machine Tinker can drive is valid; one with no credentials secret and a
/// provider Tinker does not speak is refused with both field paths.
#[test]
fn rufio_machines_are_checked() {
    let good = "apiVersion: bmc.tinkerbell.org/v1alpha1\nkind: Machine\nmetadata: {name: b1}\nspec:\n  connection:\n    host: 10.0.0.5\n    authSecretRef: {name: creds}\n    providerOptions: {ipmitool: {port: 623}}\n";
    let (code, out) = validate(&[("good.yaml", good)]);
    assert_eq!(code, Some(0), "{out}");
    // Tinker's own provider for machines without a BMC.
    let wol = "apiVersion: bmc.tinkerbell.org/v1alpha1\nkind: Machine\nmetadata: {name: nuc1}\nspec:\n  connection:\n    host: 10.0.0.7\n    authSecretRef: {name: unused}\n    providerOptions: {preferredOrder: [wol]}\n";
    let (code, out) = validate(&[("wol.yaml", wol)]);
    assert_eq!(code, Some(0), "{out}");
    let amt = "apiVersion: bmc.tinkerbell.org/v1alpha1\nkind: Machine\nmetadata: {name: amt}\nspec:\n  connection:\n    host: 10.0.0.6\n    providerOptions: {intelAMT: {port: 16992}}\n";
    let (code, out) = validate(&[("amt.yaml", amt)]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("Machine default/amt: spec.connection.authSecretRef.name"),
        "{out}"
    );
    assert!(
        out.contains("Machine default/amt: spec.connection.providerOptions")
            && out.contains("intelAMT"),
        "{out}"
    );
}
