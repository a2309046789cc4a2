//! Test support shared by every crate: the conformance suites that every
//! [`WorkflowStore`](crate::WorkflowStore), [`PowerController`](crate::PowerController),
//! [`ActionRuntime`](crate::ActionRuntime), [`BootResponder`](crate::BootResponder)
//! and [`MetadataSource`](crate::MetadataSource) runs, and fixtures. Enabled by
//! the `testing` feature.

pub mod boot;
pub mod metadata;
pub mod power;
pub mod runtime;
pub mod store;

use crate::MacAddr;
use crate::model::{Hardware, Template, Workflow};

/// A MAC derived from a number (`02:00:` + 4 bytes), locally administered.
pub fn mac(n: u32) -> MacAddr {
    let b = n.to_be_bytes();
    MacAddr([0x02, 0x00, b[0], b[1], b[2], b[3]])
}

/// A Hardware named `name` with MAC `mac(n)` and address `10.x.y.z` from `n`.
pub fn hardware(name: &str, n: u32) -> Hardware {
    let b = n.to_be_bytes();
    let mut hw = Hardware::new(
        name,
        mac(n),
        std::net::Ipv4Addr::new(10, b[1], b[2], b[3]),
        "255.0.0.0",
    );
    hw.spec.disks.push(crate::model::Disk {
        device: "/dev/sda".into(),
        extra: Default::default(),
    });
    hw
}

/// A template with one task for `{{.device_1}}` and `actions` actions.
pub fn template(name: &str, actions: usize, timeout: i64) -> Template {
    let mut data = format!(
        "version: \"0.1\"\nname: {name}\nglobal_timeout: 3600\ntasks:\n  - name: install\n    worker: \"{{{{.device_1}}}}\"\n    actions:\n"
    );
    for i in 0..actions {
        data.push_str(&format!(
            "      - name: step-{i}\n        image: quay.io/tinkerbell/actions/writefile:latest\n        timeout: {timeout}\n        environment:\n          DEST_DISK: \"{{{{ index .Hardware.Disks 0 }}}}\"\n"
        ));
    }
    Template::new(name, data)
}

/// A workflow rendered from [`template`] for a worker, ready to be claimed (the
/// engine's preparation is marked done).
pub fn rendered_workflow(name: &str, worker: MacAddr, actions: usize, timeout: i64) -> Workflow {
    let t = template(&format!("{name}-template"), actions, timeout);
    let hw = hardware(&format!("{name}-hw"), 0);
    let mut wf = Workflow::new(name, &t.metadata.name, &hw.metadata.name, worker);
    let status = crate::render::instantiate(&wf, &t, Some(&hw)).expect("fixture template renders");
    wf.status = Some(status);
    wf
}

/// Whether tests that need a real component must fail rather than skip when it is
/// missing (`TINKER_REQUIRE_REAL=1`, set by CI).
pub fn require_real() -> bool {
    std::env::var("TINKER_REQUIRE_REAL").is_ok_and(|v| v == "1")
}
