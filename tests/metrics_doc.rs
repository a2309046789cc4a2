//! The README's table of metrics is what `/metrics` shows: a control plane wired
//! as in production is scraped, on the machines' HTTP server and on the
//! management one, and every metric it prints (name, type and label values) must
//! be a row of the table, and every row a metric it prints. So a metric added,
//! renamed or relabelled without its row (or a row left behind) fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use tinker::boot::http::HttpServer;
use tinker::boot::http::client::{Method, request};
use tinker::control_plane::ControlPlane;
use tinker::core::Secret;
use tinker::store::MemoryStore;

/// A sample name (counters carry the `_total` the encoder appends) with its
/// type and the `key="value"` label pairs its samples carry.
type Metrics = BTreeMap<String, (String, BTreeSet<String>)>;

/// Serves `server` on loopback and returns the text of its `/metrics`.
async fn scrape(server: HttpServer) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(listener, async {
        let _ = stopped.await;
    }));
    let resp = request(addr, None, Method::GET, "/metrics", &[], Vec::new())
        .await
        .unwrap();
    assert_eq!(resp.status, 200);
    let _ = stop.send(());
    serving.await.unwrap().unwrap();
    String::from_utf8(resp.body.to_vec()).unwrap()
}

/// Reads OpenMetrics text: each family's `# TYPE`, and the labels of its samples.
fn parse_exposition(text: &str) -> Metrics {
    let mut types = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (family, kind) = rest.split_once(' ').unwrap();
            types.insert(family.to_owned(), kind.to_owned());
        }
    }
    let mut metrics = Metrics::new();
    for (family, kind) in &types {
        let sample = match kind.as_str() {
            "counter" => format!("{family}_total"),
            _ => family.clone(),
        };
        metrics.insert(sample, (kind.clone(), BTreeSet::new()));
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let name_end = line.find(['{', ' ']).unwrap();
        let name = &line[..name_end];
        let (_, labels) = metrics
            .get_mut(name)
            .unwrap_or_else(|| panic!("sample {name} of no family in:\n{text}"));
        if let Some(inner) = line[name_end..]
            .strip_prefix('{')
            .and_then(|l| l.split_once('}'))
        {
            labels.extend(inner.0.split(',').map(str::to_owned));
        }
    }
    metrics
}

/// The rows of the README's "Metrics" table: `| `name` | type | labels | ... |`,
/// where the labels are the backticked `key="value"` pairs of the third column.
fn parse_readme(readme: &str) -> Metrics {
    let section = readme
        .split("\n## Metrics\n")
        .nth(1)
        .expect("README has a Metrics section");
    let section = section.split("\n## ").next().unwrap();
    let mut metrics = Metrics::new();
    for line in section.lines().filter(|l| l.starts_with("| `tinker_")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let name = cells[1].trim_matches('`').to_owned();
        let labels = cells[3]
            .split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        let previous = metrics.insert(name.clone(), (cells[2].to_owned(), labels));
        assert!(previous.is_none(), "{name} has two rows in the README");
    }
    metrics
}

#[tokio::test]
async fn readme_metrics_table_is_what_metrics_shows() {
    let plane = ControlPlane::new(
        Arc::new(MemoryStore::new()),
        Arc::new(tinker::bmc::MockConnector::new()),
        Ipv4Addr::LOCALHOST,
        Secret::new("metrics-doc-secret"),
    );
    let services = plane.services(SocketAddr::from((Ipv4Addr::LOCALHOST, 8080)));
    let machines = parse_exposition(&scrape(services.http).await);
    let management = parse_exposition(&scrape(services.management).await);
    assert_eq!(
        machines, management,
        "both HTTP servers show the same metrics"
    );
    // Every service's metrics are there, so the comparison below is not vacuous.
    for name in [
        "tinker_dhcp_acks_total",
        "tinker_tftp_active",
        "tinker_http_requests_total",
        "tinker_http_connections_refused_total",
        "tinker_worker_api_shed_total",
    ] {
        assert!(machines.contains_key(name), "{name} missing from /metrics");
    }

    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let documented = parse_readme(&readme);
    let undocumented: Vec<_> = machines
        .iter()
        .filter(|(name, m)| documented.get(*name) != Some(m))
        .collect();
    assert!(
        undocumented.is_empty(),
        "on /metrics but not (or otherwise) in the README's Metrics table: {undocumented:#?}"
    );
    let stale: Vec<_> = documented
        .keys()
        .filter(|name| !machines.contains_key(*name))
        .collect();
    assert!(
        stale.is_empty(),
        "in the README's Metrics table but not on /metrics: {stale:?}"
    );
}

#[test]
fn the_parsers_see_names_types_and_labels() {
    let text = "# HELP tinker_a x\n# TYPE tinker_a counter\ntinker_a_total 3\n\
                # TYPE tinker_b gauge\ntinker_b 1\n# TYPE tinker_c counter\n\
                tinker_c_total{reason=\"x\"} 0\ntinker_c_total{reason=\"y\"} 2\n# EOF\n";
    let readme = "# Doc\n\n## Metrics\n\n| metric | type | labels | counts |\n|---|---|---|---|\n\
                  | `tinker_a_total` | counter | none | x |\n| `tinker_b` | gauge | none | y |\n\
                  | `tinker_c_total` | counter | `reason=\"x\"`, `reason=\"y\"` | z |\n\n\
                  ## Next\n\n| `tinker_d` | gauge | none | another section |\n";
    let shown = parse_exposition(text);
    assert_eq!(parse_readme(readme), shown);
    assert_eq!(
        shown["tinker_c_total"],
        (
            "counter".to_owned(),
            BTreeSet::from(["reason=\"x\"".to_owned(), "reason=\"y\"".to_owned()])
        )
    );
    assert_eq!(shown["tinker_b"], ("gauge".to_owned(), BTreeSet::new()));
    assert_eq!(shown.len(), 3);
}
