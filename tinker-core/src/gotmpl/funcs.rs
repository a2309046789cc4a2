//! The functions a template can call: Go's builtins, the hermetic Sprig functions
//! Tinkerbell templates use, and Tinkerbell's own (`formatPartition`,
//! `netmaskToPrefixLength`, `toYaml`, `fromYaml`). Sprig functions that reach
//! outside the template (`env`, `expandenv`, `getHostByName`) are absent, as in
//! Tinkerbell's hermetic map.

use super::{Limit, RenderLimits};
use serde_json::{Map, Value};
use std::cmp::Ordering;

/// Why a function call failed: an ordinary error, or a limit it would pass.
#[derive(Debug)]
pub(super) enum FuncError {
    Failed(String),
    Limit(Limit, String),
}

impl From<String> for FuncError {
    fn from(s: String) -> Self {
        FuncError::Failed(s)
    }
}

impl From<&str> for FuncError {
    fn from(s: &str) -> Self {
        FuncError::Failed(s.to_string())
    }
}

type FResult = Result<Value, FuncError>;

/// Refuses a result of `size` bytes (`None`: more than a `usize` holds) before
/// anything is allocated for it.
fn fits(what: &str, size: Option<usize>, limits: &RenderLimits) -> Result<(), FuncError> {
    match size {
        Some(n) if n <= limits.max_value => Ok(()),
        n => Err(FuncError::Limit(
            Limit::Value,
            format!(
                "{what} would produce {} bytes, over the limit of {} bytes",
                n.map_or_else(|| "more than 2^64".to_string(), |n| n.to_string()),
                limits.max_value
            ),
        )),
    }
}

/// The per-element cost of a list or map entry, counted against
/// [`RenderLimits::max_value`]: about what a `serde_json::Value` takes in memory.
pub(super) const ELEMENT_BYTES: usize = 32;

fn overflow(name: &str) -> FuncError {
    FuncError::Failed(format!("{name}: integer overflow"))
}

/// Go's truth: false, 0, nil and empty strings, lists and maps are false.
pub(super) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

pub(super) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "nil",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float64",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "[]interface {}",
        Value::Object(_) => "map[string]interface {}",
    }
}

/// Formats like Go's `fmt.Sprint` of an `interface{}` in a template.
pub(super) fn go_print(v: &Value) -> String {
    match v {
        Value::Null => "<no value>".into(),
        other => go_fmt(other),
    }
}

fn go_fmt(v: &Value) -> String {
    match v {
        Value::Null => "<nil>".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => fmt_number(n),
        Value::String(s) => s.clone(),
        Value::Array(a) => format!("[{}]", a.iter().map(go_fmt).collect::<Vec<_>>().join(" ")),
        Value::Object(m) => {
            let mut keys: Vec<_> = m.keys().collect();
            keys.sort();
            let parts: Vec<String> = keys
                .iter()
                .map(|k| format!("{k}:{}", go_fmt(&m[*k])))
                .collect();
            format!("map[{}]", parts.join(" "))
        }
    }
}

fn fmt_number(n: &serde_json::Number) -> String {
    if let Some(i) = n.as_i64() {
        return i.to_string();
    }
    if let Some(u) = n.as_u64() {
        return u.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    if f.fract() == 0.0 && f.abs() < 1e21 {
        format!("{f:.0}")
    } else {
        f.to_string()
    }
}

fn as_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => go_fmt(other),
    }
}

fn as_int(v: &Value) -> Result<i64, String> {
    match v {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().map(|f| f as i64))
            .ok_or_else(|| format!("{n} is not an integer")),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an integer")),
        Value::Bool(b) => Ok(i64::from(*b)),
        Value::Null => Ok(0),
        other => Err(format!("can't convert {} to int", type_name(other))),
    }
}

fn as_f64(v: &Value) -> Result<f64, String> {
    match v {
        Value::Number(n) => n.as_f64().ok_or_else(|| "bad number".to_string()),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a number")),
        Value::Null => Ok(0.0),
        other => Err(format!("can't convert {} to float", type_name(other))),
    }
}

fn arity(name: &str, args: &[Value], want: usize) -> Result<(), String> {
    if args.len() != want {
        return Err(format!(
            "wrong number of args for {name}: want {want} got {}",
            args.len()
        ));
    }
    Ok(())
}

fn compare(a: &Value, b: &Value) -> Result<Ordering, String> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            x.partial_cmp(&y)
                .ok_or_else(|| "incomparable numbers".to_string())
        }
        (Value::String(x), Value::String(y)) => Ok(x.cmp(y)),
        _ => Err(format!(
            "incompatible types for comparison: {} and {}",
            type_name(a),
            type_name(b)
        )),
    }
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn int_value(i: i64) -> Value {
    Value::from(i)
}

/// How a call is made: within which limits, and whether the data stands in for
/// a Hardware not known yet (see [`super::GoTemplate::render_placeholder`]).
pub(super) struct CallCtx<'a> {
    pub limits: &'a RenderLimits,
    pub placeholder: bool,
}

/// Calls a function by name; a result that would pass the limits is refused
/// before it is built.
pub(super) fn call(name: &str, args: Vec<Value>, ctx: &CallCtx<'_>) -> FResult {
    let limits = ctx.limits;
    let a = &args;
    match name {
        // --- Go builtins ---
        "not" => {
            arity(name, a, 1)?;
            Ok(Value::Bool(!truthy(&a[0])))
        }
        "len" => {
            arity(name, a, 1)?;
            let n = match &a[0] {
                Value::String(s) => s.len(),
                Value::Array(x) => x.len(),
                Value::Object(m) => m.len(),
                Value::Null => 0,
                other => return Err(format!("len of type {}", type_name(other)).into()),
            };
            Ok(int_value(n as i64))
        }
        "index" => {
            let (first, keys) = a
                .split_first()
                .ok_or("wrong number of args for index: want at least 1 got 0")?;
            let mut cur = first.clone();
            for k in keys {
                cur = match &cur {
                    Value::Array(items) => {
                        let i = as_int(k)?;
                        match usize::try_from(i).ok().and_then(|i| items.get(i)) {
                            Some(item) => item.clone(),
                            // A placeholder list has one of each thing; a real
                            // Hardware may have as many as the template asks for.
                            None if ctx.placeholder && i >= 0 && !items.is_empty() => {
                                items[items.len() - 1].clone()
                            }
                            None => {
                                return Err(format!(
                                    "index out of range: {i} (the list has {} element{})",
                                    items.len(),
                                    if items.len() == 1 { "" } else { "s" }
                                )
                                .into());
                            }
                        }
                    }
                    Value::String(s) => {
                        let i = as_int(k)?;
                        let b = s.as_bytes();
                        if i < 0 || i as usize >= b.len() {
                            return Err(format!("index out of range: {i}").into());
                        }
                        int_value(i64::from(b[i as usize]))
                    }
                    // Go's index on a map returns the zero value for a missing key.
                    Value::Object(m) => m.get(&as_str(k)).cloned().unwrap_or(Value::Null),
                    Value::Null => return Err("index of untyped nil".into()),
                    other => {
                        return Err(format!("can't index item of type {}", type_name(other)).into());
                    }
                };
            }
            Ok(cur)
        }
        "print" | "println" => {
            let mut out = String::new();
            for (i, v) in a.iter().enumerate() {
                let is_str = matches!(v, Value::String(_));
                let prev_str = i > 0 && matches!(a[i - 1], Value::String(_));
                let part = go_fmt(v);
                let space = i > 0 && (name == "println" || (!is_str && !prev_str));
                fits(
                    name,
                    Some(out.len() + usize::from(space) + part.len()),
                    limits,
                )?;
                if space {
                    out.push(' ');
                }
                out.push_str(&part);
            }
            if name == "println" {
                out.push('\n');
            }
            Ok(Value::from(out))
        }
        "printf" => {
            let (f, rest) = a
                .split_first()
                .ok_or("wrong number of args for printf: want at least 1 got 0")?;
            Ok(Value::from(sprintf(&as_str(f), rest, limits)?))
        }
        "eq" => {
            let (first, rest) = a.split_first().ok_or("missing argument for comparison")?;
            if rest.is_empty() {
                return Err("missing argument for comparison".into());
            }
            Ok(Value::Bool(rest.iter().any(|x| equal(first, x))))
        }
        "ne" => {
            arity(name, a, 2)?;
            Ok(Value::Bool(!equal(&a[0], &a[1])))
        }
        "lt" | "le" | "gt" | "ge" => {
            arity(name, a, 2)?;
            let o = compare(&a[0], &a[1])?;
            Ok(Value::Bool(match name {
                "lt" => o == Ordering::Less,
                "le" => o != Ordering::Greater,
                "gt" => o == Ordering::Greater,
                _ => o != Ordering::Less,
            }))
        }
        // --- Tinkerbell ---
        "formatPartition" => {
            arity(name, a, 2)?;
            Ok(Value::from(format_partition(
                &as_str(&a[0]),
                as_int(&a[1])?,
            )))
        }
        "netmaskToPrefixLength" => {
            arity(name, a, 1)?;
            let mask: std::net::Ipv4Addr = as_str(&a[0])
                .parse()
                .map_err(|_| format!("{:?} is not a netmask", as_str(&a[0])))?;
            let bits = u32::from(mask);
            if bits.leading_ones() + bits.trailing_zeros() != 32 {
                return Err(format!("{mask} is not a contiguous netmask").into());
            }
            Ok(int_value(i64::from(bits.leading_ones())))
        }
        "toYaml" => {
            arity(name, a, 1)?;
            let s = serde_norway::to_string(&a[0]).map_err(|e| e.to_string())?;
            Ok(Value::from(s.trim_end_matches('\n').to_string()))
        }
        "fromYaml" => {
            arity(name, a, 1)?;
            Ok(serde_norway::from_str::<Value>(&as_str(&a[0])).map_err(|e| e.to_string())?)
        }
        "toJson" => {
            arity(name, a, 1)?;
            Ok(Value::from(
                serde_json::to_string(&a[0]).map_err(|e| e.to_string())?,
            ))
        }
        // --- Sprig, strings ---
        "lower" | "upper" | "trim" | "title" | "toString" => {
            arity(name, a, 1)?;
            let s = as_str(&a[0]);
            Ok(Value::from(match name {
                "lower" => s.to_lowercase(),
                "upper" => s.to_uppercase(),
                "trim" => s.trim().to_string(),
                "title" => s
                    .split(' ')
                    .map(|w| {
                        let mut c = w.chars();
                        match c.next() {
                            Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
                            None => String::new(),
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" "),
                _ => s,
            }))
        }
        "trimPrefix" | "trimSuffix" | "trimAll" => {
            arity(name, a, 2)?;
            let (cut, s) = (as_str(&a[0]), as_str(&a[1]));
            Ok(Value::from(match name {
                "trimPrefix" => s.strip_prefix(cut.as_str()).unwrap_or(&s).to_string(),
                "trimSuffix" => s.strip_suffix(cut.as_str()).unwrap_or(&s).to_string(),
                _ => s.trim_matches(|c| cut.contains(c)).to_string(),
            }))
        }
        "contains" | "hasPrefix" | "hasSuffix" => {
            arity(name, a, 2)?;
            let (needle, s) = (as_str(&a[0]), as_str(&a[1]));
            Ok(Value::Bool(match name {
                "contains" => s.contains(&needle),
                "hasPrefix" => s.starts_with(&needle),
                _ => s.ends_with(&needle),
            }))
        }
        "replace" => {
            arity(name, a, 3)?;
            let (old, new, s) = (as_str(&a[0]), as_str(&a[1]), as_str(&a[2]));
            // An empty `old` matches between every character (Go's rule too).
            let hits = if old.is_empty() {
                s.chars().count() + 1
            } else {
                s.matches(old.as_str()).count()
            };
            let grows = new.len().saturating_sub(old.len());
            fits(
                name,
                hits.checked_mul(grows).and_then(|g| g.checked_add(s.len())),
                limits,
            )?;
            Ok(Value::from(s.replace(&old, &new)))
        }
        "repeat" => {
            arity(name, a, 2)?;
            let n = as_int(&a[0])?;
            let s = as_str(&a[1]);
            let n = usize::try_from(n).map_err(|_| format!("repeat count {n} is negative"))?;
            fits(name, s.len().checked_mul(n), limits)?;
            Ok(Value::from(s.repeat(n)))
        }
        "quote" | "squote" => {
            let q = if name == "quote" { '"' } else { '\'' };
            let parts: Vec<String> = a
                .iter()
                .filter(|v| !v.is_null())
                .map(|v| {
                    if q == '"' {
                        format!("{:?}", as_str(v))
                    } else {
                        format!("'{}'", as_str(v))
                    }
                })
                .collect();
            Ok(Value::from(parts.join(" ")))
        }
        "indent" | "nindent" => {
            arity(name, a, 2)?;
            let width = usize::try_from(as_int(&a[0])?.max(0)).unwrap_or(usize::MAX);
            let s = as_str(&a[1]);
            let lines = s.matches('\n').count() + 1;
            fits(
                name,
                lines
                    .checked_mul(width)
                    .and_then(|p| p.checked_add(s.len() + 1)),
                limits,
            )?;
            let pad = " ".repeat(width);
            let body = s
                .split('\n')
                .map(|l| format!("{pad}{l}"))
                .collect::<Vec<_>>()
                .join("\n");
            Ok(Value::from(if name == "nindent" {
                format!("\n{body}")
            } else {
                body
            }))
        }
        "join" => {
            arity(name, a, 2)?;
            let sep = as_str(&a[0]);
            let items = match &a[1] {
                Value::Array(x) => x.iter().map(as_str).collect::<Vec<_>>(),
                other => vec![as_str(other)],
            };
            Ok(Value::from(items.join(&sep)))
        }
        "splitList" => {
            arity(name, a, 2)?;
            let (sep, s) = (as_str(&a[0]), as_str(&a[1]));
            let pieces = if sep.is_empty() {
                s.chars().count() + 2
            } else {
                s.matches(sep.as_str()).count() + 1
            };
            fits(
                name,
                pieces
                    .checked_mul(ELEMENT_BYTES)
                    .and_then(|n| n.checked_add(s.len())),
                limits,
            )?;
            Ok(Value::Array(
                s.split(sep.as_str()).map(Value::from).collect(),
            ))
        }
        "regexMatch" => {
            arity(name, a, 2)?;
            let re = regex::Regex::new(&as_str(&a[0])).map_err(|e| e.to_string())?;
            Ok(Value::Bool(re.is_match(&as_str(&a[1]))))
        }
        "regexReplaceAll" => {
            arity(name, a, 3)?;
            let re = regex::Regex::new(&as_str(&a[0])).map_err(|e| e.to_string())?;
            let (s, with) = (as_str(&a[1]), as_str(&a[2]));
            // Each `$ref` in the replacement expands to at most the match: a
            // bound on the result that is known before anything is built.
            let refs = with.matches('$').count();
            let mut bound = Some(s.len());
            for m in re.find_iter(&s) {
                bound = refs
                    .checked_mul(m.len())
                    .and_then(|r| r.checked_add(with.len()))
                    .and_then(|r| bound?.checked_add(r));
                if bound.is_none_or(|b| b > limits.max_value) {
                    break;
                }
            }
            fits(name, bound, limits)?;
            Ok(Value::from(re.replace_all(&s, with.as_str()).into_owned()))
        }
        // --- Sprig, defaults and logic ---
        "default" => {
            arity(name, a, 2)?;
            Ok(if truthy(&a[1]) {
                a[1].clone()
            } else {
                a[0].clone()
            })
        }
        "empty" => {
            arity(name, a, 1)?;
            Ok(Value::Bool(!truthy(&a[0])))
        }
        "coalesce" => Ok(a.iter().find(|v| truthy(v)).cloned().unwrap_or(Value::Null)),
        "ternary" => {
            arity(name, a, 3)?;
            Ok(if truthy(&a[2]) {
                a[0].clone()
            } else {
                a[1].clone()
            })
        }
        // --- Sprig, numbers ---
        "int" | "int64" | "atoi" => {
            arity(name, a, 1)?;
            Ok(int_value(as_int(&a[0]).unwrap_or(0)))
        }
        "float64" => {
            arity(name, a, 1)?;
            Ok(serde_json::Number::from_f64(as_f64(&a[0]).unwrap_or(0.0))
                .map(Value::Number)
                .unwrap_or(Value::Null))
        }
        // Integer arithmetic that overflows is an error: Go would wrap silently
        // and Rust would panic; neither is a value a template should go on with.
        "add1" => {
            arity(name, a, 1)?;
            Ok(int_value(
                as_int(&a[0])?
                    .checked_add(1)
                    .ok_or_else(|| overflow(name))?,
            ))
        }
        "add" | "mul" | "max" | "min" => {
            let mut it = a.iter().map(as_int);
            let first = it
                .next()
                .ok_or(format!("wrong number of args for {name}"))??;
            let mut acc = first;
            for x in it {
                let x = x?;
                acc = match name {
                    "add" => acc.checked_add(x).ok_or_else(|| overflow(name))?,
                    "mul" => acc.checked_mul(x).ok_or_else(|| overflow(name))?,
                    "max" => acc.max(x),
                    _ => acc.min(x),
                };
            }
            Ok(int_value(acc))
        }
        "sub" | "div" | "mod" => {
            arity(name, a, 2)?;
            let (x, y) = (as_int(&a[0])?, as_int(&a[1])?);
            let v = match name {
                "sub" => x.checked_sub(y),
                _ if y == 0 => return Err("integer divide by zero".into()),
                // i64::MIN / -1 is the one quotient that does not fit.
                "div" => x.checked_div(y),
                _ => x.checked_rem(y),
            };
            Ok(int_value(v.ok_or_else(|| overflow(name))?))
        }
        // --- Sprig, lists and dicts ---
        "list" => Ok(Value::Array(args)),
        "first" | "last" => {
            arity(name, a, 1)?;
            match &a[0] {
                Value::Array(x) => Ok((if name == "first" { x.first() } else { x.last() })
                    .cloned()
                    .unwrap_or(Value::Null)),
                other => Err(format!("{name} of type {}", type_name(other)).into()),
            }
        }
        "has" => {
            arity(name, a, 2)?;
            match &a[1] {
                Value::Array(x) => Ok(Value::Bool(x.iter().any(|v| equal(v, &a[0])))),
                _ => Ok(Value::Bool(false)),
            }
        }
        "sortAlpha" => {
            arity(name, a, 1)?;
            let mut items: Vec<String> = match &a[0] {
                Value::Array(x) => x.iter().map(as_str).collect(),
                other => vec![as_str(other)],
            };
            items.sort();
            Ok(Value::Array(items.into_iter().map(Value::from).collect()))
        }
        "dict" => {
            if !a.len().is_multiple_of(2) {
                return Err("dict needs an even number of arguments".into());
            }
            let mut m = Map::new();
            for pair in a.chunks(2) {
                m.insert(as_str(&pair[0]), pair[1].clone());
            }
            Ok(Value::Object(m))
        }
        "get" => {
            arity(name, a, 2)?;
            Ok(a[0].get(as_str(&a[1])).cloned().unwrap_or(Value::from("")))
        }
        "hasKey" => {
            arity(name, a, 2)?;
            Ok(Value::Bool(a[0].get(as_str(&a[1])).is_some()))
        }
        "keys" => {
            let mut out = Vec::new();
            for m in a {
                if let Value::Object(m) = m {
                    out.extend(m.keys().cloned().map(Value::from));
                }
            }
            Ok(Value::Array(out))
        }
        "dig" => {
            // dig "a" "b" default map
            if a.len() < 3 {
                return Err("dig needs keys, a default and a map".into());
            }
            let (map, rest) = a.split_last().ok_or("dig needs a map")?;
            let (default, keys) = rest.split_last().ok_or("dig needs a default")?;
            let mut cur = map;
            for k in keys {
                match cur.get(as_str(k)) {
                    Some(v) => cur = v,
                    None => return Ok(default.clone()),
                }
            }
            Ok(cur.clone())
        }
        "env" | "expandenv" | "getHostByName" => {
            Err(format!("{name} is not available: templates are rendered hermetically").into())
        }
        _ => Err(format!("function {name:?} not defined").into()),
    }
}

/// Tinkerbell's `formatPartition`: `/dev/disk/by-id/x` → `-partN`; a device ending
/// in a digit (`/dev/nvme0n1`) → `pN`; else (`/dev/sda`) → `N`.
pub(super) fn format_partition(dev: &str, n: i64) -> String {
    if dev.starts_with("/dev/disk/") {
        format!("{dev}-part{n}")
    } else if dev.chars().last().is_some_and(|c| c.is_ascii_digit()) {
        format!("{dev}p{n}")
    } else {
        format!("{dev}{n}")
    }
}

/// A subset of Go's `fmt.Sprintf`: verbs `v s d q x X f t %`, width, `-` and `0`
/// flags, and precision for `f`. A width or precision that would pass
/// [`RenderLimits::max_value`] is refused before it is padded to.
fn sprintf(format: &str, args: &[Value], limits: &RenderLimits) -> Result<String, FuncError> {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    let mut next = 0usize;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut left = false;
        let mut zero = false;
        while let Some(&f) = chars.peek() {
            match f {
                '-' => left = true,
                '0' => zero = true,
                '+' | ' ' | '#' => {}
                _ => break,
            }
            chars.next();
        }
        let mut width = String::new();
        while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            width.push(d);
            chars.next();
        }
        let mut precision = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                p.push(d);
                chars.next();
            }
            precision = Some(p.parse::<usize>().unwrap_or(usize::MAX));
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        next += 1;
        // A float's integer part takes at most 309 digits.
        if verb == 'f' {
            fits(
                "printf",
                precision.unwrap_or(6).checked_add(out.len() + 320),
                limits,
            )?;
        }
        let w: usize = if width.is_empty() {
            0
        } else {
            width.parse().unwrap_or(usize::MAX)
        };
        fits("printf", w.checked_add(out.len()), limits)?;
        let body = match verb {
            'd' => as_int(arg)
                .map(|i| i.to_string())
                .unwrap_or_else(|_| format!("%!d({})", go_fmt(arg))),
            'x' | 'X' => match arg {
                Value::String(s) => s.bytes().map(|b| format!("{b:02x}")).collect(),
                other => as_int(other).map(|i| format!("{i:x}")).unwrap_or_default(),
            },
            'q' => format!("{:?}", as_str(arg)),
            'f' => format!("{:.*}", precision.unwrap_or(6), as_f64(arg).unwrap_or(0.0)),
            't' => truthy(arg).to_string(),
            _ => go_fmt(arg),
        };
        let body = if verb == 'X' {
            body.to_uppercase()
        } else {
            body
        };
        fits("printf", out.len().checked_add(body.len()), limits)?;
        if body.chars().count() >= w {
            out.push_str(&body);
        } else if left {
            out.push_str(&format!("{body:<w$}"));
        } else if zero && matches!(verb, 'd' | 'x' | 'X' | 'f') {
            out.push_str(&format!("{body:0>w$}"));
        } else {
            out.push_str(&format!("{body:>w$}"));
        }
    }
    if next < args.len() {
        out.push_str("%!(EXTRA ");
        out.push_str(
            &args[next..]
                .iter()
                .map(go_fmt)
                .collect::<Vec<_>>()
                .join(", "),
        );
        out.push(')');
    }
    Ok(out)
}
