//! Splits template text into text and action items, and actions into tokens.

use super::Pos;

/// A piece of the template: literal text, or an action's tokens.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Item {
    /// Literal text, and where it starts (for an error that names it).
    Text(String, Pos),
    Action {
        pos: Pos,
        tokens: Vec<Token>,
    },
}

/// A token inside `{{ }}`.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Token {
    pub kind: Tok,
    /// Whether whitespace precedes it (`.a .b` are two arguments, `.a.b` one chain).
    pub spaced: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    LParen,
    RParen,
    Pipe,
    Comma,
    Declare,
    Assign,
    /// `.` alone.
    Dot,
    /// `.Name`.
    Field(String),
    /// `$` or `$name`.
    Var(String),
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
}

type LexResult<T> = Result<T, (Pos, String)>;

pub(super) fn split(text: &str) -> LexResult<Vec<Item>> {
    let mut items = Vec::new();
    let mut rest = text;
    let mut line = 1usize;
    // Characters since the last newline before `rest`, kept as the text is
    // consumed (never searched backwards: a long line of actions stays linear).
    let mut column = 0usize;
    let mut pending_trim = false;
    while !rest.is_empty() {
        let Some(open) = rest.find("{{") else {
            let at = Pos {
                line,
                column: Some(column + 1),
            };
            push_text(&mut items, rest, pending_trim, false, at);
            break;
        };
        let (before, after) = rest.split_at(open);
        let mut inner = &after[2..];
        let trim_left =
            inner.starts_with("- ") || inner.starts_with("-\t") || inner.starts_with("-\n");
        if trim_left {
            inner = &inner[1..];
        }
        let at = Pos {
            line,
            column: Some(column + 1),
        };
        push_text(&mut items, before, pending_trim, trim_left, at);
        line += before.matches('\n').count();
        advance(&mut column, before);
        let action = Pos {
            line,
            column: Some(column + 1),
        };
        // Find the closing delimiter outside string literals.
        let close = find_close(inner).ok_or((action, "unclosed action: missing }}".to_string()))?;
        let mut body = &inner[..close];
        let trim_right = body.ends_with(" -") || body.ends_with("\t-") || body.ends_with("\n-");
        if trim_right {
            body = &body[..body.len() - 1];
        }
        line += inner[..close].matches('\n').count();
        let next = &inner[close + 2..];
        advance(&mut column, &after[..after.len() - next.len()]);
        rest = next;
        pending_trim = trim_right;
        let trimmed = body.trim();
        if trimmed.starts_with("/*") {
            if !trimmed.ends_with("*/") {
                return Err((action, "unclosed comment".into()));
            }
            continue;
        }
        let tokens = tokenize(body).map_err(|e| (action, e))?;
        if tokens.is_empty() {
            return Err((action, "missing value for command".into()));
        }
        items.push(Item::Action {
            pos: action,
            tokens,
        });
    }
    Ok(items)
}

/// Moves `column` over `seg`.
fn advance(column: &mut usize, seg: &str) {
    match seg.rfind('\n') {
        Some(i) => *column = seg[i + 1..].chars().count(),
        None => *column += seg.chars().count(),
    }
}

fn push_text(items: &mut Vec<Item>, text: &str, trim_start: bool, trim_end: bool, at: Pos) {
    let mut t = text;
    if trim_start {
        t = t.trim_start();
    }
    if trim_end {
        t = t.trim_end();
    }
    if !t.is_empty() {
        items.push(Item::Text(t.to_string(), at));
    }
}

fn find_close(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    if b[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'`' => {
                i += 1;
                while i < b.len() && b[i] != b'`' {
                    i += 1;
                }
            }
            b'}' if b.get(i + 1) == Some(&b'}') => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

fn tokenize(s: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut spaced = true;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            spaced = true;
            i += 1;
            continue;
        }
        let start = i;
        let kind = match c {
            '(' => {
                i += 1;
                Tok::LParen
            }
            ')' => {
                i += 1;
                Tok::RParen
            }
            '|' => {
                i += 1;
                Tok::Pipe
            }
            ',' => {
                i += 1;
                Tok::Comma
            }
            ':' if chars.get(i + 1) == Some(&'=') => {
                i += 2;
                Tok::Declare
            }
            '=' => {
                i += 1;
                Tok::Assign
            }
            '.' if chars.get(i + 1).is_some_and(|c| is_ident_start(*c)) => {
                i += 1;
                let name = take_ident(&chars, &mut i);
                Tok::Field(name)
            }
            '.' if chars.get(i + 1).is_none_or(|c| !c.is_ascii_digit()) => {
                i += 1;
                Tok::Dot
            }
            '$' => {
                i += 1;
                let name = take_ident(&chars, &mut i);
                Tok::Var(name)
            }
            '"' => {
                i += 1;
                let mut v = String::new();
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err("unterminated quoted string".into());
                    };
                    i += 1;
                    match c {
                        '"' => break,
                        '\\' => {
                            let e = *chars.get(i).ok_or("unterminated quoted string")?;
                            i += 1;
                            v.push(match e {
                                'n' => '\n',
                                't' => '\t',
                                'r' => '\r',
                                '\\' => '\\',
                                '"' => '"',
                                '\'' => '\'',
                                '0' => '\0',
                                other => return Err(format!("unknown escape sequence \\{other}")),
                            });
                        }
                        c => v.push(c),
                    }
                }
                Tok::Str(v)
            }
            '`' => {
                i += 1;
                let mut v = String::new();
                loop {
                    let Some(&c) = chars.get(i) else {
                        return Err("unterminated raw string".into());
                    };
                    i += 1;
                    if c == '`' {
                        break;
                    }
                    v.push(c);
                }
                Tok::Str(v)
            }
            '\'' => {
                let c = *chars.get(i + 1).ok_or("unterminated character constant")?;
                if chars.get(i + 2) != Some(&'\'') {
                    return Err("malformed character constant".into());
                }
                i += 3;
                Tok::Int(c as i64)
            }
            c if c.is_ascii_digit()
                || ((c == '-' || c == '+' || c == '.')
                    && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_')
                {
                    i += 1;
                }
                let text: String = chars[start..i].iter().filter(|c| **c != '_').collect();
                parse_number(&text).ok_or_else(|| format!("bad number syntax: {text:?}"))?
            }
            c if is_ident_start(c) => Tok::Ident(take_ident(&chars, &mut i)),
            other => return Err(format!("unexpected {other:?} in command")),
        };
        out.push(Token { kind, spaced });
        spaced = false;
    }
    Ok(out)
}

fn parse_number(text: &str) -> Option<Tok> {
    let (neg, body) = match text.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let int = if let Some(h) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()
    } else if let Some(o) = body.strip_prefix("0o").or_else(|| body.strip_prefix("0O")) {
        i64::from_str_radix(o, 8).ok()
    } else if let Some(b) = body.strip_prefix("0b").or_else(|| body.strip_prefix("0B")) {
        i64::from_str_radix(b, 2).ok()
    } else if body.len() > 1 && body.starts_with('0') && body.bytes().all(|b| b.is_ascii_digit()) {
        i64::from_str_radix(&body[1..], 8).ok()
    } else {
        body.parse::<i64>().ok()
    };
    if let Some(v) = int {
        return Some(Tok::Int(if neg { -v } else { v }));
    }
    text.parse::<f64>().ok().map(Tok::Float)
}

fn is_ident_start(c: char) -> bool {
    c.is_alphabetic() || c == '_'
}

fn take_ident(chars: &[char], i: &mut usize) -> String {
    let start = *i;
    while *i < chars.len() && (chars[*i].is_alphanumeric() || chars[*i] == '_') {
        *i += 1;
    }
    chars[start..*i].iter().collect()
}
