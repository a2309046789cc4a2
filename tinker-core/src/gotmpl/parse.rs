//! Builds the node tree from lexed items.

use super::lex::{Item, Tok, Token};

#[derive(Debug, Clone)]
pub(super) enum Node {
    Text(String),
    Action(Pipeline),
    If {
        branches: Vec<(Pipeline, Vec<Node>)>,
        otherwise: Vec<Node>,
    },
    Range {
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
    With {
        pipe: Pipeline,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
    Break,
    Continue,
}

#[derive(Debug, Clone)]
pub(super) struct Pipeline {
    pub line: usize,
    /// Variables declared (`$x :=`) or assigned (`$x =`).
    pub vars: Vec<String>,
    pub declare: bool,
    pub cmds: Vec<Command>,
}

#[derive(Debug, Clone)]
pub(super) struct Command {
    pub args: Vec<Arg>,
}

#[derive(Debug, Clone)]
pub(super) enum Arg {
    /// `.` followed by fields (empty: the dot itself).
    Field(Vec<String>),
    /// `$name` followed by fields (`$` is the root).
    Var(String, Vec<String>),
    Func(String),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    /// A parenthesised pipeline, then fields.
    Sub(Box<Pipeline>, Vec<String>),
}

type PResult<T> = Result<T, (usize, String)>;

enum ListEnd {
    Eof,
    Keyword,
    Else(usize, Vec<Token>),
}

pub(super) fn parse(items: Vec<Item>) -> PResult<Vec<Node>> {
    let mut it = items.into_iter().peekable();
    let (nodes, end) = parse_list(&mut it, 0)?;
    match end {
        ListEnd::Eof => Ok(nodes),
        ListEnd::Keyword => Err((0, "unexpected {{end}}".into())),
        ListEnd::Else(line, _) => Err((line, "unexpected {{else}}".into())),
    }
}

type Items = std::iter::Peekable<std::vec::IntoIter<Item>>;

fn parse_list(it: &mut Items, loops: usize) -> PResult<(Vec<Node>, ListEnd)> {
    let mut nodes = Vec::new();
    while let Some(item) = it.next() {
        let (line, tokens) = match item {
            Item::Text(t) => {
                nodes.push(Node::Text(t));
                continue;
            }
            Item::Action { line, tokens } => (line, tokens),
        };
        let keyword = match &tokens[0].kind {
            Tok::Ident(k) => k.as_str(),
            _ => "",
        };
        match keyword {
            "end" => {
                expect_alone(line, &tokens)?;
                return Ok((nodes, ListEnd::Keyword));
            }
            "else" => return Ok((nodes, ListEnd::Else(line, tokens[1..].to_vec()))),
            "if" => nodes.push(parse_if(it, line, &tokens[1..], loops)?),
            "range" => {
                let pipe = pipeline(line, &tokens[1..], true)?;
                let (body, end) = parse_list(it, loops + 1)?;
                let otherwise = match end {
                    ListEnd::Keyword => Vec::new(),
                    ListEnd::Else(l, rest) => {
                        if !rest.is_empty() {
                            return Err((l, "unexpected tokens after else in range".into()));
                        }
                        closed(parse_list(it, loops)?, l, "range")?
                    }
                    ListEnd::Eof => {
                        return Err((line, "unexpected EOF: {{range}} has no {{end}}".into()));
                    }
                };
                nodes.push(Node::Range {
                    pipe,
                    body,
                    otherwise,
                });
            }
            "with" => {
                let pipe = pipeline(line, &tokens[1..], true)?;
                let (body, end) = parse_list(it, loops)?;
                let otherwise = match end {
                    ListEnd::Keyword => Vec::new(),
                    ListEnd::Else(l, rest) => {
                        if !rest.is_empty() {
                            return Err((
                                l,
                                "else with an argument in {{with}} is not supported".into(),
                            ));
                        }
                        closed(parse_list(it, loops)?, l, "with")?
                    }
                    ListEnd::Eof => {
                        return Err((line, "unexpected EOF: {{with}} has no {{end}}".into()));
                    }
                };
                nodes.push(Node::With {
                    pipe,
                    body,
                    otherwise,
                });
            }
            "break" | "continue" => {
                expect_alone(line, &tokens)?;
                if loops == 0 {
                    return Err((line, format!("{{{{{keyword}}}}} outside {{{{range}}}}")));
                }
                nodes.push(if keyword == "break" {
                    Node::Break
                } else {
                    Node::Continue
                });
            }
            "define" | "template" | "block" => {
                return Err((
                    line,
                    format!("{{{{{keyword}}}}} is not supported in Tinkerbell templates"),
                ));
            }
            _ => nodes.push(Node::Action(pipeline(line, &tokens, true)?)),
        }
    }
    Ok((nodes, ListEnd::Eof))
}

fn closed(parsed: (Vec<Node>, ListEnd), line: usize, what: &str) -> PResult<Vec<Node>> {
    match parsed {
        (nodes, ListEnd::Keyword) => Ok(nodes),
        (_, ListEnd::Else(l, _)) => {
            Err((l, format!("more than one {{{{else}}}} in {{{{{what}}}}}")))
        }
        (_, ListEnd::Eof) => Err((
            line,
            format!("unexpected EOF: {{{{{what}}}}} has no {{{{end}}}}"),
        )),
    }
}

fn parse_if(it: &mut Items, line: usize, cond: &[Token], loops: usize) -> PResult<Node> {
    let mut branches = Vec::new();
    let mut pipe = pipeline(line, cond, true)?;
    loop {
        let (body, end) = parse_list(it, loops)?;
        branches.push((pipe, body));
        match end {
            ListEnd::Keyword => {
                return Ok(Node::If {
                    branches,
                    otherwise: Vec::new(),
                });
            }
            ListEnd::Eof => return Err((line, "unexpected EOF: {{if}} has no {{end}}".into())),
            ListEnd::Else(l, rest) => {
                if rest.is_empty() {
                    let otherwise = closed(parse_list(it, loops)?, l, "if")?;
                    return Ok(Node::If {
                        branches,
                        otherwise,
                    });
                }
                if !matches!(&rest[0].kind, Tok::Ident(k) if k == "if") {
                    return Err((l, "expected {{else}} or {{else if ...}}".into()));
                }
                pipe = pipeline(l, &rest[1..], true)?;
            }
        }
    }
}

fn expect_alone(line: usize, tokens: &[Token]) -> PResult<()> {
    if tokens.len() > 1 {
        return Err((line, "unexpected tokens after keyword".into()));
    }
    Ok(())
}

fn pipeline(line: usize, tokens: &[Token], allow_decl: bool) -> PResult<Pipeline> {
    let mut vars = Vec::new();
    let mut declare = false;
    let mut rest = tokens;
    // `$x :=`, `$x =`, `$i, $v :=`
    if allow_decl
        && let Some(pos) = tokens
            .iter()
            .position(|t| matches!(t.kind, Tok::Declare | Tok::Assign))
    {
        let head = &tokens[..pos];
        let is_decl_list = !head.is_empty()
            && head.iter().enumerate().all(|(i, t)| {
                if i % 2 == 0 {
                    matches!(t.kind, Tok::Var(_))
                } else {
                    t.kind == Tok::Comma
                }
            })
            && head.len() % 2 == 1;
        if is_decl_list {
            for t in head.iter().step_by(2) {
                if let Tok::Var(v) = &t.kind {
                    vars.push(v.clone());
                }
            }
            declare = tokens[pos].kind == Tok::Declare;
            rest = &tokens[pos + 1..];
        }
    }
    if rest.is_empty() {
        return Err((line, "missing value for command".into()));
    }
    let mut cmds = Vec::new();
    let mut i = 0;
    let mut args = Vec::new();
    while i < rest.len() {
        if rest[i].kind == Tok::Pipe {
            if args.is_empty() {
                return Err((line, "missing command before |".into()));
            }
            cmds.push(Command {
                args: std::mem::take(&mut args),
            });
            i += 1;
            continue;
        }
        let (arg, next) = operand(line, rest, i)?;
        args.push(arg);
        i = next;
    }
    if args.is_empty() {
        return Err((line, "missing command after |".into()));
    }
    cmds.push(Command { args });
    Ok(Pipeline {
        line,
        vars,
        declare,
        cmds,
    })
}

/// Reads one operand starting at `i`; returns it and the next index.
fn operand(line: usize, toks: &[Token], i: usize) -> PResult<(Arg, usize)> {
    let mut j = i + 1;
    let arg = match &toks[i].kind {
        Tok::Dot => Arg::Field(Vec::new()),
        Tok::Field(f) => {
            let mut fields = vec![f.clone()];
            j = chain(toks, j, &mut fields);
            Arg::Field(fields)
        }
        Tok::Var(v) => {
            let mut fields = Vec::new();
            j = chain(toks, j, &mut fields);
            Arg::Var(v.clone(), fields)
        }
        Tok::Ident(name) => match name.as_str() {
            "true" => Arg::Bool(true),
            "false" => Arg::Bool(false),
            "nil" => Arg::Nil,
            _ => Arg::Func(name.clone()),
        },
        Tok::Str(s) => Arg::Str(s.clone()),
        Tok::Int(n) => Arg::Int(*n),
        Tok::Float(f) => Arg::Float(*f),
        Tok::LParen => {
            let mut depth = 1;
            let mut k = i + 1;
            while k < toks.len() {
                match toks[k].kind {
                    Tok::LParen => depth += 1,
                    Tok::RParen => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    _ => {}
                }
                k += 1;
            }
            if k >= toks.len() {
                return Err((line, "unclosed left paren".into()));
            }
            let inner = pipeline(line, &toks[i + 1..k], false)?;
            let mut fields = Vec::new();
            j = chain(toks, k + 1, &mut fields);
            Arg::Sub(Box::new(inner), fields)
        }
        Tok::RParen => return Err((line, "unexpected right paren".into())),
        Tok::Comma | Tok::Declare | Tok::Assign | Tok::Pipe => {
            return Err((line, "unexpected punctuation in command".into()));
        }
    };
    Ok((arg, j))
}

/// Collects `.Field` tokens directly attached (no space) after an operand.
fn chain(toks: &[Token], mut j: usize, fields: &mut Vec<String>) -> usize {
    while let Some(t) = toks.get(j) {
        match &t.kind {
            Tok::Field(f) if !t.spaced => {
                fields.push(f.clone());
                j += 1;
            }
            _ => break,
        }
    }
    j
}
