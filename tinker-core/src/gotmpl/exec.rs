//! Walks the node tree with data, as Go's `text/template` executes with
//! `missingkey=error`.

use super::TemplateError;
use super::funcs;
use super::parse::{Arg, Command, Node, Pipeline};
use serde_json::Value;

/// Rendered output larger than this is an error, as in Tinkerbell (256 KiB).
pub const MAX_OUTPUT: usize = 256 * 1024;

/// Range iterations allowed in one render, so a hostile template cannot spin forever.
const MAX_STEPS: usize = 1_000_000;

enum Flow {
    Normal,
    Break,
    Continue,
}

struct Exec<'a> {
    name: &'a str,
    root: &'a Value,
    vars: Vec<(String, Value)>,
    out: String,
    steps: usize,
}

pub(super) fn render(name: &str, nodes: &[Node], data: &Value) -> Result<String, TemplateError> {
    let mut ex = Exec {
        name,
        root: data,
        vars: vec![(String::new(), data.clone())],
        out: String::new(),
        steps: 0,
    };
    ex.walk(nodes, data)?;
    Ok(ex.out)
}

impl Exec<'_> {
    fn err(&self, line: usize, reason: impl Into<String>) -> TemplateError {
        TemplateError {
            name: self.name.to_string(),
            line,
            reason: reason.into(),
            missing_key: None,
        }
    }

    fn write(&mut self, line: usize, s: &str) -> Result<(), TemplateError> {
        if self.out.len() + s.len() > MAX_OUTPUT {
            return Err(self.err(line, format!("rendered output exceeds {MAX_OUTPUT} bytes")));
        }
        self.out.push_str(s);
        Ok(())
    }

    fn walk(&mut self, nodes: &[Node], dot: &Value) -> Result<Flow, TemplateError> {
        for node in nodes {
            match node {
                Node::Text(t) => self.write(0, t)?,
                Node::Action(p) => {
                    let v = self.pipeline(p, dot)?;
                    if p.vars.is_empty() {
                        let s = funcs::go_print(&v);
                        self.write(p.line, &s)?;
                    }
                }
                Node::If {
                    branches,
                    otherwise,
                } => {
                    let mark = self.vars.len();
                    let mut chosen = None;
                    for (cond, body) in branches {
                        if funcs::truthy(&self.pipeline(cond, dot)?) {
                            chosen = Some(body);
                            break;
                        }
                    }
                    let flow = self.walk(chosen.unwrap_or(otherwise), dot)?;
                    self.vars.truncate(mark);
                    if !matches!(flow, Flow::Normal) {
                        return Ok(flow);
                    }
                }
                Node::With {
                    pipe,
                    body,
                    otherwise,
                } => {
                    let mark = self.vars.len();
                    let v = self.pipeline(pipe, dot)?;
                    let flow = if funcs::truthy(&v) {
                        self.walk(body, &v)?
                    } else {
                        self.walk(otherwise, dot)?
                    };
                    self.vars.truncate(mark);
                    if !matches!(flow, Flow::Normal) {
                        return Ok(flow);
                    }
                }
                Node::Range {
                    pipe,
                    body,
                    otherwise,
                } => {
                    let mark = self.vars.len();
                    // The range pipeline's variables are the loop's, not assignments.
                    let mut p = pipe.clone();
                    let names = std::mem::take(&mut p.vars);
                    let v = self.pipeline(&p, dot)?;
                    let items: Vec<(Value, Value)> = match &v {
                        Value::Array(a) => a
                            .iter()
                            .enumerate()
                            .map(|(i, x)| (Value::from(i), x.clone()))
                            .collect(),
                        Value::Object(m) => {
                            let mut keys: Vec<_> = m.keys().collect();
                            keys.sort();
                            keys.into_iter()
                                .map(|k| (Value::from(k.clone()), m[k].clone()))
                                .collect()
                        }
                        Value::Number(n) if n.as_i64().is_some() => {
                            (0..n.as_i64().unwrap_or(0).max(0))
                                .map(|i| (Value::from(i), Value::from(i)))
                                .collect()
                        }
                        Value::Null => Vec::new(),
                        other => {
                            return Err(self.err(
                                pipe.line,
                                format!("range can't iterate over {}", funcs::go_print(other)),
                            ));
                        }
                    };
                    if items.is_empty() {
                        self.walk(otherwise, dot)?;
                    }
                    for (k, item) in items {
                        self.steps += 1;
                        if self.steps > MAX_STEPS {
                            return Err(self.err(pipe.line, "too many range iterations"));
                        }
                        let inner = self.vars.len();
                        match names.as_slice() {
                            [] => {}
                            [one] => self.vars.push((one.clone(), item.clone())),
                            [a, b, ..] => {
                                self.vars.push((a.clone(), k));
                                self.vars.push((b.clone(), item.clone()));
                            }
                        }
                        let flow = self.walk(body, &item)?;
                        self.vars.truncate(inner);
                        if matches!(flow, Flow::Break) {
                            break;
                        }
                    }
                    self.vars.truncate(mark);
                }
                Node::Break => return Ok(Flow::Break),
                Node::Continue => return Ok(Flow::Continue),
            }
        }
        Ok(Flow::Normal)
    }

    fn pipeline(&mut self, p: &Pipeline, dot: &Value) -> Result<Value, TemplateError> {
        let mut prev: Option<Value> = None;
        for cmd in &p.cmds {
            prev = Some(self.command(cmd, dot, prev, p.line)?);
        }
        let v = prev.unwrap_or(Value::Null);
        for name in &p.vars {
            if p.declare {
                self.vars.push((name.clone(), v.clone()));
            } else {
                let line = p.line;
                let slot = self
                    .vars
                    .iter_mut()
                    .rev()
                    .find(|(n, _)| n == name)
                    .ok_or_else(|| TemplateError {
                        name: self.name.to_string(),
                        line,
                        reason: format!("undefined variable ${name}"),
                        missing_key: None,
                    })?;
                slot.1 = v.clone();
            }
        }
        Ok(v)
    }

    fn command(
        &mut self,
        cmd: &Command,
        dot: &Value,
        prev: Option<Value>,
        line: usize,
    ) -> Result<Value, TemplateError> {
        let first = &cmd.args[0];
        if let Arg::Func(name) = first {
            // `and` and `or` stop at the first decisive argument, as Go does.
            if name == "and" || name == "or" {
                let want = name == "or";
                let mut last = Value::Null;
                let count = cmd.args.len() - 1 + usize::from(prev.is_some());
                if count == 0 {
                    return Err(self.err(
                        line,
                        format!("wrong number of args for {name}: want at least 1 got 0"),
                    ));
                }
                for a in &cmd.args[1..] {
                    last = self.arg(a, dot, line)?;
                    if funcs::truthy(&last) == want {
                        return Ok(last);
                    }
                }
                if let Some(p) = prev {
                    last = p;
                }
                return Ok(last);
            }
            let mut args = Vec::with_capacity(cmd.args.len());
            for a in &cmd.args[1..] {
                args.push(self.arg(a, dot, line)?);
            }
            if let Some(p) = prev {
                args.push(p);
            }
            return funcs::call(name, args)
                .map_err(|reason| self.err(line, format!("error calling {name}: {reason}")));
        }
        if cmd.args.len() > 1 || prev.is_some() {
            return Err(self.err(
                line,
                format!("can't give argument to non-function {}", describe(first)),
            ));
        }
        self.arg(first, dot, line)
    }

    fn arg(&mut self, arg: &Arg, dot: &Value, line: usize) -> Result<Value, TemplateError> {
        match arg {
            Arg::Field(fields) => self.fields(dot, fields, line, ""),
            Arg::Var(name, fields) => {
                let base = self
                    .vars
                    .iter()
                    .rev()
                    .find(|(n, _)| n == name)
                    .map(|(_, v)| v.clone())
                    .or_else(|| name.is_empty().then(|| self.root.clone()))
                    .ok_or_else(|| self.err(line, format!("undefined variable ${name}")))?;
                self.fields(&base, fields, line, &format!("${name}"))
            }
            Arg::Func(name) => funcs::call(name, Vec::new())
                .map_err(|reason| self.err(line, format!("error calling {name}: {reason}"))),
            Arg::Str(s) => Ok(Value::from(s.clone())),
            Arg::Int(n) => Ok(Value::from(*n)),
            Arg::Float(f) => Ok(serde_json::Number::from_f64(*f)
                .map(Value::Number)
                .unwrap_or(Value::Null)),
            Arg::Bool(b) => Ok(Value::Bool(*b)),
            Arg::Nil => Ok(Value::Null),
            Arg::Sub(p, fields) => {
                let v = self.pipeline(p, dot)?;
                self.fields(&v, fields, line, "(...)")
            }
        }
    }

    fn fields(
        &self,
        base: &Value,
        fields: &[String],
        line: usize,
        prefix: &str,
    ) -> Result<Value, TemplateError> {
        let mut cur = base;
        let mut path = prefix.to_string();
        for f in fields {
            path.push('.');
            path.push_str(f);
            cur = match cur {
                Value::Object(m) => match m.get(f) {
                    Some(v) => v,
                    None => {
                        return Err(TemplateError {
                            name: self.name.to_string(),
                            line,
                            reason: format!("map has no entry for key {f:?} (evaluating {path})"),
                            missing_key: Some(path),
                        });
                    }
                },
                Value::Null => {
                    return Err(TemplateError {
                        name: self.name.to_string(),
                        line,
                        reason: format!("nil pointer evaluating {path}"),
                        missing_key: Some(path),
                    });
                }
                other => {
                    return Err(self.err(
                        line,
                        format!(
                            "can't evaluate field {f} in type {}",
                            funcs::type_name(other)
                        ),
                    ));
                }
            };
        }
        Ok(cur.clone())
    }
}

fn describe(arg: &Arg) -> String {
    match arg {
        Arg::Field(f) if f.is_empty() => ".".into(),
        Arg::Field(f) => format!(".{}", f.join(".")),
        Arg::Var(n, f) => format!(
            "${n}{}",
            f.iter().map(|x| format!(".{x}")).collect::<String>()
        ),
        Arg::Str(s) => format!("{s:?}"),
        Arg::Int(n) => n.to_string(),
        Arg::Float(x) => x.to_string(),
        Arg::Bool(b) => b.to_string(),
        Arg::Nil => "nil".into(),
        Arg::Func(n) => n.clone(),
        Arg::Sub(..) => "(...)".into(),
    }
}
