//! Walks the node tree with data, as Go's `text/template` executes with
//! `missingkey=error`, within [`RenderLimits`]: every step, every value a
//! function produces and every copy of a value is counted as it happens.

use super::funcs::{self, ELEMENT_BYTES, FuncError};
use super::parse::{Arg, Command, Node, Pipeline};
use super::{Limit, Pos, RenderLimits, TemplateError};
use serde_json::Value;

enum Flow {
    Normal,
    Break,
    Continue,
}

struct Exec<'a> {
    name: &'a str,
    root: &'a Value,
    limits: &'a RenderLimits,
    placeholder: bool,
    vars: Vec<(String, Value)>,
    out: String,
    steps: u64,
    /// Bytes produced or copied so far (see [`RenderLimits::max_work`]).
    work: usize,
}

pub(super) fn render(
    name: &str,
    nodes: &[Node],
    data: &Value,
    limits: &RenderLimits,
    placeholder: bool,
) -> Result<String, TemplateError> {
    let mut ex = Exec {
        name,
        root: data,
        limits,
        placeholder,
        vars: vec![(String::new(), data.clone())],
        out: String::new(),
        steps: 0,
        work: 0,
    };
    ex.walk(nodes, data)?;
    Ok(ex.out)
}

/// The size of a value as counted against the limits, and how deeply it nests;
/// the walk stops as soon as `stop` bytes are passed, so measuring is never the
/// expensive part.
fn measure(v: &Value, stop: usize) -> (usize, usize) {
    fn walk(v: &Value, stop: usize, depth: usize, bytes: &mut usize, deepest: &mut usize) {
        *deepest = (*deepest).max(depth);
        match v {
            Value::String(s) => *bytes = bytes.saturating_add(s.len()),
            Value::Array(a) => {
                for x in a {
                    *bytes = bytes.saturating_add(ELEMENT_BYTES);
                    if *bytes > stop {
                        return;
                    }
                    walk(x, stop, depth + 1, bytes, deepest);
                }
            }
            Value::Object(m) => {
                for (k, x) in m {
                    *bytes = bytes.saturating_add(ELEMENT_BYTES + k.len());
                    if *bytes > stop {
                        return;
                    }
                    walk(x, stop, depth + 1, bytes, deepest);
                }
            }
            _ => *bytes = bytes.saturating_add(8),
        }
    }
    let (mut bytes, mut deepest) = (0, 0);
    walk(v, stop, 0, &mut bytes, &mut deepest);
    (bytes, deepest)
}

impl Exec<'_> {
    fn err(&self, pos: Pos, reason: impl Into<String>) -> TemplateError {
        TemplateError::new(self.name, pos, reason)
    }

    fn limit_err(&self, pos: Pos, limit: Limit, reason: impl Into<String>) -> TemplateError {
        let mut e = self.err(pos, reason);
        e.limit = Some(limit);
        e
    }

    /// Counts `n` steps (range iterations, function calls, actions).
    fn step(&mut self, pos: Pos, n: u64) -> Result<(), TemplateError> {
        self.steps = self.steps.saturating_add(n);
        if self.steps > self.limits.max_steps {
            return Err(self.limit_err(
                pos,
                Limit::Steps,
                format!(
                    "more than {} steps (range iterations and calls): the limit of one render",
                    self.limits.max_steps
                ),
            ));
        }
        Ok(())
    }

    /// Counts a value produced or copied: it must fit [`RenderLimits::max_value`]
    /// and [`RenderLimits::max_depth`], and all of them together
    /// [`RenderLimits::max_work`]. Returns its size.
    fn charge(&mut self, pos: Pos, v: &Value, what: &str) -> Result<usize, TemplateError> {
        let max = self.limits.max_value;
        let (bytes, depth) = measure(v, max);
        if bytes > max {
            return Err(self.limit_err(
                pos,
                Limit::Value,
                format!("{what} is larger than the limit of {max} bytes for one value"),
            ));
        }
        // Values from the data nest as the data does; values built by the
        // template (`list (list ..)` in a loop) must stay within the limit.
        if depth > self.limits.max_depth + DATA_DEPTH {
            return Err(self.limit_err(
                pos,
                Limit::Depth,
                format!(
                    "{what} nests deeper than the limit of {} levels",
                    self.limits.max_depth
                ),
            ));
        }
        self.work = self.work.saturating_add(bytes);
        if self.work > self.limits.max_work {
            return Err(self.limit_err(
                pos,
                Limit::Work,
                format!(
                    "more than {} bytes produced and copied: the limit of one render",
                    self.limits.max_work
                ),
            ));
        }
        Ok(bytes)
    }

    fn write(&mut self, pos: Pos, s: &str) -> Result<(), TemplateError> {
        let max = self.limits.max_output;
        if self.out.len().saturating_add(s.len()) > max {
            return Err(self.limit_err(
                pos,
                Limit::Output,
                format!("rendered output exceeds the limit of {max} bytes"),
            ));
        }
        self.out.push_str(s);
        Ok(())
    }

    /// Binds a range's loop variables for one iteration.
    fn bind(
        &mut self,
        pos: Pos,
        names: &[String],
        key: Value,
        item: &Value,
    ) -> Result<(), TemplateError> {
        match names {
            [] => {}
            [one] => {
                self.charge(pos, item, "a range element")?;
                self.vars.push((one.clone(), item.clone()));
            }
            [a, b, ..] => {
                self.charge(pos, item, "a range element")?;
                self.vars.push((a.clone(), key));
                self.vars.push((b.clone(), item.clone()));
            }
        }
        Ok(())
    }

    /// One iteration of a range body; `true`: the loop ends (`{{break}}`).
    fn iterate(
        &mut self,
        pos: Pos,
        names: &[String],
        body: &[Node],
        key: Value,
        item: &Value,
    ) -> Result<bool, TemplateError> {
        self.step(pos, 1)?;
        let inner = self.vars.len();
        self.bind(pos, names, key, item)?;
        let flow = self.walk(body, item)?;
        self.vars.truncate(inner);
        Ok(matches!(flow, Flow::Break))
    }

    fn walk(&mut self, nodes: &[Node], dot: &Value) -> Result<Flow, TemplateError> {
        for node in nodes {
            match node {
                Node::Text(t, pos) => self.write(*pos, t)?,
                Node::Action(p) => {
                    self.step(p.pos, 1)?;
                    let v = self.pipeline(p, dot)?;
                    if p.vars.is_empty() {
                        let s = funcs::go_print(&v);
                        self.write(p.pos, &s)?;
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
                    let pos = pipe.pos;
                    // Iterated in place, one element at a time: a range over an
                    // integer is never allocated, and is refused at once if it
                    // cannot finish within the steps left.
                    let empty = match &v {
                        Value::Array(a) => {
                            for (i, x) in a.iter().enumerate() {
                                if self.iterate(pos, &names, body, Value::from(i), x)? {
                                    break;
                                }
                            }
                            a.is_empty()
                        }
                        Value::Object(m) => {
                            let mut keys: Vec<_> = m.keys().collect();
                            keys.sort();
                            for k in keys {
                                if self.iterate(pos, &names, body, Value::from(k.clone()), &m[k])? {
                                    break;
                                }
                            }
                            m.is_empty()
                        }
                        Value::Number(n) if n.as_i64().is_some() => {
                            let count = n.as_i64().unwrap_or(0).max(0);
                            let left = self.limits.max_steps.saturating_sub(self.steps);
                            if count.unsigned_abs() > left {
                                return Err(self.limit_err(
                                    pos,
                                    Limit::Steps,
                                    format!(
                                        "range of {count} exceeds the limit of {} steps ({left} left)",
                                        self.limits.max_steps
                                    ),
                                ));
                            }
                            for i in 0..count {
                                let i = Value::from(i);
                                if self.iterate(pos, &names, body, i.clone(), &i)? {
                                    break;
                                }
                            }
                            count == 0
                        }
                        Value::Null => true,
                        other => {
                            return Err(self.err(
                                pos,
                                format!("range can't iterate over {}", funcs::go_print(other)),
                            ));
                        }
                    };
                    if empty {
                        self.walk(otherwise, dot)?;
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
            prev = Some(self.command(cmd, dot, prev, p.pos)?);
        }
        let v = prev.unwrap_or(Value::Null);
        for name in &p.vars {
            self.charge(p.pos, &v, &format!("the value of ${name}"))?;
            if p.declare {
                self.vars.push((name.clone(), v.clone()));
            } else {
                let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) else {
                    return Err(self.err(p.pos, format!("undefined variable ${name}")));
                };
                slot.1 = v.clone();
            }
        }
        Ok(v)
    }

    fn command(
        &mut self,
        cmd: &Command,
        dot: &Value,
        mut prev: Option<Value>,
        line: Pos,
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
            // Each argument is a copy: together they must fit one value, so
            // `list $big $big ..` is refused before it is built.
            let mut args = Vec::with_capacity(cmd.args.len());
            let mut total = 0usize;
            for a in cmd.args[1..].iter().map(Some).chain(std::iter::once(None)) {
                let v = match a {
                    Some(a) => self.arg(a, dot, line)?,
                    None => match prev.take() {
                        Some(p) => p,
                        None => break,
                    },
                };
                total = total.saturating_add(self.charge(line, &v, "an argument")?);
                if total > self.limits.max_value {
                    return Err(self.limit_err(
                        line,
                        Limit::Value,
                        format!(
                            "the arguments of {name} are larger than the limit of {} bytes",
                            self.limits.max_value
                        ),
                    ));
                }
                args.push(v);
            }
            return self.call(name, args, line);
        }
        if cmd.args.len() > 1 || prev.is_some() {
            return Err(self.err(
                line,
                format!("can't give argument to non-function {}", describe(first)),
            ));
        }
        let v = self.arg(first, dot, line)?;
        self.charge(line, &v, "a value")?;
        Ok(v)
    }

    /// Calls a function: one step, and its result counted as produced.
    fn call(&mut self, name: &str, args: Vec<Value>, line: Pos) -> Result<Value, TemplateError> {
        self.step(line, 1)?;
        let ctx = funcs::CallCtx {
            limits: self.limits,
            placeholder: self.placeholder,
        };
        let v = funcs::call(name, args, &ctx).map_err(|e| match e {
            FuncError::Failed(reason) => self.err(line, format!("error calling {name}: {reason}")),
            FuncError::Limit(limit, reason) => {
                self.limit_err(line, limit, format!("error calling {name}: {reason}"))
            }
        })?;
        self.charge(line, &v, &format!("the result of {name}"))?;
        Ok(v)
    }

    fn arg(&mut self, arg: &Arg, dot: &Value, line: Pos) -> Result<Value, TemplateError> {
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
            Arg::Func(name) => self.call(name, Vec::new(), line),
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
        line: Pos,
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
                        let mut e = self.err(
                            line,
                            format!("map has no entry for key {f:?} (evaluating {path})"),
                        );
                        e.missing_key = Some(path);
                        return Err(e);
                    }
                },
                Value::Null => {
                    let mut e = self.err(line, format!("nil pointer evaluating {path}"));
                    e.missing_key = Some(path);
                    return Err(e);
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

/// How deeply the data given to a template may nest on top of
/// [`RenderLimits::max_depth`] (JSON and YAML readers stop at 128).
const DATA_DEPTH: usize = 128;

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
