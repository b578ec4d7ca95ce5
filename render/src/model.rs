//! A document as the renderers see it: lines (Quill's blocks: a line's formatting sits on its
//! `\n`) of styled runs and embeds, read from the document's delta.

use tandem_engine::{Attributes, Delta, Insert, Op, Value};

/// An sRGB colour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    /// `#rgb`, `#rrggbb`, `rgb(r, g, b)` or one of the CSS basic colour names; `None` for
    /// anything else (the attribute is then ignored).
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if let Some(hex) = s.strip_prefix('#') {
            let digit = |i: usize| u8::from_str_radix(hex.get(i..i + 1)?, 16).ok();
            return match hex.len() {
                3 => Some(Self(digit(0)? * 17, digit(1)? * 17, digit(2)? * 17)),
                6 => {
                    let byte = |i: usize| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok();
                    Some(Self(byte(0)?, byte(2)?, byte(4)?))
                }
                _ => None,
            };
        }
        if let Some(args) = s.strip_prefix("rgb(").and_then(|r| r.strip_suffix(')')) {
            let v: Vec<u8> = args.split(',').map(|p| p.trim().parse().ok()).collect::<Option<_>>()?;
            return (v.len() == 3).then(|| Self(v[0], v[1], v[2]));
        }
        let named = match s.to_ascii_lowercase().as_str() {
            "black" => Self(0, 0, 0),
            "white" => Self(255, 255, 255),
            "red" => Self(255, 0, 0),
            "green" => Self(0, 128, 0),
            "blue" => Self(0, 0, 255),
            "yellow" => Self(255, 255, 0),
            "orange" => Self(255, 165, 0),
            "purple" => Self(128, 0, 128),
            "gray" | "grey" => Self(128, 128, 128),
            _ => return None,
        };
        Some(named)
    }

    /// `rrggbb`.
    pub fn hex(self) -> String {
        format!("{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }
}

/// Subscript or superscript.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Script {
    /// `script: "sub"`.
    Sub,
    /// `script: "super"`.
    Super,
}

/// A run's inline formatting.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Style {
    /// `bold`.
    pub bold: bool,
    /// `italic`.
    pub italic: bool,
    /// `underline`.
    pub underline: bool,
    /// `strike`.
    pub strike: bool,
    /// `code` (inline code).
    pub code: bool,
    /// `link`: only `http`, `https` and `mailto` targets are kept.
    pub link: Option<String>,
    /// `color`.
    pub color: Option<Rgb>,
    /// `background`.
    pub background: Option<Rgb>,
    /// `script`.
    pub script: Option<Script>,
}

impl Style {
    fn of(a: &Attributes) -> Self {
        let on = |k: &str| matches!(a.get(k), Some(Value::Bool(true)));
        let string = |k: &str| match a.get(k) {
            Some(Value::String(s)) => Some(s.as_str()),
            _ => None,
        };
        Self {
            bold: on("bold"),
            italic: on("italic"),
            underline: on("underline"),
            strike: on("strike"),
            code: on("code"),
            link: string("link").filter(|l| safe_link(l)).map(str::to_owned),
            color: string("color").and_then(Rgb::parse),
            background: string("background").and_then(Rgb::parse),
            script: match string("script") {
                Some("sub") => Some(Script::Sub),
                Some("super") => Some(Script::Super),
                _ => None,
            },
        }
    }
}

/// Links that may go into an exported file: no `javascript:`, `file:` or the like.
pub fn safe_link(url: &str) -> bool {
    let lower = url.trim_start().to_ascii_lowercase();
    (lower.starts_with("https://") || lower.starts_with("http://") || lower.starts_with("mailto:"))
        && url.len() <= 2048
        && !url.chars().any(char::is_control)
}

/// A piece of a line.
#[derive(Clone, Debug, PartialEq)]
pub enum Inline {
    /// Text in one style (no `\n`).
    Text(String, Style),
    /// `{"image": url}`.
    Image {
        /// The image's URL as the document has it.
        url: String,
        /// A link around it, if any.
        link: Option<String>,
    },
    /// Any other embed (`video`, `formula`, ...): shown as its kind and value.
    Other(String),
}

/// What kind of block a line is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A plain paragraph.
    Paragraph,
    /// `header: 1..=6`.
    Heading(u8),
    /// `list`: `ordered`, `bullet`, `checked`, `unchecked`.
    List(ListKind),
    /// `blockquote`.
    Quote,
    /// `code-block`.
    Code,
}

/// A list item's kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ListKind {
    /// Numbered.
    Ordered,
    /// Bulleted.
    Bullet,
    /// A checklist item, done or not.
    Check(bool),
}

/// `align`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Align {
    /// The default.
    #[default]
    Left,
    /// `center`.
    Center,
    /// `right`.
    Right,
    /// `justify`.
    Justify,
}

/// One line: a block and what is in it.
#[derive(Clone, Debug, PartialEq)]
pub struct Line {
    /// Its kind.
    pub kind: Kind,
    /// `indent` (0-8): list nesting, or a paragraph's indentation.
    pub indent: u8,
    /// `align`.
    pub align: Align,
    /// `direction: "rtl"`.
    pub rtl: bool,
    /// The runs and embeds, in order.
    pub inlines: Vec<Inline>,
}

impl Line {
    fn new(a: &Attributes, inlines: Vec<Inline>) -> Self {
        let number = |k: &str| match a.get(k) {
            Some(Value::Number(n)) if n.is_finite() => Some(*n),
            _ => None,
        };
        let string = |k: &str| match a.get(k) {
            Some(Value::String(s)) => Some(s.as_str()),
            _ => None,
        };
        let kind = if let Some(h) = number("header").filter(|h| (1.0..=6.0).contains(h)) {
            Kind::Heading(h as u8)
        } else if let Some(l) = string("list") {
            Kind::List(match l {
                "ordered" => ListKind::Ordered,
                "checked" => ListKind::Check(true),
                "unchecked" => ListKind::Check(false),
                _ => ListKind::Bullet,
            })
        } else if a.get("code-block").is_some_and(|v| !matches!(v, Value::Null | Value::Bool(false))) {
            Kind::Code
        } else if matches!(a.get("blockquote"), Some(Value::Bool(true))) {
            Kind::Quote
        } else {
            Kind::Paragraph
        };
        Self {
            kind,
            indent: number("indent").map_or(0, |n| n.clamp(0.0, 8.0) as u8),
            align: match string("align") {
                Some("center") => Align::Center,
                Some("right") => Align::Right,
                Some("justify") => Align::Justify,
                _ => Align::Left,
            },
            rtl: string("direction") == Some("rtl"),
            inlines,
        }
    }

    /// The line's text (embeds left out).
    pub fn text(&self) -> String {
        self.inlines
            .iter()
            .filter_map(|i| match i {
                Inline::Text(t, _) => Some(t.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// The lines of a document's delta (a delta of inserts). A last line without its `\n` is
/// kept as a paragraph.
pub fn lines(doc: &Delta) -> Vec<Line> {
    let mut out = Vec::new();
    let mut current: Vec<Inline> = Vec::new();
    for op in doc.ops() {
        let Op::Insert { insert, attributes } = op else { continue };
        match insert {
            Insert::Text(text) => {
                let mut rest = text.as_str();
                while let Some(nl) = rest.find('\n') {
                    if nl > 0 {
                        current.push(Inline::Text(rest[..nl].to_owned(), Style::of(attributes)));
                    }
                    out.push(Line::new(attributes, std::mem::take(&mut current)));
                    rest = &rest[nl + 1..];
                }
                if !rest.is_empty() {
                    current.push(Inline::Text(rest.to_owned(), Style::of(attributes)));
                }
            }
            Insert::Embed(embed) => {
                let obj = embed.as_object();
                let inline = match obj.get("image") {
                    Some(Value::String(url)) => Inline::Image { url: url.clone(), link: Style::of(attributes).link },
                    _ => Inline::Other(
                        obj.iter()
                            .next()
                            .map(|(k, v)| match v {
                                Value::String(s) => format!("[{k}: {s}]"),
                                _ => format!("[{k}]"),
                            })
                            .unwrap_or_else(|| "[embed]".into()),
                    ),
                };
                current.push(inline);
            }
        }
    }
    if !current.is_empty() {
        out.push(Line::new(&Attributes::default(), current));
    }
    out
}

/// The URLs of the document's images, each once, in order of first appearance.
pub fn image_urls(lines: &[Line]) -> Vec<String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for line in lines {
        for inline in &line.inlines {
            if let Inline::Image { url, .. } = inline
                && seen.insert(url.as_str())
            {
                out.push(url.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(json: &str) -> Delta {
        serde_json::from_str(&format!("{{\"ops\": {json}}}")).unwrap()
    }

    #[test]
    fn lines_carry_their_block_and_runs_their_style() {
        let d = doc(r##"[{"insert":"Title"},{"insert":"\n","attributes":{"header":1}},
                {"insert":"bold","attributes":{"bold":true,"color":"#e60000"}},{"insert":" plain\n"},
                {"insert":"item"},{"insert":"\n","attributes":{"list":"ordered","indent":1}},
                {"insert":{"image":"/api/uploads/u1"}},{"insert":"\n","attributes":{"align":"center"}},
                {"insert":"x","attributes":{"link":"javascript:alert(1)"}},{"insert":"\ntail"}]"##);
        let l = lines(&d);
        assert_eq!(l.len(), 6);
        assert_eq!(l[0].kind, Kind::Heading(1));
        assert_eq!(l[0].text(), "Title");
        let Inline::Text(t, s) = &l[1].inlines[0] else { panic!() };
        assert_eq!((t.as_str(), s.bold, s.color), ("bold", true, Some(Rgb(0xe6, 0, 0))));
        assert_eq!((l[2].kind, l[2].indent), (Kind::List(ListKind::Ordered), 1));
        assert_eq!(l[3].align, Align::Center);
        assert_eq!(image_urls(&l), vec!["/api/uploads/u1".to_owned()]);
        let Inline::Text(_, s) = &l[4].inlines[0] else { panic!() };
        assert_eq!(s.link, None, "a javascript: link is dropped");
        assert_eq!(l[5].text(), "tail");
    }

    #[test]
    fn colours_parse() {
        assert_eq!(Rgb::parse("#fff"), Some(Rgb(255, 255, 255)));
        assert_eq!(Rgb::parse("rgb(1, 2, 3)"), Some(Rgb(1, 2, 3)));
        assert_eq!(Rgb::parse("Red"), Some(Rgb(255, 0, 0)));
        for bad in ["#ggg", "#12345", "rgb(1,2)", "rgb(1,2,300)", "url(x)", "#é1"] {
            assert_eq!(Rgb::parse(bad), None, "{bad}");
        }
    }
}
