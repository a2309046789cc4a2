use super::GoTemplate;
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
