//! Validation of Tinkerbell objects: every finding names the file, the object, the
//! field path (`spec.interfaces[0].dhcp.mac`) and the reason.

use crate::error::{FindingKind, ValidationError, ValidationErrors};
use crate::mac::MacAddr;
use crate::model::{Document, Hardware, Object, Template, TemplateData, Workflow};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::Ipv4Addr;

struct Findings<'a> {
    file: &'a str,
    object: String,
    out: &'a mut ValidationErrors,
}

/// Marks the findings pushed since `mark` that name no object key as being
/// about `key` (those of the template renderer, which knows only text).
fn claim(out: &mut ValidationErrors, mark: usize, key: &crate::model::ObjectKey) {
    for e in &mut out.0[mark..] {
        if e.key.is_none() {
            e.key = Some(key.clone());
        }
    }
}

impl Findings<'_> {
    fn push(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.push_kind(FindingKind::Field, path, reason);
    }

    fn push_kind(&mut self, kind: FindingKind, path: impl Into<String>, reason: impl Into<String>) {
        self.out.0.push(
            ValidationError::field(self.file, self.object.clone(), path, reason).with_kind(kind),
        );
    }
}

/// Validates the documents of one file, then checks them against each other
/// (duplicate MACs and IPs across Hardware, workflows whose template and hardware
/// are among the documents are rendered).
pub fn documents(file: &str, docs: &[Document]) -> ValidationErrors {
    let mut out = ValidationErrors::default();
    let objects: Vec<&Object> = docs
        .iter()
        .filter_map(|d| match d {
            Document::Object(o) => Some(o),
            _ => None,
        })
        .collect();
    for d in docs {
        match d {
            Document::Object(o) => {
                let mark = out.0.len();
                object(file, o, &mut out);
                claim(&mut out, mark, &o.key());
            }
            Document::AgentActions(actions) => {
                let mut f = Findings {
                    file,
                    object: d.describe(),
                    out: &mut out,
                };
                let mut seen = HashSet::new();
                for (i, a) in actions.iter().enumerate() {
                    if a.name.trim().is_empty() {
                        f.push(format!("[{i}].name"), "an action needs a name");
                    } else if !seen.insert(a.name.as_str()) {
                        f.push(
                            format!("[{i}].name"),
                            format!("duplicate action name {:?}", a.name),
                        );
                    }
                    image_ref(&mut f, &format!("[{i}].image"), &a.image);
                    if let Some(t) = a.timeout_seconds
                        && t <= 0
                    {
                        f.push(
                            format!("[{i}].timeoutSeconds"),
                            format!("timeout must be a positive number of seconds, not {t}"),
                        );
                    }
                }
            }
            Document::Unsupported {
                api_version, kind, ..
            } => {
                Findings {
                    file,
                    object: d.describe(),
                    out: &mut out,
                }
                .push_kind(
                    FindingKind::Unsupported,
                    "apiVersion",
                    format!("{kind} of {api_version} is kept as it is but not supported yet (Tinker supports tinkerbell.org/v1alpha1)"),
                );
            }
        }
    }
    cross_check(file, &objects, &mut out);
    out
}

/// Validates one object on its own.
pub fn object(file: &str, o: &Object, out: &mut ValidationErrors) {
    match o {
        Object::Hardware(h) => hardware(file, h, out),
        Object::Template(t) => template(file, t, out),
        Object::Workflow(w) => workflow(file, w, out),
        Object::Machine(m) => machine(file, m, out),
    }
}

/// Validates a Rufio Machine: a name, the BMC's host, the secret that holds
/// its credentials, and a provider Tinker speaks.
pub fn machine(file: &str, m: &crate::model::Machine, out: &mut ValidationErrors) {
    let mut f = Findings {
        file,
        object: crate::model::ObjectKey::new(
            crate::model::Kind::Machine,
            m.metadata.namespace(),
            m.metadata.name.as_str(),
        )
        .to_string(),
        out,
    };
    meta_name(&mut f, &m.metadata.name, m.metadata.namespace.as_deref());
    let Some(c) = &m.spec.connection else {
        f.push(
            "spec.connection",
            "a Machine needs a connection: the BMC's host and authSecretRef",
        );
        return;
    };
    if c.host.trim().is_empty() {
        f.push(
            "spec.connection.host",
            "the BMC's host name or address is missing",
        );
    }
    if c.auth_secret_ref
        .as_ref()
        .is_none_or(|r| r.name.trim().is_empty())
    {
        f.push(
            "spec.connection.authSecretRef.name",
            "the secret that holds the BMC's credentials is missing",
        );
    }
    let unspoken = c.unspoken_providers();
    if !unspoken.is_empty() {
        f.push(
            "spec.connection.providerOptions",
            format!(
                "Tinker drives BMCs over Redfish and IPMI (redfish, ipmitool) and wakes machines without one by Wake-on-LAN (preferredOrder: [wol]), not {}; or power this machine by hand (give its Hardware no bmcRef)",
                unspoken.join(", ")
            ),
        );
    }
}

fn meta_name(f: &mut Findings<'_>, name: &str, namespace: Option<&str>) {
    if name.is_empty() {
        f.push("metadata.name", "every object needs a name");
    } else if !is_dns_subdomain(name) {
        f.push("metadata.name", format!("{name:?} is not a valid name (lowercase letters, digits, '-' and '.', at most 253 characters)"));
    }
    if let Some(ns) = namespace
        && (ns.is_empty() || ns.len() > 63 || !is_dns_subdomain(ns) || ns.contains('.'))
    {
        f.push(
            "metadata.namespace",
            format!("{ns:?} is not a valid namespace"),
        );
    }
}

fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
        && s.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric())
}

fn api_version(f: &mut Findings<'_>, v: &str) {
    if v != crate::model::API_VERSION_V1ALPHA1 {
        f.push(
            "apiVersion",
            format!("expected {}, not {v:?}", crate::model::API_VERSION_V1ALPHA1),
        );
    }
}

/// Validates a Hardware.
pub fn hardware(file: &str, h: &Hardware, out: &mut ValidationErrors) {
    let mut f = Findings {
        file,
        object: format!("Hardware {}/{}", h.metadata.namespace(), h.metadata.name),
        out,
    };
    api_version(&mut f, &h.api_version);
    meta_name(&mut f, &h.metadata.name, h.metadata.namespace.as_deref());
    let mut macs = HashMap::new();
    for (i, iface) in h.spec.interfaces.iter().enumerate() {
        let base = format!("spec.interfaces[{i}]");
        let Some(d) = &iface.dhcp else { continue };
        let p = format!("{base}.dhcp");
        match d.mac.parse::<MacAddr>() {
            Ok(mac) => {
                if let Some(first) = macs.insert(mac, i) {
                    f.push(
                        format!("{p}.mac"),
                        format!("MAC {mac} is already used by spec.interfaces[{first}]"),
                    );
                }
            }
            Err(e) if d.mac.is_empty() => {
                let _ = e;
                f.push(
                    format!("{p}.mac"),
                    "missing: every DHCP interface needs a MAC",
                )
            }
            Err(e) => f.push(format!("{p}.mac"), e.to_string()),
        }
        if let Some(hn) = &d.hostname
            && !is_hostname(hn)
        {
            f.push(
                format!("{p}.hostname"),
                format!("{hn:?} is not a valid host name"),
            );
        }
        if let Some(t) = d.lease_time
            && t <= 0
        {
            f.push(
                format!("{p}.lease_time"),
                format!("lease time must be a positive number of seconds, not {t}"),
            );
        }
        for (j, s) in d.name_servers.iter().enumerate() {
            if s.parse::<Ipv4Addr>().is_err() {
                f.push(
                    format!("{p}.name_servers[{j}]"),
                    format!("{s:?} is not an IPv4 address"),
                );
            }
        }
        for (j, s) in d.time_servers.iter().enumerate() {
            if s.parse::<Ipv4Addr>().is_err() {
                f.push(
                    format!("{p}.time_servers[{j}]"),
                    format!("{s:?} is not an IPv4 address"),
                );
            }
        }
        if d.tftp_server_name.is_some() != d.boot_file_name.is_some() {
            f.push(
                format!("{p}.boot_file_name"),
                "tftp_server_name and boot_file_name are set together or not at all",
            );
        }
        if let Some(v) = &d.vlan_id
            && !v.is_empty()
            && v.parse::<u16>().map_or(true, |n| n > 4096)
        {
            f.push(
                format!("{p}.vlan_id"),
                format!("{v:?} is not a VLAN id (0-4096)"),
            );
        }
        if let Some(ip) = &d.ip {
            let address = match ip.address.parse::<Ipv4Addr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    f.push(
                        format!("{p}.ip.address"),
                        format!("{:?} is not an IPv4 address", ip.address),
                    );
                    None
                }
            };
            let prefix = match &ip.netmask {
                None => None,
                Some(m) => match netmask_prefix(m) {
                    Ok(n) => Some(n),
                    Err(reason) => {
                        f.push(format!("{p}.ip.netmask"), reason.to_string());
                        None
                    }
                },
            };
            if let Some(g) = &ip.gateway
                && !g.is_empty()
            {
                match g.parse::<Ipv4Addr>() {
                    Err(_) => f.push(
                        format!("{p}.ip.gateway"),
                        format!("{g:?} is not an IPv4 address"),
                    ),
                    Ok(gw) => {
                        if let (Some(a), Some(n)) = (address, prefix)
                            && !same_subnet(a, gw, n)
                        {
                            f.push(
                                format!("{p}.ip.gateway"),
                                format!("gateway {gw} is not in the interface's subnet {a}/{n}"),
                            );
                        }
                    }
                }
            }
        }
        if let Some(n) = &iface.netboot
            && let Some(ipxe) = &n.ipxe
        {
            if let Some(url) = &ipxe.url
                && !(url.starts_with("http://") || url.starts_with("https://"))
            {
                f.push(
                    format!("{base}.netboot.ipxe.url"),
                    format!("{url:?} must be an http:// or https:// URL"),
                );
            }
            if ipxe.url.is_some() && ipxe.contents.is_some() {
                f.push(
                    format!("{base}.netboot.ipxe"),
                    "set url or contents, not both",
                );
            }
            if let Some(b) = &ipxe.binary
                && ![
                    "undionly.kpxe",
                    "ipxe.efi",
                    "snp-arm64.efi",
                    "snp-x86_64.efi",
                    "snponly.efi",
                ]
                .contains(&b.as_str())
            {
                f.push(format!("{base}.netboot.ipxe.binary"), format!("{b:?} is not a known iPXE binary (undionly.kpxe, ipxe.efi, snp-arm64.efi, snp-x86_64.efi)"));
            }
        }
    }
    for (i, d) in h.spec.disks.iter().enumerate() {
        if !d.device.starts_with("/dev/") {
            f.push(
                format!("spec.disks[{i}].device"),
                format!("{:?} is not a device path (expected /dev/...)", d.device),
            );
        }
    }
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Why a string is not a netmask.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum NetmaskError {
    /// Not a dotted IPv4 address at all.
    #[error("{0:?} is not a netmask (expected dotted form such as 255.255.255.0)")]
    NotDotted(String),
    /// An address whose one bits do not run from the top.
    #[error("{0} is not a valid netmask: its one bits are not contiguous")]
    NotContiguous(String),
}

/// The prefix length of a dotted netmask, or why it is not one.
pub fn netmask_prefix(mask: &str) -> Result<u8, NetmaskError> {
    let m: Ipv4Addr = mask
        .parse()
        .map_err(|_| NetmaskError::NotDotted(mask.to_string()))?;
    let bits = u32::from(m);
    if bits.leading_ones() + bits.trailing_zeros() != 32 {
        return Err(NetmaskError::NotContiguous(mask.to_string()));
    }
    Ok(bits.leading_ones() as u8)
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix: u8) -> bool {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix))
    };
    u32::from(a) & mask == u32::from(b) & mask
}

/// Validates a Template on its own (its text is rendered against placeholders).
pub fn template(file: &str, t: &Template, out: &mut ValidationErrors) {
    let object = format!("Template {}/{}", t.metadata.namespace(), t.metadata.name);
    let mut f = Findings {
        file,
        object: object.clone(),
        out,
    };
    api_version(&mut f, &t.api_version);
    meta_name(&mut f, &t.metadata.name, t.metadata.namespace.as_deref());
    crate::render::check_template(file, &object, t, out);
}

/// Validates a Workflow on its own.
pub fn workflow(file: &str, w: &Workflow, out: &mut ValidationErrors) {
    let mut f = Findings {
        file,
        object: format!("Workflow {}/{}", w.metadata.namespace(), w.metadata.name),
        out,
    };
    api_version(&mut f, &w.api_version);
    meta_name(&mut f, &w.metadata.name, w.metadata.namespace.as_deref());
    if w.spec.template_ref.is_empty() {
        f.push("spec.templateRef", "missing: which Template should run?");
    }
    if w.spec.hardware_ref.is_empty() {
        f.push(
            "spec.hardwareRef",
            "missing: which Hardware should it run on?",
        );
    }
    for (k, v) in &w.spec.hardware_map {
        let valid_key = k
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_')
            && k.chars().all(|c| c.is_alphanumeric() || c == '_');
        if !valid_key {
            f.push(
                format!("spec.hardwareMap.{k}"),
                "keys must be template identifiers (letters, digits, '_')",
            );
        }
        if k.starts_with("device_") && v.parse::<MacAddr>().is_err() {
            f.push(
                format!("spec.hardwareMap.{k}"),
                format!("{v:?} is not a MAC address (device_N keys name a worker by its MAC)"),
            );
        }
    }
}

/// Validates rendered template data.
pub fn template_data(file: &str, d: &TemplateData) -> ValidationErrors {
    let mut out = ValidationErrors::default();
    let mut f = Findings {
        file,
        object: format!("template {:?}", d.name),
        out: &mut out,
    };
    name_len(&mut f, "name", &d.name);
    if let Some(t) = d.global_timeout
        && t <= 0
    {
        f.push(
            "global_timeout",
            format!("timeout must be a positive number of seconds, not {t}"),
        );
    }
    if d.tasks.is_empty() {
        f.push("tasks", "a template needs at least one task");
    }
    let mut task_names = HashSet::new();
    for (i, t) in d.tasks.iter().enumerate() {
        let p = format!("tasks[{i}]");
        name_len(&mut f, &format!("{p}.name"), &t.name);
        if !t.name.is_empty() && !task_names.insert(t.name.as_str()) {
            f.push(
                format!("{p}.name"),
                format!("duplicate task name {:?}", t.name),
            );
        }
        if t.worker.trim().is_empty() {
            f.push(format!("{p}.worker"), "the worker is empty: it usually comes from the workflow's hardwareMap, such as {{.device_1}}");
        }
        if t.actions.is_empty() {
            f.push(format!("{p}.actions"), "a task needs at least one action");
        }
        let mut names: BTreeMap<&str, usize> = BTreeMap::new();
        for (j, a) in t.actions.iter().enumerate() {
            let ap = format!("{p}.actions[{j}]");
            name_len(&mut f, &format!("{ap}.name"), &a.name);
            if let Some(first) = names.insert(a.name.as_str(), j)
                && !a.name.is_empty()
            {
                f.push(
                    format!("{ap}.name"),
                    format!(
                        "duplicate action name {:?} (also {p}.actions[{first}])",
                        a.name
                    ),
                );
            }
            image_ref(&mut f, &format!("{ap}.image"), &a.image);
            match a.timeout {
                Some(t) if t <= 0 => f.push(
                    format!("{ap}.timeout"),
                    format!("timeout must be a positive number of seconds, not {t}"),
                ),
                _ => {}
            }
            if let Some(r) = a.retries
                && r > crate::model::MAX_ACTION_RETRIES
            {
                f.push(
                    format!("{ap}.retries"),
                    format!(
                        "retries must be at most {}, not {r}",
                        crate::model::MAX_ACTION_RETRIES
                    ),
                );
            }
            for (k, v) in &a.environment {
                if k.is_empty() || k.contains('=') {
                    f.push(
                        format!("{ap}.environment"),
                        format!("{k:?} is not a valid variable name"),
                    );
                }
                let _ = v;
            }
            for (k, vol) in t.volumes.iter().chain(&a.volumes).enumerate() {
                if !vol.contains(':') && !vol.starts_with('/') {
                    f.push(
                        format!("{ap}.volumes[{k}]"),
                        format!("{vol:?} is not a volume (host:container[:ro])"),
                    );
                }
            }
        }
    }
    out
}

fn name_len(f: &mut Findings<'_>, path: &str, name: &str) {
    if name.is_empty() {
        f.push(path, "missing: a name is required");
    } else if name.len() > 199 {
        f.push(path, "names are at most 199 characters");
    }
}

/// Checks that an image reference is well-formed: `[registry/]path[:tag][@digest]`.
fn image_ref(f: &mut Findings<'_>, path: &str, image: &str) {
    if image.trim().is_empty() {
        f.push(path, "missing image: every action runs an image");
        return;
    }
    let (name, digest) = match image.split_once('@') {
        Some((n, d)) => (n, Some(d)),
        None => (image, None),
    };
    if let Some(d) = digest
        && !(d.contains(':')
            && d.split_once(':').is_some_and(|(alg, hex)| {
                !alg.is_empty() && hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit())
            }))
    {
        f.push(path, format!("{image:?} has a malformed digest"));
        return;
    }
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let (repo, tag) = match name[last_slash..].rfind(':') {
        Some(i) => (&name[..last_slash + i], Some(&name[last_slash + i + 1..])),
        None => (name, None),
    };
    let valid_component = |c: &str, first: bool| {
        !c.is_empty()
            && if first && (c.contains('.') || c.contains(':') || c == "localhost") {
                c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':')
            } else {
                c.bytes().all(|b| {
                    b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || b == b'.'
                        || b == b'_'
                        || b == b'-'
                }) && c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            }
    };
    let parts: Vec<&str> = repo.split('/').collect();
    let ok = parts
        .iter()
        .enumerate()
        .all(|(i, c)| valid_component(c, i == 0 && parts.len() > 1))
        && tag.is_none_or(|t| {
            !t.is_empty()
                && t.len() <= 128
                && t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        });
    if !ok {
        f.push(path, format!("{image:?} is not a valid image reference"));
    }
}

fn cross_check(file: &str, objects: &[&Object], out: &mut ValidationErrors) {
    let mut macs: HashMap<MacAddr, String> = HashMap::new();
    let mut ips: HashMap<Ipv4Addr, String> = HashMap::new();
    let mut hardware = HashMap::new();
    let mut templates = HashMap::new();
    for o in objects {
        match o {
            Object::Hardware(h) => {
                let me = format!("{}/{}", h.metadata.namespace(), h.metadata.name);
                hardware.insert(
                    (h.metadata.namespace().to_string(), h.metadata.name.clone()),
                    h,
                );
                let mark = out.0.len();
                let mut f = Findings {
                    file,
                    object: format!("Hardware {me}"),
                    out,
                };
                for mac in h.macs() {
                    if let Some(other) = macs.insert(mac, me.clone())
                        && other != me
                    {
                        f.push_kind(
                            FindingKind::Clash,
                            "spec.interfaces",
                            format!("MAC {mac} is also used by Hardware {other}"),
                        );
                    }
                }
                for ip in h.ipv4s() {
                    if let Some(other) = ips.insert(ip, me.clone())
                        && other != me
                    {
                        f.push_kind(
                            FindingKind::Clash,
                            "spec.interfaces",
                            format!("IP address {ip} is also reserved for Hardware {other}"),
                        );
                    }
                }
                claim(out, mark, &o.key());
            }
            Object::Template(t) => {
                templates.insert(
                    (t.metadata.namespace().to_string(), t.metadata.name.clone()),
                    t,
                );
            }
            Object::Workflow(_) | Object::Machine(_) => {}
        }
    }
    for o in objects {
        let Object::Workflow(w) = o else { continue };
        let ns = w.metadata.namespace().to_string();
        let Some(t) = templates.get(&(ns.clone(), w.spec.template_ref.clone())) else {
            continue;
        };
        let hw = hardware.get(&(ns, w.spec.hardware_ref.clone())).copied();
        // Without the Hardware the `.Hardware` fields cannot be rendered; only
        // check what can be checked.
        let uses_hardware = t
            .spec
            .data
            .as_deref()
            .is_some_and(|d| d.contains(".Hardware") || d.contains(".hardware"));
        if hw.is_none() && uses_hardware {
            continue;
        }
        let mark = out.0.len();
        let mut f = Findings {
            file,
            object: format!("Workflow {}/{}", w.metadata.namespace(), w.metadata.name),
            out,
        };
        match crate::render::instantiate(w, t, hw) {
            Ok(_) => {}
            Err(crate::Error::Invalid(errs)) => {
                for e in errs.0 {
                    f.push_kind(
                        FindingKind::Rendered,
                        format!("spec.templateRef (rendered): {}", e.path),
                        e.reason,
                    );
                }
            }
            Err(e) => f.push_kind(
                FindingKind::Rendered,
                "spec.templateRef (rendered)",
                e.to_string(),
            ),
        }
        let key = crate::model::ObjectKey::new(
            crate::model::Kind::Workflow,
            w.metadata.namespace(),
            w.metadata.name.clone(),
        );
        claim(out, mark, &key);
    }
}

/// The verdict on one file of a [`files`] run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileVerdict {
    /// Valid.
    Ok,
    /// Could not be read as Tinkerbell YAML.
    Unreadable(String),
    /// Read, but invalid.
    Invalid(Vec<ValidationError>),
}

/// Validates several files together (name and text each): each on its own, and
/// each workflow rendered against the templates and hardware of all the files.
/// Pure: the caller reads the files.
pub fn files(inputs: &[(String, String)]) -> Vec<(String, FileVerdict)> {
    let parsed: Vec<(String, crate::Result<Vec<Document>>)> = inputs
        .iter()
        .map(|(name, text)| (name.clone(), crate::model::parse_documents(name, text)))
        .collect();
    let all: Vec<Document> = parsed
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .flatten()
        .cloned()
        .collect();
    parsed
        .into_iter()
        .map(|(file, result)| {
            let docs = match result {
                Ok(d) => d,
                Err(e) => return (file, FileVerdict::Unreadable(e.to_string())),
            };
            let mut findings = documents(&file, &docs).0;
            let own: Vec<String> = docs.iter().map(Document::describe).collect();
            for f in documents(&file, &all).0 {
                // Findings that need other files: rendered workflows and duplicates.
                let cross = matches!(f.kind, FindingKind::Rendered | FindingKind::Clash);
                if cross && own.contains(&f.object) && !findings.contains(&f) {
                    findings.push(f);
                }
            }
            let verdict = if findings.is_empty() {
                FileVerdict::Ok
            } else {
                FileVerdict::Invalid(findings)
            };
            (file, verdict)
        })
        .collect()
}
