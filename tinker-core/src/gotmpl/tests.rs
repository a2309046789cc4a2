use super::{GoTemplate, Limit, RenderLimits};
use serde_json::json;

fn render(text: &str, data: serde_json::Value) -> Result<String, super::TemplateError> {
    GoTemplate::parse("t", text)?.render(&data)
}

fn ok(text: &str, data: serde_json::Value) -> String {
    render(text, data).unwrap_or_else(|e| panic!("{text:?}: {e}"))
}

#[test]
fn fields_index_and_format_partition() {
    let data = json!({"device_1": "aa:bb", "Hardware": {"Disks": ["/dev/nvme0n1", "/dev/sda"]}});
    assert_eq!(
        ok("worker: \"{{.device_1}}\"", data.clone()),
        "worker: \"aa:bb\""
    );
    assert_eq!(
        ok("{{ index .Hardware.Disks 1 }}", data.clone()),
        "/dev/sda"
    );
    assert_eq!(
        ok(
            "{{ formatPartition ( index .Hardware.Disks 0 ) 1 }}",
            data.clone()
        ),
        "/dev/nvme0n1p1"
    );
    assert_eq!(
        ok("{{ formatPartition \"/dev/sda\" 2 }}", data.clone()),
        "/dev/sda2"
    );
    assert_eq!(
        ok("{{ formatPartition \"/dev/disk/by-id/x\" 3 }}", data),
        "/dev/disk/by-id/x-part3"
    );
}

#[test]
fn missing_key_is_an_error_naming_the_key() {
    let e = render(
        "a\n{{ .artifact_server_ip_port }}",
        json!({"device_1": "x"}),
    )
    .unwrap_err();
    assert_eq!(e.missing_key.as_deref(), Some(".artifact_server_ip_port"));
    assert_eq!(e.line, 2);
    let e = render("{{ .Hardware.Nope }}", json!({"Hardware": {}})).unwrap_err();
    assert_eq!(e.missing_key.as_deref(), Some(".Hardware.Nope"));
}

#[test]
fn trim_markers_and_if_else_chains() {
    let data = json!({"Hardware": {"Interfaces": [{"DHCP": {"Arch": "AArch64"}}]}});
    let t = "a:\n  {{- if regexMatch \"a(arch|rm)\" (lower (index .Hardware.Interfaces 0).DHCP.Arch) }}\n  - reboot\n  {{- else }}\n  - kexec\n  {{- end }}\nb";
    assert_eq!(ok(t, data), "a:\n  - reboot\nb");
    let t = "{{ if eq .x 1 }}one{{ else if eq .x 2 }}two{{ else }}many{{ end }}";
    assert_eq!(ok(t, json!({"x": 1})), "one");
    assert_eq!(ok(t, json!({"x": 2})), "two");
    assert_eq!(ok(t, json!({"x": 3})), "many");
}

#[test]
fn range_with_and_variables() {
    let data = json!({"l": ["a", "b"], "m": {"z": 1, "y": 2}, "e": []});
    assert_eq!(
        ok(
            "{{ range $i, $v := .l }}{{$i}}={{$v}};{{ end }}",
            data.clone()
        ),
        "0=a;1=b;"
    );
    assert_eq!(
        ok(
            "{{ range $k, $v := .m }}{{$k}}{{$v}}{{ end }}",
            data.clone()
        ),
        "y2z1"
    );
    assert_eq!(
        ok("{{ range .e }}x{{ else }}none{{ end }}", data.clone()),
        "none"
    );
    assert_eq!(
        ok("{{ with .l }}{{ index . 0 }}{{ end }}", data.clone()),
        "a"
    );
    assert_eq!(
        ok(
            "{{ $x := \"v\" }}{{ $x }}{{ $x = \"w\" }}{{ $x }}",
            data.clone()
        ),
        "vw"
    );
    assert_eq!(
        ok(
            "{{ range .l }}{{ if eq . \"b\" }}{{ break }}{{ end }}{{ . }}{{ end }}",
            data.clone()
        ),
        "a"
    );
    assert_eq!(ok("{{ range .l }}{{ $.m.y }}{{ end }}", data), "22");
}

#[test]
fn pipelines_and_sprig() {
    let data = json!({"s": " Hi ", "n": "", "mask": "255.255.240.0"});
    assert_eq!(ok("{{ .s | trim | upper }}", data.clone()), "HI");
    assert_eq!(ok("{{ .n | default \"d\" }}", data.clone()), "d");
    assert_eq!(ok("{{ netmaskToPrefixLength .mask }}", data.clone()), "20");
    assert_eq!(
        ok("{{ printf \"%s-%03d\" \"x\" 7 }}", data.clone()),
        "x-007"
    );
    assert_eq!(
        ok("{{ \"a\\nb\" | nindent 2 }}", data.clone()),
        "\n  a\n  b"
    );
    assert_eq!(
        ok("{{ and 1 0 }}{{ or 0 \"x\" }}{{ not true }}", data.clone()),
        "0xfalse"
    );
    assert_eq!(ok("{{/* comment */}}{{ len .s }}", data.clone()), "4");
    assert_eq!(ok("{{ list 1 \"a\" }}", data.clone()), "[1 a]");
    assert_eq!(ok("{{ toYaml (dict \"a\" 1) }}", data), "a: 1");
}

#[test]
fn errors_have_lines_and_reasons() {
    for (t, want) in [
        ("{{ if .x }}a", "no {{end}}"),
        ("{{ end }}", "unexpected {{end}}"),
        ("{{ .x", "unclosed action"),
        ("{{ nosuch 1 }}", "not defined"),
        ("{{ index .l 5 }}", "index out of range"),
        ("{{ .l 1 }}", "non-function"),
        ("{{ env \"HOME\" }}", "hermetically"),
        ("{{ define \"x\" }}{{ end }}", "not supported"),
        ("{{ \"unterminated }}", "unclosed"),
    ] {
        let e = render(t, json!({"x": 1, "l": [1]})).unwrap_err();
        assert!(e.to_string().contains(want), "{t:?}: {e}");
    }
}

#[test]
fn output_is_capped() {
    let big = "x".repeat(4096);
    let t = "{{ range .l }}{{ $.big }}{{ end }}";
    let l: Vec<i32> = (0..100).collect();
    let e = render(t, json!({"big": big, "l": l})).unwrap_err();
    assert!(e.reason.contains("exceeds"), "{e}");
    assert_eq!(e.limit, Some(Limit::Output));
    // Text past the cap names where it starts.
    let e = render(
        "{{ range .l }}{{ $.big }}{{ end }}\n  tail",
        json!({"big": "x".repeat(256 * 1024), "l": [1]}),
    )
    .unwrap_err();
    assert_eq!((e.line, e.column), (1, Some(35)), "{e}");
}

/// Renders a template that must be refused, and returns the error.
fn refused(text: &str) -> super::TemplateError {
    match render(text, json!({"a": [1, 2]})) {
        Ok(out) => panic!("{text:?} rendered {} bytes", out.len()),
        Err(e) => e,
    }
}

#[test]
fn a_range_over_a_huge_integer_is_refused_before_it_starts() {
    let e = refused("a\n  {{ range 100000000000 }}x{{ end }}");
    assert_eq!(e.limit, Some(Limit::Steps), "{e}");
    assert_eq!((e.line, e.column), (2, Some(3)), "{e}");
    assert_eq!(
        e.to_string(),
        "template t, line 2, column 3: range of 100000000000 exceeds the limit of 1000000 steps (1000000 left)"
    );
    // Nested ranges that each fit are counted together.
    let e = refused("{{ range 1000 }}{{ range 1000 }}{{ range 2 }}{{ end }}{{ end }}{{ end }}");
    assert_eq!(e.limit, Some(Limit::Steps), "{e}");
    // A range within the limit still runs, lazily.
    assert_eq!(ok("{{ range $i := 3 }}{{ $i }}{{ end }}", json!({})), "012");
}

#[test]
fn integer_overflow_is_an_error_not_a_panic() {
    for t in [
        "{{ div -9223372036854775808 -1 }}",
        "{{ mod -9223372036854775808 -1 }}",
        "{{ add 9223372036854775807 1 }}",
        "{{ mul 4611686018427387904 4 }}",
        "{{ sub -9223372036854775807 2 }}",
        "{{ add1 9223372036854775807 }}",
    ] {
        let e = refused(t);
        assert!(e.reason.contains("integer overflow"), "{t}: {e}");
    }
    assert_eq!(ok("{{ div -9 2 }} {{ mod -9 2 }}", json!({})), "-4 -1");
}

#[test]
fn strings_are_not_grown_past_the_value_limit() {
    for t in [
        "{{ repeat 10000 (repeat 10000 (repeat 10000 \"x\")) }}",
        "{{ repeat 9223372036854775807 \"xy\" }}",
        "{{ $x := \"x\" }}{{ range 100 }}{{ $x = print $x $x }}{{ end }}",
        "{{ printf \"%999999999999d\" 1 }}",
        "{{ printf \"%.999999999999f\" 1.5 }}",
        "{{ indent 1000000000 (repeat 1000 \"\\n\") }}",
        "{{ replace \"\" (repeat 100000 \"y\") (repeat 1000 \"x\") }}",
        "{{ regexReplaceAll \"x\" (repeat 100000 \"x\") \"$0$0$0$0$0$0$0$0$0$0$0$0\" }}",
        "{{ splitList \"\" (repeat 1000000 \"x\") }}",
    ] {
        let e = refused(t);
        assert!(
            matches!(e.limit, Some(Limit::Value) | Some(Limit::Work)),
            "{t}: {e}"
        );
        assert!(e.reason.contains("limit"), "{t}: {e}");
    }
    // Small ones still work.
    assert_eq!(ok("{{ repeat 3 \"ab\" }}", json!({})), "ababab");
}

#[test]
fn copying_a_large_value_in_a_loop_runs_out_of_work_not_time() {
    let big = "x".repeat(512 * 1024);
    let e = render(
        "{{ range 1000 }}{{ if $.big }}{{ end }}{{ end }}",
        json!({ "big": big }),
    )
    .unwrap_err();
    assert_eq!(e.limit, Some(Limit::Work), "{e}");
}

#[test]
fn deep_nesting_is_refused_at_parse_time() {
    let deep_ifs = format!(
        "{}x{}",
        "{{ if 1 }}".repeat(100_000),
        "{{ end }}".repeat(100_000)
    );
    let deep_parens = format!("{{{{ {}1{} }}}}", "(".repeat(100_000), ")".repeat(100_000));
    let deep_ranges = format!(
        "{}x{}",
        "{{ range 1 }}".repeat(100_000),
        "{{ end }}".repeat(100_000)
    );
    for t in [deep_ifs, deep_parens, deep_ranges] {
        let e = GoTemplate::parse("t", &t).unwrap_err();
        assert_eq!(e.limit, Some(Limit::Depth), "{e}");
        assert!(e.reason.contains("limit of 64 levels"), "{e}");
    }
    // Values built from values nest no deeper either.
    let e = refused("{{ $x := list }}{{ range 100000 }}{{ $x = list $x }}{{ end }}");
    assert_eq!(e.limit, Some(Limit::Depth), "{e}");
    // Nesting within the limit is fine.
    let t = format!("{}x{}", "{{ if 1 }}".repeat(60), "{{ end }}".repeat(60));
    assert_eq!(ok(&t, json!({})), "x");
}

#[test]
fn limits_are_a_config() {
    let mut limits = RenderLimits {
        max_steps: 5,
        ..RenderLimits::default()
    };
    let t = GoTemplate::parse_with("small", "{{ range 6 }}{{ end }}", limits).unwrap();
    let e = t.render(&json!({})).unwrap_err();
    assert!(
        e.to_string()
            .contains("range of 6 exceeds the limit of 5 steps"),
        "{e}"
    );
    limits.max_depth = 1;
    let e = GoTemplate::parse_with("small", "{{ if 1 }}{{ if 1 }}{{ end }}{{ end }}", limits)
        .unwrap_err();
    assert_eq!(e.limit, Some(Limit::Depth), "{e}");
}

proptest::proptest! {
    #[test]
    fn arbitrary_text_never_panics(s in "\\PC{0,64}") {
        if let Ok(t) = GoTemplate::parse("p", &s) {
            let _ = t.render(&json!({"a": [1, 2], "b": {"c": "d"}}));
        }
    }

    #[test]
    fn arbitrary_actions_never_panic(s in "\\{\\{[-\\. $a-z()|\"0-9:=,]{0,24}\\}\\}") {
        if let Ok(t) = GoTemplate::parse("p", &s) {
            let _ = t.render(&json!({"a": [1, 2], "b": {"c": "d"}}));
        }
    }
}

#[test]
fn yaml_in_a_template_is_read_within_bounds() {
    // Deep nesting and alias expansion (a "billion laughs") are errors.
    let e = refused("{{ fromYaml (repeat 100000 \"[\") }}");
    assert!(e.reason.contains("fromYaml"), "{e}");
    let laughs = "a: &a [x,x,x,x,x,x,x,x,x,x]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\nf: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e,*e]\ng: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f,*f]\nh: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g,*g]\ni: [*h,*h,*h,*h,*h,*h,*h,*h,*h,*h]\n";
    let e = render("{{ fromYaml .y }}", json!({ "y": laughs })).unwrap_err();
    assert!(e.reason.contains("fromYaml"), "{e}");
}
