//! Property-based fuzzing of the Go template engine (lexer, parser, executor):
//! whatever the text, parsing and rendering end in a value or a
//! [`TemplateError`] with a message, never a panic, an abort or a hang.
//!
//! 256 cases per property by default; a longer run by hand:
//! `PROPTEST_CASES=100000 cargo test -p tinker-core --test fuzz_templates --release`.

use proptest::prelude::*;
use serde_json::json;
use tinker_core::gotmpl::{GoTemplate, RenderLimits, TemplateError};

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(256)
}

/// Small limits, so a case that loops or grows reaches them fast (reaching them
/// is part of what is tested: it must be an error with a message).
fn limits() -> RenderLimits {
    let mut l = RenderLimits::default();
    l.max_steps = 20_000;
    l.max_work = 4 * 1024 * 1024;
    l.max_value = 256 * 1024;
    l
}

fn data() -> serde_json::Value {
    json!({
        "device_1": "02:00:00:00:00:01",
        "Hardware": {"Disks": ["/dev/nvme0n1", "/dev/sda"], "Interfaces": [{"DHCP": {"Arch": "x86_64", "IP": {"Netmask": "255.255.255.0"}}}]},
        "l": [1, "two", [3], {"k": "v"}, null, true, 2.5],
        "m": {"a": 1, "b": "x\ny"},
        "n": -9223372036854775807i64,
        "s": "hello\tworld"
    })
}

/// What a template is made of: delimiters, keywords, functions, operands and
/// punctuation, plus anything at all.
fn fragment() -> impl Strategy<Value = String> {
    let words = [
        "{{",
        "}}",
        "{{-",
        "-}}",
        "{{/*",
        "*/}}",
        " ",
        "\n",
        "range",
        "if",
        "else",
        "end",
        "with",
        "break",
        "continue",
        "define",
        "template",
        ".",
        ".Hardware.Disks",
        ".l",
        ".m",
        ".n",
        ".s",
        ".nope",
        "$",
        "$x",
        "$i",
        "$v",
        ":=",
        "=",
        ",",
        "|",
        "(",
        ")",
        "index",
        "len",
        "print",
        "println",
        "printf",
        "\"%9d\"",
        "\"%-5s|%x\"",
        "\"%.3f\"",
        "repeat",
        "div",
        "mod",
        "add",
        "sub",
        "mul",
        "add1",
        "max",
        "min",
        "list",
        "dict",
        "fromYaml",
        "toYaml",
        "toJson",
        "splitList",
        "join",
        "replace",
        "regexMatch",
        "regexReplaceAll",
        "indent",
        "nindent",
        "quote",
        "default",
        "and",
        "or",
        "not",
        "eq",
        "lt",
        "formatPartition",
        "netmaskToPrefixLength",
        "int",
        "float64",
        "first",
        "last",
        "keys",
        "dig",
        "get",
        "trimPrefix",
        "upper",
        "title",
        "0",
        "1",
        "-1",
        "2",
        "1000",
        "1e3",
        "0x7fffffffffffffff",
        "-9223372036854775808",
        "9223372036854775807",
        "100000000000",
        "'a'",
        "\"\"",
        "\"a\"",
        "\"$0$0\"",
        "\"[\"",
        "`raw`",
        "true",
        "nil",
        "\"\\n\"",
    ];
    prop_oneof![
        8 => proptest::sample::select(words.to_vec()).prop_map(str::to_string),
        1 => "\\PC{0,6}",
    ]
}

fn check(text: &str) -> Result<(), TestCaseError> {
    let checked = |e: TemplateError| -> Result<(), TestCaseError> {
        prop_assert!(!e.reason.is_empty(), "an error without a reason: {e:?}");
        prop_assert!(
            e.to_string().starts_with("template fuzz, line "),
            "an error that does not say where: {e}"
        );
        Ok(())
    };
    let t = match GoTemplate::parse_with("fuzz", text, limits()) {
        Ok(t) => t,
        Err(e) => return checked(e),
    };
    for result in [t.render(&data()), t.render_placeholder(&data())] {
        match result {
            Ok(out) => prop_assert!(out.len() <= limits().max_output),
            Err(e) => checked(e)?,
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(cases()))]

    #[test]
    fn template_soup_never_panics(parts in proptest::collection::vec(fragment(), 0..40)) {
        check(&parts.concat())?;
    }

    #[test]
    fn actions_built_from_functions_never_panic(
        parts in proptest::collection::vec(fragment(), 1..12),
        nested in 0usize..3,
    ) {
        // Well-formed delimiters, so the executor (not only the lexer) is reached.
        let mut text = format!("{{{{ {} }}}}", parts.join(" "));
        for _ in 0..nested {
            text = format!("{{{{ range $i := 3 }}}}{text}{{{{ end }}}}");
        }
        check(&text)?;
    }

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,200}") {
        check(&text)?;
    }
}
