//! Finds where a field path (`train.optimizer.lr`, `model.decoder[3]`) is written in RON text.
//!
//! serde checks types, but value and shape checks happen after parsing, on plain data that has
//! forgotten its positions. This scanner walks the RON source once and records the position of
//! every value by its path, so those checks can still point at `file:line:column`.
//! Enum variants are transparent: in `optimizer: Adam(lr: 1e-4)` the `lr` is `train.optimizer.lr`.
//! Positional items of a tuple variant are numbered like list items: `Residual([...])` → `[0]`.

use std::collections::HashMap;

/// Path → (line, column), both 1-based.
#[derive(Debug, Default)]
pub struct Locations {
    map: HashMap<String, (usize, usize)>,
}

impl Locations {
    pub fn scan(src: &str) -> Locations {
        let tokens = tokenize(src);
        let mut loc = Locations::default();
        let mut p = Parser { tokens: &tokens, pos: 0, out: &mut loc.map };
        p.value(String::new());
        loc
    }

    /// The position of `path`, or of its nearest written ancestor (a field left to its default
    /// is reported at the section that omits it).
    pub fn find(&self, path: &str) -> Option<(usize, usize)> {
        let mut p = path.to_string();
        loop {
            if let Some(&pos) = self.map.get(&p) {
                return Some(pos);
            }
            let cut = p.rfind(['.', '['])?;
            p.truncate(cut);
        }
    }

    /// Whether `path` itself is written in this file.
    pub fn contains(&self, path: &str) -> bool {
        self.map.contains_key(path)
    }

    /// The deepest path whose value starts at or before (line, col): used to name the field of a
    /// serde error, which only knows its position.
    pub fn path_at(&self, line: usize, col: usize) -> Option<String> {
        self.map
            .iter()
            .filter(|(_, &pos)| pos <= (line, col))
            .max_by_key(|(path, &pos)| (pos, path.len()))
            .map(|(path, _)| path.clone())
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Open(char),
    Close(char),
    Comma,
    Colon,
    Atom, // number, string, char
}

fn tokenize(src: &str) -> Vec<(Tok, usize, usize)> {
    let chars: Vec<char> = src.chars().collect();
    let (mut i, mut line, mut col) = (0usize, 1usize, 1usize);
    let mut out = Vec::new();
    let advance = |i: &mut usize, line: &mut usize, col: &mut usize, chars: &[char]| {
        if chars[*i] == '\n' {
            *line += 1;
            *col = 1;
        } else {
            *col += 1;
        }
        *i += 1;
    };
    while i < chars.len() {
        let c = chars[i];
        let (l0, c0) = (line, col);
        if c.is_whitespace() {
            advance(&mut i, &mut line, &mut col, &chars);
        } else if c == '/' && chars.get(i + 1) == Some(&'/') || c == '#' && chars.get(i + 1) == Some(&'!') {
            while i < chars.len() && chars[i] != '\n' {
                advance(&mut i, &mut line, &mut col, &chars);
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            while i < chars.len() && !(chars[i] == '*' && chars.get(i + 1) == Some(&'/')) {
                advance(&mut i, &mut line, &mut col, &chars);
            }
            for _ in 0..2 {
                if i < chars.len() {
                    advance(&mut i, &mut line, &mut col, &chars);
                }
            }
        } else if c == '"' || c == '\'' {
            advance(&mut i, &mut line, &mut col, &chars);
            while i < chars.len() && chars[i] != c {
                if chars[i] == '\\' {
                    advance(&mut i, &mut line, &mut col, &chars);
                }
                if i < chars.len() {
                    advance(&mut i, &mut line, &mut col, &chars);
                }
            }
            if i < chars.len() {
                advance(&mut i, &mut line, &mut col, &chars);
            }
            out.push((Tok::Atom, l0, c0));
        } else if "([{".contains(c) {
            advance(&mut i, &mut line, &mut col, &chars);
            out.push((Tok::Open(c), l0, c0));
        } else if ")]}".contains(c) {
            advance(&mut i, &mut line, &mut col, &chars);
            out.push((Tok::Close(c), l0, c0));
        } else if c == ',' {
            advance(&mut i, &mut line, &mut col, &chars);
            out.push((Tok::Comma, l0, c0));
        } else if c == ':' {
            advance(&mut i, &mut line, &mut col, &chars);
            out.push((Tok::Colon, l0, c0));
        } else if c.is_alphabetic() || c == '_' {
            let mut s = String::new();
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                s.push(chars[i]);
                advance(&mut i, &mut line, &mut col, &chars);
            }
            out.push((Tok::Ident(s), l0, c0));
        } else {
            // numbers and anything else: one atom up to a delimiter
            while i < chars.len() && !chars[i].is_whitespace() && !"()[]{},:".contains(chars[i]) {
                advance(&mut i, &mut line, &mut col, &chars);
            }
            out.push((Tok::Atom, l0, c0));
        }
    }
    out
}

struct Parser<'a> {
    tokens: &'a [(Tok, usize, usize)],
    pos: usize,
    out: &'a mut HashMap<String, (usize, usize)>,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.0)
    }

    fn value(&mut self, path: String) {
        let Some((tok, line, col)) = self.tokens.get(self.pos).cloned() else { return };
        self.out.entry(path.clone()).or_insert((line, col));
        match tok {
            Tok::Ident(_) => {
                self.pos += 1;
                if let Some(Tok::Open(c)) = self.peek().cloned() {
                    self.pos += 1;
                    self.group(&path, c);
                }
            }
            Tok::Open(c) => {
                self.pos += 1;
                self.group(&path, c);
            }
            _ => self.pos += 1,
        }
    }

    /// Items up to the matching close: `name: value` fields or positional values.
    fn group(&mut self, path: &str, open: char) {
        let mut index = 0;
        loop {
            match self.peek().cloned() {
                None => return,
                Some(Tok::Close(_)) => {
                    self.pos += 1;
                    return;
                }
                Some(Tok::Comma) => self.pos += 1,
                Some(Tok::Ident(name)) if self.tokens.get(self.pos + 1).map(|t| &t.0) == Some(&Tok::Colon) && open != '[' => {
                    self.pos += 2;
                    let child = if path.is_empty() { name } else { format!("{path}.{name}") };
                    self.value(child);
                }
                Some(_) => {
                    self.value(format!("{path}[{index}]"));
                    index += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_fields_list_items_and_variant_fields() {
        let src = "Experiment(\n  name: \"x\", // c\n  model: (\n    decoder: [Dense(out: 4),\n      Relu],\n  ),\n  train: (optimizer: Adam(lr: -1.0)),\n)";
        let loc = Locations::scan(src);
        assert_eq!(loc.find("name"), Some((2, 9)));
        assert_eq!(loc.find("model.decoder[0]"), Some((4, 15)));
        assert_eq!(loc.find("model.decoder[1]"), Some((5, 7)));
        assert_eq!(loc.find("model.decoder[0].out"), Some((4, 26)));
        assert_eq!(loc.find("train.optimizer.lr"), Some((7, 31)));
        // unwritten fields fall back to the nearest ancestor
        assert_eq!(loc.find("train.steps"), Some((7, 10)));
        assert_eq!(loc.path_at(7, 33).as_deref(), Some("train.optimizer.lr"));
    }
}
