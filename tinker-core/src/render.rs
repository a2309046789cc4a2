//! Template rendering the way Tinkerbell's controller does it: the Go template in
//! `Template.spec.data` is rendered with the workflow's `hardwareMap` keys at the top
//! level (`{{.device_1}}`), `.Hardware` (the deprecated contract: `Disks`,
//! `Interfaces`, `UserData`, `Metadata`, `VendorData`, with Go field names) and
//! `.hardware` (the whole Hardware object as JSON), then parsed as
//! [`TemplateData`], validated, and turned into the workflow's status.

use crate::error::{Error, Result, ValidationError, ValidationErrors};
use crate::gotmpl::{GoTemplate, RenderLimits};
use crate::model::{
    ActionStatus, Dhcp, Hardware, Interface, TaskStatus, Template, TemplateData, Workflow,
    WorkflowStatus,
};
use crate::validate;
use serde_json::{Map, Value, json};

/// Renders `template` for `workflow` on `hardware` and returns the workflow's
/// initial status (PENDING, every action PENDING).
///
/// Errors: a template variable with no value names the variable
/// (`.artifact_server_ip_port is not set: add it to the workflow's hardwareMap`),
/// a syntax error names the line, invalid rendered data names the field.
pub fn instantiate(
    workflow: &Workflow,
    template: &Template,
    hardware: Option<&Hardware>,
) -> Result<WorkflowStatus> {
    instantiate_with(workflow, template, hardware, RenderLimits::default())
}

/// [`instantiate`] within `limits` (the engine passes its
/// [`crate::engine::EngineConfig::render_limits`]).
pub fn instantiate_with(
    workflow: &Workflow,
    template: &Template,
    hardware: Option<&Hardware>,
    limits: RenderLimits,
) -> Result<WorkflowStatus> {
    let data = render_data_with(workflow, template, hardware, limits)?;
    let file = format!(
        "Template {}/{}",
        template.metadata.namespace(),
        template.metadata.name
    );
    validate::template_data(&file, &data).into_result()?;
    Ok(status_from_data(&data))
}

/// Renders the template text and parses it into [`TemplateData`], without validating.
pub fn render_data(
    workflow: &Workflow,
    template: &Template,
    hardware: Option<&Hardware>,
) -> Result<TemplateData> {
    render_data_with(workflow, template, hardware, RenderLimits::default())
}

/// [`render_data`] within `limits`.
pub fn render_data_with(
    workflow: &Workflow,
    template: &Template,
    hardware: Option<&Hardware>,
    limits: RenderLimits,
) -> Result<TemplateData> {
    let name = format!(
        "{}/{}",
        template.metadata.namespace(),
        template.metadata.name
    );
    let text = template.spec.data.as_deref().unwrap_or_default();
    let parsed = GoTemplate::parse_with(&name, text, limits)?;
    let data = template_context(workflow, hardware);
    let rendered = parsed.render(&data).map_err(|mut e| {
        if let Some(key) = &e.missing_key {
            let top = key
                .trim_start_matches('.')
                .split('.')
                .next()
                .unwrap_or_default();
            let hint = if top == "Hardware" || top == "hardware" {
                if hardware.is_some() {
                    format!(
                        "the Hardware {:?} has no such field",
                        workflow.spec.hardware_ref
                    )
                } else {
                    format!(
                        "the Hardware {:?} was not found",
                        workflow.spec.hardware_ref
                    )
                }
            } else {
                format!(
                    "add {top:?} to the hardwareMap of Workflow {}/{}",
                    workflow.metadata.namespace(),
                    workflow.metadata.name
                )
            };
            e.reason = format!("template variable {key} has no value: {hint}");
        }
        Error::Template(e)
    })?;
    parse_template_data(&name, &rendered)
}

/// Parses rendered template text.
pub fn parse_template_data(name: &str, rendered: &str) -> Result<TemplateData> {
    let de = serde_norway::Deserializer::from_str(rendered);
    serde_path_to_error::deserialize(de).map_err(|e| Error::Parse {
        file: format!("Template {name} (rendered spec.data)"),
        path: e.path().to_string(),
        reason: e.into_inner().to_string(),
    })
}

/// The data a template sees.
pub fn template_context(workflow: &Workflow, hardware: Option<&Hardware>) -> Value {
    let mut data = Map::new();
    for (k, v) in &workflow.spec.hardware_map {
        data.insert(k.clone(), Value::from(v.clone()));
    }
    if let Some(hw) = hardware {
        data.insert("Hardware".into(), hardware_contract(hw));
        data.insert(
            "hardware".into(),
            serde_json::to_value(hw).unwrap_or(Value::Null),
        );
    }
    Value::Object(data)
}

/// The deprecated `.Hardware` contract, with Go field names.
fn hardware_contract(hw: &Hardware) -> Value {
    let disks: Vec<Value> = hw
        .spec
        .disks
        .iter()
        .map(|d| Value::from(d.device.clone()))
        .collect();
    let interfaces: Vec<Value> = hw.spec.interfaces.iter().map(interface_contract).collect();
    let metadata = hw
        .spec
        .metadata
        .as_ref()
        .map(|m| go_names(serde_json::to_value(m).unwrap_or(Value::Null)))
        .unwrap_or_else(|| json!({}));
    json!({
        "Disks": disks,
        "Interfaces": interfaces,
        "UserData": hw.spec.user_data.clone().unwrap_or_default(),
        "Metadata": metadata,
        "VendorData": hw.spec.vendor_data.clone().unwrap_or_default(),
    })
}

fn interface_contract(i: &Interface) -> Value {
    json!({
        "DHCP": i.dhcp.as_ref().map(dhcp_contract).unwrap_or(Value::Null),
        "Netboot": i.netboot.as_ref().map(|n| go_names(serde_json::to_value(n).unwrap_or(Value::Null))).unwrap_or(Value::Null),
        "DisableDHCP": i.disable_dhcp.unwrap_or(false),
    })
}

fn dhcp_contract(d: &Dhcp) -> Value {
    let ip = d.ip.as_ref().map(|ip| {
        json!({
            "Address": ip.address,
            "Netmask": ip.netmask.clone().unwrap_or_default(),
            "Gateway": ip.gateway.clone().unwrap_or_default(),
            "Family": ip.family.unwrap_or(0),
        })
    });
    json!({
        "MAC": d.mac,
        "Hostname": d.hostname.clone().unwrap_or_default(),
        "DomainName": d.domain_name.clone().unwrap_or_default(),
        "LeaseTime": d.lease_time.unwrap_or(0),
        "NameServers": d.name_servers,
        "TimeServers": d.time_servers,
        "Arch": d.arch.clone().unwrap_or_default(),
        "UEFI": d.uefi.unwrap_or(false),
        "IfaceName": d.iface_name.clone().unwrap_or_default(),
        "IP": ip.unwrap_or(Value::Null),
        "VLANID": d.vlan_id.clone().unwrap_or_default(),
    })
}

/// Converts JSON keys (`snake_case`, `camelCase`) to Go field names (`SnakeCase`),
/// with Go's initialisms (`ID`, `URL`, `IP`, `PXE`, ...).
fn go_names(v: Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.into_iter()
                .map(|(k, v)| (go_name(&k), go_names(v)))
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(go_names).collect()),
        other => other,
    }
}

fn go_name(key: &str) -> String {
    const INITIALISMS: [&str; 10] = [
        "id", "url", "ip", "ips", "pxe", "mac", "dhcp", "uefi", "ssh", "osie",
    ];
    let mut words = Vec::new();
    let mut cur = String::new();
    for c in key.chars() {
        if c == '_' || c == '-' {
            words.push(std::mem::take(&mut cur));
        } else if c.is_uppercase()
            && !cur.is_empty()
            && !cur.chars().last().is_some_and(char::is_uppercase)
        {
            words.push(std::mem::take(&mut cur));
            cur.push(c);
        } else {
            cur.push(c);
        }
    }
    words.push(cur);
    words
        .into_iter()
        .filter(|w| !w.is_empty())
        .map(|w| {
            let lower = w.to_lowercase();
            if INITIALISMS.contains(&lower.as_str()) {
                if lower == "ips" {
                    "IPs".to_string()
                } else {
                    lower.to_uppercase()
                }
            } else {
                let mut c = lower.chars();
                c.next()
                    .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                    .unwrap_or_default()
            }
        })
        .collect()
}

/// Turns validated template data into the workflow's initial status: task
/// environment merged under each action's (the action wins), task volumes before
/// the action's, as Tinkerbell's server sends them.
pub fn status_from_data(data: &TemplateData) -> WorkflowStatus {
    let tasks =
        data.tasks
            .iter()
            .enumerate()
            .map(|(ti, t)| TaskStatus {
                name: t.name.clone(),
                agent_id: t.worker.clone(),
                volumes: t.volumes.clone(),
                environment: t.environment.clone(),
                actions: t
                    .actions
                    .iter()
                    .enumerate()
                    .map(|(ai, a)| {
                        let mut environment = t.environment.clone();
                        environment.extend(a.environment.clone());
                        let mut volumes = t.volumes.clone();
                        volumes.extend(a.volumes.iter().cloned());
                        ActionStatus {
                            id: format!("{ti}.{ai}"),
                            name: a.name.clone(),
                            image: a.image.clone(),
                            timeout: a.timeout,
                            command: a.command.clone(),
                            volumes,
                            pid: a.pid.clone().or_else(|| {
                                a.namespaces.as_ref().and_then(|n| n.get("pid").cloned())
                            }),
                            environment,
                            state: crate::state::ActionState::Pending,
                            attempt: 0,
                            execution_start: None,
                            execution_stop: None,
                            execution_duration: None,
                            last_heartbeat: None,
                            exit_code: None,
                            message: None,
                            claim_request: None,
                            retries: a.retries.unwrap_or(0).min(crate::model::MAX_ACTION_RETRIES),
                            retry_at: None,
                            attempts: Vec::new(),
                        }
                    })
                    .collect(),
            })
            .collect();
    let mut status = WorkflowStatus::pending(tasks, data.global_timeout);
    status.failure_power = data.failure_power.unwrap_or_default();
    status
}

/// A stand-in Hardware for checking a template on its own: one disk, one
/// interface; rendered with [`GoTemplate::render_placeholder`], so an index into
/// its lists past the first element is satisfied too.
pub(crate) fn placeholder_context(template: &Template) -> Value {
    let text = template.spec.data.as_deref().unwrap_or_default();
    let mut data = Map::new();
    // Every top-level variable the template names gets a placeholder value.
    let re = regex::Regex::new(r"\.([A-Za-z_][A-Za-z0-9_]*)").expect("static regex");
    for c in re.captures_iter(text) {
        data.insert(
            c[1].to_string(),
            Value::from(format!("placeholder-{}", &c[1])),
        );
    }
    let hw = Hardware::new(
        "placeholder",
        crate::MacAddr([2, 0, 0, 0, 0, 1]),
        std::net::Ipv4Addr::new(192, 0, 2, 10),
        "255.255.255.0",
    );
    let mut hw = hw;
    hw.spec.disks.push(crate::model::Disk {
        device: "/dev/sda".into(),
        extra: Default::default(),
    });
    if let Some(d) = hw.spec.interfaces[0].dhcp.as_mut() {
        d.arch = Some("x86_64".into());
    }
    data.insert("Hardware".into(), hardware_contract(&hw));
    data.insert(
        "hardware".into(),
        serde_json::to_value(&hw).unwrap_or(Value::Null),
    );
    Value::Object(data)
}

/// Checks a template on its own: it parses, renders against placeholder values,
/// and the result is valid template data.
pub(crate) fn check_template(
    file: &str,
    object: &str,
    template: &Template,
    out: &mut ValidationErrors,
) {
    let Some(text) = template
        .spec
        .data
        .as_deref()
        .filter(|t| !t.trim().is_empty())
    else {
        out.0.push(ValidationError::field(
            file,
            object,
            "spec.data",
            "the template is empty",
        ));
        return;
    };
    let push = |out: &mut ValidationErrors, reason: String| {
        out.0
            .push(ValidationError::field(file, object, "spec.data", reason))
    };
    let parsed = match GoTemplate::parse(&template.metadata.name, text) {
        Ok(p) => p,
        Err(e) => return push(out, e.to_string()),
    };
    let rendered = match parsed.render_placeholder(&placeholder_context(template)) {
        Ok(r) => r,
        Err(e) => return push(out, e.to_string()),
    };
    match parse_template_data(&template.metadata.name, &rendered) {
        Ok(data) => {
            for mut e in validate::template_data(file, &data).0 {
                e.object = object.into();
                e.path = format!("spec.data: {}", e.path);
                out.0.push(e);
            }
        }
        Err(Error::Parse { path, reason, .. }) => {
            push(out, format!("rendered YAML: {path}: {reason}"))
        }
        Err(e) => push(out, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_names_follow_go_conventions() {
        assert_eq!(go_name("facility_code"), "FacilityCode");
        assert_eq!(go_name("id"), "ID");
        assert_eq!(go_name("allowPXE"), "AllowPXE");
        assert_eq!(go_name("ipxe_script_url"), "IpxeScriptURL");
        assert_eq!(go_name("ssh_keys"), "SSHKeys");
    }
}
