//! Property-based fuzzing of the YAML object decoders: Tinkerbell Hardware,
//! Template and Workflow documents (read, validated, templates rendered against
//! the placeholder Hardware) and Rufio `Machine` objects (registered with the BMC
//! connector). Whatever the text, each ends in objects or an error with a
//! message, never a panic.
//!
//! Inputs are the real fixtures, mutated (text inserted, deleted, replaced), and
//! arbitrary text. 256 cases per property by default; a longer run by hand:
//! `PROPTEST_CASES=100000 cargo test -p tinker --test fuzz_objects --release`.

use proptest::prelude::*;
use std::sync::Arc;
use tinker::bmc::{Connector, RetryPolicy, StaticSecrets};
use tinker::core::model::parse_documents;
use tinker::core::validate;

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

const RUFIO: &str = "apiVersion: bmc.tinkerbell.org/v1alpha1\nkind: Machine\nmetadata: {name: node1, namespace: tink}\nspec:\n  connection:\n    host: 10.0.0.5\n    port: 623\n    authSecretRef: {name: bmc-creds, namespace: tink}\n    insecureTLS: true\n    providerOptions:\n      redfish: {port: 8443, systemName: S1}\n      ipmitool: {port: 623, cipherSuite: \"17\"}\n";

/// The documents the mutations start from: Tinkerbell's own fixtures and a
/// Rufio Machine.
fn seeds() -> Vec<String> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/tinkerbell/v1alpha1");
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "yaml")
                .then(|| std::fs::read_to_string(&p).ok())
                .flatten()
        })
        .collect();
    out.sort();
    out.push(RUFIO.to_string());
    out
}

/// One edit of a document, at a position given as a fraction of its length.
#[derive(Debug, Clone)]
enum Edit {
    Insert(f64, String),
    Delete(f64, usize),
    Replace(f64, char),
}

fn edit() -> impl Strategy<Value = Edit> {
    let text = prop_oneof![
        proptest::sample::select(vec![
            ":",
            "- ",
            "\n",
            "  ",
            "{",
            "}",
            "[",
            "]",
            "&a ",
            "*a",
            "!!binary ",
            "~",
            "\"",
            "'",
            "{{",
            "}}",
            "{{ range 100000000000 }}",
            "{{ div -9223372036854775808 -1 }}",
            "{{ index .Hardware.Disks 7 }}",
            "-9223372036854775808",
            "99999999999999999999",
            "0x",
            "null",
            "true",
            "...",
            "---\n",
            "mac: zz",
            "port: 70000",
            "kind: Machine\n",
            "apiVersion: bmc.tinkerbell.org/v1alpha1\n",
            "\u{0}",
            "\u{feff}",
            "é",
        ])
        .prop_map(str::to_string),
        "\\PC{0,12}",
    ];
    prop_oneof![
        (0.0..1.0f64, text).prop_map(|(at, s)| Edit::Insert(at, s)),
        (0.0..1.0f64, 1usize..40).prop_map(|(at, n)| Edit::Delete(at, n)),
        (0.0..1.0f64, any::<char>()).prop_map(|(at, c)| Edit::Replace(at, c)),
    ]
}

fn apply(seed: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = seed.chars().collect();
    for e in edits {
        let len = chars.len();
        let at = |f: f64| ((len as f64) * f) as usize;
        match e {
            Edit::Insert(f, s) => {
                let i = at(*f).min(chars.len());
                chars.splice(i..i, s.chars());
            }
            Edit::Delete(f, n) => {
                let i = at(*f).min(chars.len());
                let j = (i + n).min(chars.len());
                chars.drain(i..j);
            }
            Edit::Replace(f, c) => {
                if let Some(slot) = chars.get_mut(at(*f)) {
                    *slot = *c;
                }
            }
        }
    }
    chars.into_iter().collect()
}

/// Reads, validates and registers the documents of `text`; checks that every
/// refusal says something.
fn check(text: &str) -> Result<(), TestCaseError> {
    let docs = match parse_documents("fuzz.yaml", text) {
        Ok(docs) => docs,
        Err(e) => {
            let msg = e.to_string();
            prop_assert!(
                msg.starts_with("fuzz.yaml"),
                "a refusal that names no file: {msg}"
            );
            prop_assert!(
                msg.len() > "fuzz.yaml: ".len(),
                "a refusal without a reason"
            );
            return Ok(());
        }
    };
    for finding in validate::documents("fuzz.yaml", &docs).0 {
        prop_assert!(
            !finding.reason.is_empty(),
            "a finding without a reason: {finding:?}"
        );
    }
    let mut connector = Connector::new(Arc::new(StaticSecrets::default()), RetryPolicy::default());
    if let Err(e) = connector.add_rufio_machines(&docs) {
        prop_assert!(
            !e.to_string().is_empty(),
            "a Rufio refusal without a reason"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn mutated_documents_never_panic(
        pick in any::<proptest::sample::Index>(),
        edits in proptest::collection::vec(edit(), 1..6),
    ) {
        let seeds = seeds();
        let seed = &seeds[pick.index(seeds.len())];
        check(&apply(seed, &edits))?;
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,300}") {
        check(&text)?;
    }
}
