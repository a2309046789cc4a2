//! `tinker`: the operator's command line, for the control plane's operator API,
//! in the manner of kubectl.
//!
//! ```text
//! export TINKER_SERVER=http://10.0.0.1:8080   # or https://10.0.0.1:8443 with --ca-file or --tls-fingerprint
//! export TINKER_TOKEN=$(cat tinker-data/operator-token)
//! tinker get workflows
//! tinker get hardware -o yaml
//! tinker apply -f machines.yaml -f workflow.yaml
//! tinker delete workflow node01-install
//! tinker events default/node01
//! tinker cancel workflow node01-install
//! tinker retry workflow node01-install [ACTION]
//! tinker rerun workflow node01-install
//! ```

use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use tinker::actions::agent::ServerTrust;
use tinker::boot::http::client::{self, Method};
use tinker::boot::http::kind_named;
use tinker::core::model::{Kind, Object, Workflow};
use tinker::core::store::{EventKind, MachineEvent, Versioned};

/// Talks to a Tinker control plane's operator API.
#[derive(Debug, Parser)]
#[command(name = "tinker", version)]
struct Cli {
    /// The control plane, such as `http://10.0.0.1:8080` (its HTTP port, or its
    /// management address when it has one).
    #[arg(
        long,
        env = "TINKER_SERVER",
        global = true,
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    /// The operator token (the control plane writes it to
    /// `<data dir>/operator-token`).
    #[arg(long, env = "TINKER_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// For an `https://` server: the PEM CA that signed its certificate.
    #[arg(
        long,
        env = "TINKER_CA_FILE",
        global = true,
        conflicts_with = "tls_fingerprint"
    )]
    ca_file: Option<PathBuf>,
    /// For an `https://` server: its certificate's SHA-256 fingerprint
    /// (`sha256:HEX`, as the control plane puts it on each machine's kernel
    /// line, or as `openssl x509 -fingerprint -sha256` prints it).
    #[arg(long, env = "TINKER_TLS_FINGERPRINT", global = true)]
    tls_fingerprint: Option<String>,
    /// The namespace.
    #[arg(short, long, global = true, default_value = "default")]
    namespace: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Lists objects: hardware, templates, workflows or machines (Rufio BMCs; singular or plural).
    Get {
        /// What to list.
        kind: String,
        /// One object by name.
        name: Option<String>,
        /// How to print them.
        #[arg(short, long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// Every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// After the table, keep printing each row as it changes (not for its
        /// version alone; a deleted object's last row ends in DELETED), until
        /// interrupted.
        #[arg(short, long)]
        watch: bool,
    },
    /// Creates or updates the objects in YAML or JSON files.
    Apply {
        /// The files.
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<PathBuf>,
    },
    /// Deletes an object.
    Delete {
        /// Its kind.
        kind: String,
        /// Its name.
        name: String,
    },
    /// A machine's recent events (`namespace/name`, or a name in `-n`), or
    /// without a machine the change log: who created, updated or deleted
    /// what through the API, and when.
    Events {
        /// The machine.
        machine: Option<String>,
    },
    /// A workflow in full: its tasks and actions with state, attempt and
    /// duration, and the last lines of each action's output.
    Describe {
        /// `workflow` (the only kind described so far).
        kind: String,
        /// Its name.
        name: String,
    },
    /// The output of a workflow's actions, or of one action.
    Logs {
        /// The workflow.
        workflow: String,
        /// One action, by name.
        action: Option<String>,
        /// Keep printing new lines as they come, until the workflow ends.
        #[arg(short, long)]
        follow: bool,
    },
    /// Cancels a workflow: FAILED with the reason `cancelled by NAME`; the
    /// machine's agent stops the running action.
    Cancel {
        /// `workflow`.
        kind: String,
        /// Its name.
        name: String,
    },
    /// Runs a finished workflow again from its first action: a fresh
    /// execution (netboot on again); the earlier one's history is kept.
    Rerun {
        /// `workflow`.
        kind: String,
        /// Its name.
        name: String,
    },
    /// Runs a workflow that failed again from its failed action (or from
    /// ACTION), keeping the actions that succeeded before it.
    Retry {
        /// `workflow`.
        kind: String,
        /// Its name.
        name: String,
        /// The action to start from, by name.
        action: Option<String>,
    },
    /// A shell completion script: `tinker completions bash > /etc/bash_completion.d/tinker`.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Table,
    Json,
    Yaml,
}

/// Why a command failed, as the operator reads it.
#[derive(Debug)]
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Failure(e.to_string())
    }
}

struct Api {
    server: SocketAddr,
    auth: String,
    /// For `https://`: the name the certificate must hold and the trust.
    tls: Option<(String, std::sync::Arc<rustls::ClientConfig>)>,
}

impl Api {
    async fn new(cli: &Cli) -> Result<Api, Failure> {
        let (https, rest) = match cli.server.split_once("://") {
            Some(("http", rest)) => (false, rest),
            Some(("https", rest)) => (true, rest),
            _ => {
                return Err(Failure(format!(
                    "--server {:?}: expected http://HOST:PORT or https://HOST:PORT",
                    cli.server
                )));
            }
        };
        let host = rest.trim_end_matches('/');
        let server = tokio::net::lookup_host(host)
            .await
            .map_err(|e| Failure(format!("{host}: {e}")))?
            .next()
            .ok_or_else(|| Failure(format!("{host}: no address")))?;
        let tls = if https {
            let trust = match (&cli.ca_file, &cli.tls_fingerprint) {
                (Some(ca), None) => ServerTrust::CaPem(
                    std::fs::read(ca).map_err(|e| Failure(format!("{}: {e}", ca.display())))?,
                ),
                (None, Some(fp)) => ServerTrust::parse_fingerprint(fp)?,
                _ => {
                    return Err(Failure(
                        "https:// needs --ca-file PEM (the CA that signed the control plane's certificate) or --tls-fingerprint sha256:HEX (the certificate's; the control plane puts it on each machine's kernel line)".into(),
                    ));
                }
            };
            // The name the certificate is checked for: the URL's host, an
            // address without its brackets.
            let name = host
                .rsplit_once(':')
                .map_or(host, |(h, _)| h)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string();
            Some((name, std::sync::Arc::new(trust.client_config()?)))
        } else {
            None
        };
        let token = cli.token.clone().ok_or_else(|| {
            Failure(
                "no token: pass --token or set TINKER_TOKEN (see <data dir>/operator-token)".into(),
            )
        })?;
        Ok(Api {
            server,
            auth: format!("Bearer {}", token.trim()),
            tls,
        })
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Vec<u8>,
    ) -> Result<(u16, serde_json::Value), Failure> {
        self.call_with(method, path, "application/yaml", body).await
    }

    /// [`call`](Self::call) with a body of `content_type`.
    async fn call_with(
        &self,
        method: Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<(u16, serde_json::Value), Failure> {
        let headers = [
            ("authorization", self.auth.as_str()),
            ("content-type", content_type),
        ];
        let connection = match &self.tls {
            Some((name, config)) => {
                client::HttpConnection::connect_tls(self.server, name, config.clone()).await
            }
            None => client::HttpConnection::connect(self.server, None).await,
        };
        let r = match connection {
            Ok(mut c) => c.send(method, path, &headers, body).await,
            Err(e) => Err(e),
        }
        .map_err(|e| Failure(format!("{}: {e}", self.server)))?;
        if r.status == 401 {
            return Err(Failure("the control plane refused the token".into()));
        }
        let value =
            serde_json::from_slice(&r.body).unwrap_or_else(|_| serde_json::Value::String(r.text()));
        Ok((r.status, value))
    }
}

fn plural(kind: Kind) -> &'static str {
    match kind {
        Kind::Hardware => "hardware",
        Kind::Template => "templates",
        Kind::Workflow => "workflows",
        Kind::Machine => "machines",
    }
}

fn text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => "-".into(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The table's columns for one object (`{"version": N, "value": {...}}`).
fn row(kind: Kind, item: &serde_json::Value) -> Vec<String> {
    let o = &item["value"];
    let mut cells = vec![
        text(&o["metadata"]["namespace"]).replace('-', "default"),
        text(&o["metadata"]["name"]),
    ];
    match kind {
        Kind::Hardware => {
            let i = &o["spec"]["interfaces"][0];
            cells.push(text(&i["dhcp"]["mac"]));
            cells.push(text(&i["dhcp"]["ip"]["address"]));
            cells.push(
                if i["netboot"]["allowPXE"] == serde_json::Value::Bool(true) {
                    "on"
                } else {
                    "off"
                }
                .into(),
            );
        }
        Kind::Template => {}
        Kind::Machine => {
            let c = &o["spec"]["connection"];
            cells.push(text(&c["host"]));
            cells.push(text(&c["authSecretRef"]["name"]));
        }
        Kind::Workflow => {
            let status = &o["status"];
            cells.push(text(&o["spec"]["hardwareRef"]));
            cells.push(
                text(&status["state"])
                    .trim_start_matches("STATE_")
                    .to_string(),
            );
            let actions: Vec<serde_json::Value> = status["tasks"]
                .as_array()
                .map(|t| {
                    t.iter()
                        .flat_map(|t| t["actions"].as_array().cloned().unwrap_or_default())
                        .collect()
                })
                .unwrap_or_default();
            let done = actions
                .iter()
                .filter(|a| a["state"] == "STATE_SUCCESS" || a["state"] == "SUCCESS")
                .count();
            cells.push(format!("{done}/{}", actions.len()));
            cells.push(text(&status["reason"]));
        }
    }
    cells.push(text(&item["version"]));
    cells
}

fn header(kind: Kind) -> Vec<&'static str> {
    let mut h = vec!["NAMESPACE", "NAME"];
    h.extend(match kind {
        Kind::Hardware => vec!["MAC", "ADDRESS", "NETBOOT"],
        Kind::Template => vec![],
        Kind::Workflow => vec!["MACHINE", "STATE", "ACTIONS", "REASON"],
        Kind::Machine => vec!["HOST", "SECRET"],
    });
    h.push("VERSION");
    h
}

/// Prints the table; the column widths, for rows printed later.
fn print_table(head: &[&str], rows: &[Vec<String>]) -> Vec<usize> {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    print_row(
        &widths,
        &head.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
    );
    for r in rows {
        print_row(&widths, r);
    }
    widths
}

fn print_row(widths: &[usize], cells: &[String]) {
    let out: Vec<String> = cells
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{c:<w$}", w = widths.get(i).copied().unwrap_or(0)))
        .collect();
    println!("{}", out.join("  ").trim_end());
}

/// `get KIND --watch`: the table, then each row again when it changes, as the
/// operator API's long poll (`?watch=TOKEN`) reports the list changed.
async fn watch_rows(
    api: &Api,
    kind: Kind,
    wanted: &dyn Fn(&serde_json::Value) -> bool,
) -> Result<(), Failure> {
    use std::collections::BTreeMap;
    use std::io::Write;
    let mut token = String::new();
    /// The rows printed last, by `namespace/name`.
    type Rows = BTreeMap<String, Vec<String>>;
    let mut shown: Option<(Vec<usize>, Rows)> = None;
    loop {
        let path = format!("/api/v1/{}?watch={token}", plural(kind));
        let (status, answer) = api.call(Method::GET, &path, Vec::new()).await?;
        if status != 200 {
            return Err(Failure(format!("HTTP {status}: {}", text(&answer))));
        }
        token = text(&answer["token"]);
        let rows: Rows = answer["items"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .filter(|i| wanted(i))
            .map(|i| {
                let r = row(kind, i);
                (format!("{}/{}", r[0], r[1]), r)
            })
            .collect();
        match &mut shown {
            None => {
                let all: Vec<Vec<String>> = rows.values().cloned().collect();
                shown = Some((print_table(&header(kind), &all), rows));
            }
            Some((widths, before)) => {
                // The version alone changes often (the engine's leases): a
                // row is printed again when something else in it changed.
                let shown_part = |r: &[String]| r[..r.len() - 1].to_vec();
                for (key, r) in &rows {
                    if before.get(key).map(|b| shown_part(b)) != Some(shown_part(r)) {
                        for (w, c) in widths.iter_mut().zip(r) {
                            *w = (*w).max(c.chars().count());
                        }
                        print_row(widths, r);
                    }
                }
                for (key, r) in before.iter() {
                    if !rows.contains_key(key) {
                        let mut gone = r.clone();
                        gone.push("DELETED".into());
                        print_row(widths, &gone);
                    }
                }
                *before = rows;
            }
        }
        let _ = std::io::stdout().flush();
    }
}

/// A workflow, as the API lists it.
async fn workflow(api: &Api, namespace: &str, name: &str) -> Result<Workflow, Failure> {
    let (status, list) = api
        .call(Method::GET, "/api/v1/workflows", Vec::new())
        .await?;
    if status != 200 {
        return Err(Failure(format!("HTTP {status}: {}", text(&list))));
    }
    let items: Vec<Versioned<Object>> = serde_json::from_value(list)?;
    items
        .into_iter()
        .find_map(|v| match v.value {
            Object::Workflow(w)
                if w.metadata.namespace() == namespace && w.metadata.name == name =>
            {
                Some(w)
            }
            _ => None,
        })
        .ok_or_else(|| Failure(format!("Workflow {namespace}/{name} not found")))
}

/// The output lines the machine's event log holds for a workflow, by action.
/// Output lines of a workflow: (event sequence number, action index, line).
/// Prints a workflow's run as a step per line (the status page draws the same
/// spans as bars): when each began, how long it took, how it went, and where
/// the run stopped. Nothing when the control plane cannot say.
async fn timeline(api: &Api, wf: &Workflow) {
    let path = format!(
        "/api/v1/workflows/{}/{}/timeline",
        wf.metadata.namespace(),
        wf.metadata.name
    );
    let Ok((200, answer)) = api.call(Method::GET, &path, Vec::new()).await else {
        return;
    };
    let Some(spans) = answer["timeline"]["spans"].as_array() else {
        return;
    };
    let stopped = answer["timeline"]["stoppedAt"].as_u64();
    let at = |v: &serde_json::Value| v.as_str().and_then(|t| t.parse::<jiff::Timestamp>().ok());
    println!("Timeline:");
    for (i, span) in spans.iter().enumerate() {
        let (start, end) = (at(&span["start"]), at(&span["end"]));
        let began = start.map_or("-".to_string(), |t| t.strftime("%H:%M:%S").to_string());
        let took = match (start, end) {
            (Some(s), Some(e)) => {
                format!("{:.1}s", e.duration_since(s).as_secs_f64())
            }
            _ => "-".to_string(),
        };
        let mut line = format!(
            "  {:<24} {:<12} {began:<9} {took:<8}",
            span["label"].as_str().unwrap_or("?"),
            span["outcome"].as_str().unwrap_or("?"),
        );
        if span["attempts"].as_u64().is_some_and(|a| a > 1) {
            line += &format!(" {} attempts", span["attempts"]);
        }
        if let Some(detail) = span["detail"].as_str() {
            line += &format!(" {detail}");
        }
        if stopped == Some(i as u64) {
            line += "  <- stopped here";
        }
        println!("{}", line.trim_end());
    }
}

type Lines = Vec<(u64, usize, String)>;

async fn output(api: &Api, wf: &Workflow) -> Result<Lines, Failure> {
    // The worker API logs output under the worker's id (its MAC), other
    // services under the Hardware's name: read both.
    let mut logs = vec![format!(
        "{}/{}",
        wf.metadata.namespace(),
        wf.spec.hardware_ref
    )];
    for task in wf.status.iter().flat_map(|s| &s.tasks) {
        if !logs.contains(&task.agent_id) {
            logs.push(task.agent_id.clone());
        }
    }
    let me = format!("{}/{}", wf.metadata.namespace(), wf.metadata.name);
    let mut lines = Lines::new();
    for machine in logs {
        let path = format!("/api/v1/events/{}?limit=10000", machine.replace('/', "%2F"));
        let (status, events) = api.call(Method::GET, &path, Vec::new()).await?;
        if status != 200 {
            return Err(Failure(format!("HTTP {status}: {}", text(&events))));
        }
        let events: Vec<MachineEvent> = serde_json::from_value(events)?;
        lines.extend(
            events
                .into_iter()
                .filter(|e| e.workflow.as_deref() == Some(me.as_str()))
                .filter_map(|e| match e.kind {
                    EventKind::ActionOutput {
                        action_index, line, ..
                    } => Some((e.seq, action_index, line)),
                    _ => None,
                }),
        );
    }
    // In the order they were stored.
    lines.sort_by_key(|(seq, _, _)| *seq);
    Ok(lines)
}

async fn run(cli: Cli) -> Result<(), Failure> {
    if let Command::Completions { shell } = &cli.command {
        let mut command = <Cli as clap::CommandFactory>::command();
        clap_complete::generate(*shell, &mut command, "tinker", &mut std::io::stdout());
        return Ok(());
    }
    let api = Api::new(&cli).await?;
    match &cli.command {
        Command::Get {
            kind,
            name,
            output,
            all_namespaces,
            watch,
        } => {
            let kind = kind_named(kind).ok_or_else(|| {
                Failure(format!(
                    "{kind:?}: expected hardware, templates, workflows or machines"
                ))
            })?;
            let wanted = |i: &serde_json::Value| {
                let m = &i["value"]["metadata"];
                let ns = m["namespace"].as_str().unwrap_or("default");
                (*all_namespaces || ns == cli.namespace)
                    && name.as_deref().is_none_or(|n| m["name"] == n)
            };
            if *watch {
                if !matches!(output, Output::Table) {
                    return Err(Failure("--watch prints the table only".into()));
                }
                return watch_rows(&api, kind, &wanted).await;
            }
            let (status, list) = api
                .call(
                    Method::GET,
                    &format!("/api/v1/{}", plural(kind)),
                    Vec::new(),
                )
                .await?;
            if status != 200 {
                return Err(Failure(format!("HTTP {status}: {}", text(&list))));
            }
            let items: Vec<serde_json::Value> = list
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .filter(|i| wanted(i))
                .collect();
            if let (Some(n), true) = (name, items.is_empty()) {
                return Err(Failure(format!(
                    "{} {}/{n} not found",
                    kind.as_str(),
                    cli.namespace
                )));
            }
            match output {
                Output::Json => println!("{}", serde_json::to_string_pretty(&items)?),
                Output::Yaml => {
                    for item in &items {
                        let mut object = item["value"].clone();
                        // The version to send back with `apply` for an update
                        // that must not overwrite someone else's.
                        object["metadata"]["resourceVersion"] =
                            serde_json::Value::String(text(&item["version"]));
                        print!("---\n{}", serde_norway::to_string(&object)?);
                    }
                }
                Output::Table => {
                    let rows: Vec<Vec<String>> = items.iter().map(|i| row(kind, i)).collect();
                    print_table(&header(kind), &rows);
                }
            }
        }
        Command::Apply { files } => {
            let mut failed = false;
            for file in files {
                let body =
                    std::fs::read(file).map_err(|e| Failure(format!("{}: {e}", file.display())))?;
                let (status, answer) = api.call(Method::POST, "/api/v1/apply", body).await?;
                let applied = match status {
                    200 => answer.as_array().cloned().unwrap_or_default(),
                    _ => answer["applied"].as_array().cloned().unwrap_or_default(),
                };
                for o in applied {
                    println!(
                        "{} {}/{} applied (version {})",
                        text(&o["kind"]),
                        text(&o["namespace"]),
                        text(&o["name"]),
                        text(&o["resourceVersion"])
                    );
                }
                if status == 200 {
                    continue;
                }
                failed = true;
                eprintln!("{}: {}", file.display(), text(&answer["title"]));
                match &answer["detail"] {
                    serde_json::Value::Array(findings) => {
                        for f in findings {
                            eprintln!(
                                "  {}: {}: {}",
                                text(&f["object"]),
                                text(&f["path"]),
                                text(&f["reason"])
                            );
                        }
                    }
                    other => eprintln!("  {}", text(other)),
                }
            }
            if failed {
                return Err(Failure("some objects were not applied".into()));
            }
        }
        Command::Delete { kind, name } => {
            let kind = kind_named(kind).ok_or_else(|| {
                Failure(format!(
                    "{kind:?}: expected hardware, template, workflow or machine"
                ))
            })?;
            let path = format!("/api/v1/{}/{}/{name}", plural(kind), cli.namespace);
            let (status, answer) = api.call(Method::DELETE, &path, Vec::new()).await?;
            if status != 204 {
                return Err(Failure(format!(
                    "HTTP {status}: {}",
                    text(&answer["title"])
                )));
            }
            println!("{} {}/{name} deleted", kind.as_str(), cli.namespace);
        }
        Command::Describe { kind, name } => {
            if kind_named(kind) != Some(Kind::Workflow) {
                return Err(Failure(format!("describe {kind:?}: only workflows so far")));
            }
            let wf = workflow(&api, &cli.namespace, name).await?;
            let lines = output(&api, &wf).await?;
            let Some(status) = wf.status.clone() else {
                println!(
                    "Name:      {}/{}",
                    wf.metadata.namespace(),
                    wf.metadata.name
                );
                println!("State:     NEW (not rendered yet)");
                return Ok(());
            };
            println!(
                "Name:      {}/{}",
                wf.metadata.namespace(),
                wf.metadata.name
            );
            println!("Machine:   {}", wf.spec.hardware_ref);
            println!("Template:  {}", wf.spec.template_ref);
            println!(
                "State:     {}",
                wf.state()
                    .map_or("NEW".to_string(), |s| format!("{s:?}").to_uppercase())
            );
            if let Some(reason) = &status.reason {
                println!("Reason:    {reason}");
            }
            // Why it is not moving, when it is not (the control plane reads the
            // machine's event log).
            let path = format!(
                "/api/v1/workflows/{}/{}/diagnosis",
                wf.metadata.namespace(),
                wf.metadata.name
            );
            if let Ok((200, answer)) = api.call(Method::GET, &path, Vec::new()).await
                && let Some(why) = answer["diagnosis"]["explanation"].as_str()
            {
                println!("Waiting:   {why}");
            }
            if status.execution > 1 {
                println!("Execution: {}", status.execution);
            }
            for (index, (_, action)) in status.actions().enumerate() {
                println!(
                    "  {index}. {:<24} {:<8} attempt {}  {}",
                    action.name,
                    format!("{:?}", action.state).to_uppercase(),
                    action.attempt,
                    action.execution_duration.as_deref().unwrap_or("-")
                );
                // Every ended attempt, when there was more than one or one
                // is to come.
                if action.attempts.len() > 1 || action.retry_at.is_some() {
                    for a in &action.attempts {
                        println!(
                            "       attempt {} {:<8} {}  {}",
                            a.attempt,
                            a.state.as_str(),
                            a.duration.as_deref().unwrap_or("-"),
                            a.message.as_deref().unwrap_or("")
                        );
                    }
                }
                if let Some(at) = action.retry_at {
                    println!("       retry due at {at}");
                }
                let mine: Vec<&String> = lines
                    .iter()
                    .filter(|(_, i, _)| *i == index)
                    .map(|(_, _, l)| l)
                    .collect();
                for line in &mine[mine.len().saturating_sub(5)..] {
                    println!("       | {line}");
                }
            }
            timeline(&api, &wf).await;
            if !status.executions.is_empty() {
                println!("Earlier executions:");
            }
            for e in &status.executions {
                let how = match e.restart {
                    tinker::core::model::Restart::Retry { from } => {
                        format!("retried from action {from}")
                    }
                    _ => "re-run".to_string(),
                };
                println!(
                    "  #{} {:<8} {}  ({how} by {} at {})",
                    e.execution,
                    e.state.as_str(),
                    e.reason.as_deref().unwrap_or(""),
                    e.restarted_by,
                    e.restarted_at
                );
                for a in &e.actions {
                    let attempts: Vec<String> = a
                        .attempts
                        .iter()
                        .map(|t| format!("{} {}", t.attempt, t.state.as_str()))
                        .collect();
                    println!(
                        "       {:<24} {:<8} attempts: {}",
                        a.name,
                        a.state.as_str(),
                        if attempts.is_empty() {
                            "-".to_string()
                        } else {
                            attempts.join(", ")
                        }
                    );
                }
            }
        }
        Command::Cancel { kind, name }
        | Command::Rerun { kind, name }
        | Command::Retry { kind, name, .. } => {
            if kind_named(kind) != Some(Kind::Workflow) {
                return Err(Failure(format!("{kind:?}: only workflows can be acted on")));
            }
            let (act, body, done) = match &cli.command {
                Command::Cancel { .. } => ("cancel", serde_json::json!({}), "cancelled"),
                Command::Rerun { .. } => ("rerun", serde_json::json!({}), "re-run"),
                Command::Retry { action, .. } => (
                    "retry",
                    match action {
                        Some(a) => serde_json::json!({ "action": a }),
                        None => serde_json::json!({}),
                    },
                    "retried",
                ),
                _ => unreachable!("matched above"),
            };
            let path = format!(
                "/api/v1/workflows/{}/{}/{act}",
                cli.namespace.replace('/', "%2F"),
                name.replace('/', "%2F")
            );
            let (status, answer) = api
                .call_with(
                    Method::POST,
                    &path,
                    "application/json",
                    body.to_string().into_bytes(),
                )
                .await?;
            if status != 200 {
                return Err(Failure(format!(
                    "{}/{name}: {}",
                    cli.namespace,
                    text(&answer["title"])
                )));
            }
            let state = text(&answer["value"]["status"]["state"]);
            let execution = answer["value"]["status"]["execution"].as_u64().unwrap_or(1);
            println!(
                "workflow {}/{name} {done} (state {state}, execution {execution})",
                cli.namespace
            );
        }
        Command::Logs {
            workflow: name,
            action,
            follow,
        } => {
            let mut wf = workflow(&api, &cli.namespace, name).await?;
            let wanted = match action {
                Some(a) => Some(
                    wf.status
                        .as_ref()
                        .and_then(|s| s.actions().position(|(_, x)| &x.name == a))
                        .ok_or_else(|| Failure(format!("no action {a:?} in {name}")))?,
                ),
                None => None,
            };
            // The last event printed, by the store's sequence number.
            let mut seen: Option<u64> = None;
            loop {
                for (seq, index, line) in output(&api, &wf).await? {
                    if seen.is_none_or(|s| seq > s) && wanted.is_none_or(|w| w == index) {
                        println!("{line}");
                    }
                    seen = Some(seen.map_or(seq, |s| s.max(seq)));
                }
                let ended = wf.state().is_some_and(|s| s.is_terminal());
                if !follow || ended {
                    break;
                }
                use std::io::Write;
                let _ = std::io::stdout().flush();
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                // Read the state before the lines, so the last lines of a
                // workflow that ends meanwhile are still printed once.
                wf = workflow(&api, &cli.namespace, name).await?;
            }
        }
        Command::Completions { .. } => {}
        Command::Events { machine } => {
            let path = match machine {
                None => "/api/v1/changes".to_string(),
                Some(m) if m.contains('/') => format!("/api/v1/events/{}", m.replace('/', "%2F")),
                Some(m) => format!("/api/v1/events/{}%2F{m}", cli.namespace),
            };
            let (status, events) = api.call(Method::GET, &path, Vec::new()).await?;
            if status != 200 {
                return Err(Failure(format!("HTTP {status}: {}", text(&events))));
            }
            for e in events.as_array().cloned().unwrap_or_default() {
                let what = match &e["message"] {
                    serde_json::Value::Null => e["kind"].to_string(),
                    m => text(m),
                };
                println!("{}  {:<8} {what}", text(&e["at"]), text(&e["source"]));
            }
        }
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(why)) => {
            eprintln!("tinker: {why}");
            ExitCode::FAILURE
        }
    }
}
