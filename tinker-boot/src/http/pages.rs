//! The operator's pages: the overview (`/status`), a page per workflow and per
//! machine, the sign-in form, and their stylesheet and scripts. The files live
//! in `pages/` beside this module and are built into the binary: nothing comes
//! from another site, and the pages run under `default-src 'self'` (no inline
//! script or style).
//!
//! The pages hold no data: their scripts fetch it from the operator API with
//! the session's cookie, and send a browser without a session to `/login`.

use super::Body;
use super::body::full;
use hyper::{Response, StatusCode};

/// The overview: workflows and machines, each linked to its page.
const OVERVIEW: &str = include_str!("pages/overview.html");
/// One workflow: its timeline, "why pending", output and buttons.
const WORKFLOW: &str = include_str!("pages/workflow.html");
/// One machine: its Hardware, workflows and event log.
const MACHINE: &str = include_str!("pages/machine.html");
/// The sign-in form.
const LOGIN: &str = include_str!("pages/login.html");

/// Where the error of a failed sign-in goes in [`LOGIN`].
const LOGIN_ERROR_SLOT: &str = "<!--error-->";

/// The stylesheet and scripts, by the name they are served under
/// `/status/assets/`.
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("pages/style.css"),
    ),
    (
        "common.js",
        "text/javascript; charset=utf-8",
        include_str!("pages/common.js"),
    ),
    (
        "overview.js",
        "text/javascript; charset=utf-8",
        include_str!("pages/overview.js"),
    ),
    (
        "workflow.js",
        "text/javascript; charset=utf-8",
        include_str!("pages/workflow.js"),
    ),
    (
        "machine.js",
        "text/javascript; charset=utf-8",
        include_str!("pages/machine.js"),
    ),
    (
        "login.js",
        "text/javascript; charset=utf-8",
        include_str!("pages/login.js"),
    ),
];

/// The policy every page and asset is served with: only this origin's files,
/// no inline script or style, no framing, forms only to this origin.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; base-uri 'none'; object-src 'none'; frame-ancestors 'none'; form-action 'self'";

/// The page or asset at `path` (a `GET` or `HEAD`), or `None` when the path is
/// not one of them.
pub(super) fn get(path: &str) -> Option<Response<Body>> {
    if path == "/status" {
        return Some(page(StatusCode::OK, OVERVIEW.to_string()));
    }
    if path == "/login" {
        return Some(login(false));
    }
    let rest = path.strip_prefix("/status/")?;
    if let Some(name) = rest.strip_prefix("assets/") {
        let (_, kind, text) = ASSETS.iter().find(|(n, _, _)| *n == name)?;
        return Some(served(StatusCode::OK, kind, text.to_string()));
    }
    let (html, object) = match rest.split_once('/')? {
        ("workflows", object) => (WORKFLOW, object),
        ("machines", object) => (MACHINE, object),
        _ => return None,
    };
    // `{namespace}/{name}`: the script reads them from the address.
    let (namespace, name) = object.split_once('/')?;
    if namespace.is_empty() || name.is_empty() || name.contains('/') {
        return None;
    }
    Some(page(StatusCode::OK, html.to_string()))
}

/// The sign-in form; `wrong`: after a wrong token, saying so.
pub(super) fn login(wrong: bool) -> Response<Body> {
    if wrong {
        let html = LOGIN.replace(
            LOGIN_ERROR_SLOT,
            r#"<p id="error">That is not the operator token.</p>"#,
        );
        page(StatusCode::UNAUTHORIZED, html)
    } else {
        page(StatusCode::OK, LOGIN.to_string())
    }
}

/// Where a browser goes after signing in: the page it asked for (`next`, from
/// the form), when that is one of these pages, else the overview. Anything
/// else (another site, `//host`, a path with tricks) gives the overview, so
/// the form is no open redirect.
pub(super) fn after_sign_in(next: Option<&str>) -> &str {
    let safe = |p: &&str| {
        (*p == "/status" || p.starts_with("/status/"))
            && p.len() <= 512
            && p.bytes().all(|b| {
                b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'%' | b'~')
            })
            && !p.contains("//")
            && !p.contains("/../")
    };
    next.filter(safe).unwrap_or("/status")
}

/// An answer with the headers every page and asset carries.
fn served(code: StatusCode, kind: &str, body: String) -> Response<Body> {
    let mut r = Response::new(full(body));
    *r.status_mut() = code;
    let h = r.headers_mut();
    let mut set = |name: &'static str, value: &str| {
        if let Ok(v) = value.parse() {
            h.insert(name, v);
        }
    };
    set("content-type", kind);
    set("cache-control", "no-store");
    set("x-content-type-options", "nosniff");
    set("content-security-policy", CONTENT_SECURITY_POLICY);
    set("referrer-policy", "no-referrer");
    r
}

/// An HTML page that no other site may frame.
pub(super) fn page(code: StatusCode, html: String) -> Response<Body> {
    let mut r = served(code, "text/html; charset=utf-8", html);
    r.headers_mut()
        .insert("x-frame-options", "DENY".parse().expect("static header"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_and_assets_are_found_by_path() {
        for path in [
            "/status",
            "/login",
            "/status/workflows/default/wf1",
            "/status/machines/default/m1",
            "/status/assets/style.css",
            "/status/assets/workflow.js",
        ] {
            assert!(get(path).is_some(), "{path}");
        }
        for path in [
            "/status/workflows/default",
            "/status/workflows/default/a/b",
            "/status/workflows//wf",
            "/status/assets/../operator.rs",
            "/status/assets/nope.js",
            "/status/other/a/b",
        ] {
            assert!(get(path).is_none(), "{path}");
        }
    }

    #[test]
    fn no_page_has_inline_script_or_style() {
        for html in [OVERVIEW, WORKFLOW, MACHINE, LOGIN] {
            for tag in html.split('<').skip(1) {
                let tag = tag.split('>').next().unwrap_or_default();
                if tag.starts_with("script") {
                    assert!(tag.contains("src=\"/status/assets/"), "{tag}");
                }
                assert!(!tag.starts_with("style"), "{tag}");
                assert!(!tag.contains("style="), "{tag}");
                assert!(!tag.contains(" on"), "an inline handler: {tag}");
                assert!(!tag.contains("http"), "another site: {tag}");
            }
        }
    }

    #[test]
    fn sign_in_goes_back_only_to_a_page_of_ours() {
        assert_eq!(
            after_sign_in(Some("/status/workflows/default/wf1")),
            "/status/workflows/default/wf1"
        );
        assert_eq!(after_sign_in(None), "/status");
        for bad in [
            "https://evil.example/",
            "//evil.example/status",
            "/status//evil.example",
            "/statusx",
            "/status/../login",
            "/status/a\r\nset-cookie: x",
            "/status/a?b",
            "/api/v1/workflows",
        ] {
            assert_eq!(after_sign_in(Some(bad)), "/status", "{bad:?}");
        }
    }
}
