//! Builds the node tree from lexed items.

use super::lex::{Item, Tok, Token};
use super::{Limit, Pos};

#[derive(Debug, Clone)]
pub(super) enum Node {
    Text(String, Pos),
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
    pub pos: Pos,
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

/// Where, why, and which limit (if one) a parse failed.
pub(super) type ParseError = (Pos, String, Option<Limit>);

type PResult<T> = Result<T, ParseError>;

enum ListEnd {
    Eof,
    Keyword(Pos),
    Else(Pos, Vec<Token>),
}

/// Where the parser is: inside how many loops (for `break`), how deep, and how
/// deep it may go. Nesting is bounded because both the parser and the executor
/// recurse on it: a template of ten thousand `{{ if }}`s must be an error, not a
/// stack overflow that takes the process down.
#[derive(Clone, Copy)]
struct Nest {
    loops: usize,
    depth: usize,
    max: usize,
}

impl Nest {
    fn deeper(self, pos: Pos, looping: bool) -> PResult<Nest> {
        if self.depth >= self.max {
            return Err(depth_error(pos, self.max));
        }
        Ok(Nest {
            loops: self.loops + usize::from(looping),
            depth: self.depth + 1,
            max: self.max,
        })
    }
}

fn depth_error(pos: Pos, max: usize) -> ParseError {
    (
        pos,
        format!("nesting exceeds the limit of {max} levels"),
        Some(Limit::Depth),
    )
}

fn err<T>(pos: Pos, reason: impl Into<String>) -> PResult<T> {
    Err((pos, reason.into(), None))
}

pub(super) fn parse(items: Vec<Item>, max_depth: usize) -> PResult<Vec<Node>> {
    let mut it = items.into_iter().peekable();
    let nest = Nest {
        loops: 0,
        depth: 0,
        max: max_depth,
    };
    let (nodes, end) = parse_list(&mut it, nest)?;
    match end {
        ListEnd::Eof => Ok(nodes),
        ListEnd::Keyword(pos) => err(pos, "unexpected {{end}}"),
        ListEnd::Else(pos, _) => err(pos, "unexpected {{else}}"),
    }
}

type Items = std::iter::Peekable<std::vec::IntoIter<Item>>;

fn parse_list(it: &mut Items, nest: Nest) -> PResult<(Vec<Node>, ListEnd)> {
    let mut nodes = Vec::new();
    while let Some(item) = it.next() {
        let (line, tokens) = match item {
            Item::Text(t, pos) => {
                nodes.push(Node::Text(t, pos));
                continue;
            }
            Item::Action { pos, tokens } => (pos, tokens),
        };
        let keyword = match &tokens[0].kind {
            Tok::Ident(k) => k.as_str(),
            _ => "",
        };
        match keyword {
            "end" => {
                expect_alone(line, &tokens)?;
                return Ok((nodes, ListEnd::Keyword(line)));
            }
            "else" => return Ok((nodes, ListEnd::Else(line, tokens[1..].to_vec()))),
            "if" => nodes.push(parse_if(it, line, &tokens[1..], nest.deeper(line, false)?)?),
            "range" => {
                let inner = nest.deeper(line, true)?;
                let pipe = pipeline(line, &tokens[1..], true, inner)?;
                let (body, end) = parse_list(it, inner)?;
                let otherwise = match end {
                    ListEnd::Keyword(_) => Vec::new(),
                    ListEnd::Else(l, rest) => {
                        if !rest.is_empty() {
                            return err(l, "unexpected tokens after else in range");
                        }
                        let outer = nest.deeper(line, false)?;
                        closed(parse_list(it, outer)?, l, "range")?
                    }
                    ListEnd::Eof => {
                        return err(line, "unexpected EOF: {{range}} has no {{end}}");
                    }
                };
                nodes.push(Node::Range {
                    pipe,
                    body,
                    otherwise,
                });
            }
            "with" => {
                let inner = nest.deeper(line, false)?;
                let pipe = pipeline(line, &tokens[1..], true, inner)?;
                let (body, end) = parse_list(it, inner)?;
                let otherwise = match end {
                    ListEnd::Keyword(_) => Vec::new(),
                    ListEnd::Else(l, rest) => {
                        if !rest.is_empty() {
                            return err(l, "else with an argument in {{with}} is not supported");
                        }
                        closed(parse_list(it, inner)?, l, "with")?
                    }
                    ListEnd::Eof => {
                        return err(line, "unexpected EOF: {{with}} has no {{end}}");
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
                if nest.loops == 0 {
                    return err(line, format!("{{{{{keyword}}}}} outside {{{{range}}}}"));
                }
                nodes.push(if keyword == "break" {
                    Node::Break
                } else {
                    Node::Continue
                });
            }
            "define" | "template" | "block" => {
                return err(
                    line,
                    format!("{{{{{keyword}}}}} is not supported in Tinkerbell templates"),
                );
            }
            _ => nodes.push(Node::Action(pipeline(line, &tokens, true, nest)?)),
        }
    }
    Ok((nodes, ListEnd::Eof))
}

fn closed(parsed: (Vec<Node>, ListEnd), line: Pos, what: &str) -> PResult<Vec<Node>> {
    match parsed {
        (nodes, ListEnd::Keyword(_)) => Ok(nodes),
        (_, ListEnd::Else(l, _)) => err(l, format!("more than one {{{{else}}}} in {{{{{what}}}}}")),
        (_, ListEnd::Eof) => err(
            line,
            format!("unexpected EOF: {{{{{what}}}}} has no {{{{end}}}}"),
        ),
    }
}

fn parse_if(it: &mut Items, line: Pos, cond: &[Token], nest: Nest) -> PResult<Node> {
    let mut branches = Vec::new();
    let mut pipe = pipeline(line, cond, true, nest)?;
    loop {
        let (body, end) = parse_list(it, nest)?;
        branches.push((pipe, body));
        match end {
            ListEnd::Keyword(_) => {
                return Ok(Node::If {
                    branches,
                    otherwise: Vec::new(),
                });
            }
            ListEnd::Eof => return err(line, "unexpected EOF: {{if}} has no {{end}}"),
            ListEnd::Else(l, rest) => {
                if rest.is_empty() {
                    let otherwise = closed(parse_list(it, nest)?, l, "if")?;
                    return Ok(Node::If {
                        branches,
                        otherwise,
                    });
                }
                if !matches!(&rest[0].kind, Tok::Ident(k) if k == "if") {
                    return err(l, "expected {{else}} or {{else if ...}}");
                }
                pipe = pipeline(l, &rest[1..], true, nest)?;
            }
        }
    }
}

fn expect_alone(line: Pos, tokens: &[Token]) -> PResult<()> {
    if tokens.len() > 1 {
        return err(line, "unexpected tokens after keyword");
    }
    Ok(())
}

fn pipeline(line: Pos, tokens: &[Token], allow_decl: bool, nest: Nest) -> PResult<Pipeline> {
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
        return err(line, "missing value for command");
    }
    let mut cmds = Vec::new();
    let mut i = 0;
    let mut args = Vec::new();
    while i < rest.len() {
        if rest[i].kind == Tok::Pipe {
            if args.is_empty() {
                return err(line, "missing command before |");
            }
            cmds.push(Command {
                args: std::mem::take(&mut args),
            });
            i += 1;
            continue;
        }
        let (arg, next) = operand(line, rest, i, nest)?;
        args.push(arg);
        i = next;
    }
    if args.is_empty() {
        return err(line, "missing command after |");
    }
    cmds.push(Command { args });
    Ok(Pipeline {
        pos: line,
        vars,
        declare,
        cmds,
    })
}

/// Reads one operand starting at `i`; returns it and the next index.
fn operand(line: Pos, toks: &[Token], i: usize, nest: Nest) -> PResult<(Arg, usize)> {
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
                return err(line, "unclosed left paren");
            }
            let inner = pipeline(line, &toks[i + 1..k], false, nest.deeper(line, false)?)?;
            let mut fields = Vec::new();
            j = chain(toks, k + 1, &mut fields);
            Arg::Sub(Box::new(inner), fields)
        }
        Tok::RParen => return err(line, "unexpected right paren"),
        Tok::Comma | Tok::Declare | Tok::Assign | Tok::Pipe => {
            return err(line, "unexpected punctuation in command");
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
