//! What plans answer: the JSON between the begin/end markers, Get-VM's state as text, and the
//! KVP guest exchange items (CIM-XML) the beacon is read from.
//!
//! Everything here reads text another machine wrote: it is refused, never trusted, when it is
//! not exactly the shape a plan writes (unknown fields, a number where text is expected, a
//! number out of range). Errors quote only a short excerpt of the text.

use serde::{Deserialize, Deserializer, Serialize};

/// How many characters of a refused text an error quotes.
const EXCERPT_CHARS: usize = 60;

/// The class of a KVP guest exchange item.
const KVP_CLASS: &str = "Msvm_KvpExchangeDataItem";

/// An answer that is not what its plan writes.
#[derive(Debug, thiserror::Error)]
pub enum AnswerError {
    /// The JSON is malformed or not the action's shape.
    #[error(
        "the {action} plan answered something other than its JSON ({source}); \
         the answer begins `{excerpt}`: check that the host runs this slipwayd's plans"
    )]
    ReadAnswer {
        /// The plan's action.
        action: String,
        /// The answer's first characters.
        excerpt: String,
        /// What serde_json found.
        #[source]
        source: serde_json::Error,
    },
    /// A KVP item is not the CIM-XML of a `Msvm_KvpExchangeDataItem`.
    #[error("a KVP guest exchange item is not the CIM-XML expected: {what} at `{excerpt}`")]
    ReadKvpItem {
        /// What was wrong.
        what: String,
        /// The text where it was found.
        excerpt: String,
    },
}

/// The first [`EXCERPT_CHARS`] characters of `text`, control characters shown as `?`.
fn excerpt(text: &str) -> String {
    text.chars()
        .take(EXCERPT_CHARS)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

/// Reads a plan's answer (the JSON between the markers) as `T`, the action's answer type.
pub fn answer<T: serde::de::DeserializeOwned>(action: &str, json: &str) -> Result<T, AnswerError> {
    serde_json::from_str(json).map_err(|source| AnswerError::ReadAnswer {
        action: action.to_owned(),
        excerpt: excerpt(json.trim_start()),
        source,
    })
}

/// `create-vm` and `os-disk`: whether this run made the VM or disk (false: it was there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Created {
    /// Made by this run (`create-vm`: also when it removed a VM a killed run left unfinished
    /// and made it again).
    pub created: bool,
    /// `create-vm` on a finished VM that was there: the parameters whose values the VM does not
    /// have (`MemoryBytes`, `Processors`, `SwitchName`, `MacAddress`, `VlanId`,
    /// `SecureBootTemplate`); nothing was changed. Empty otherwise (`os-disk` never writes it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub differs: Vec<String>,
}

/// `drop-os-disks`: the file names of the OS disks removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Removed {
    /// File names (`os-HEX.vhdx`), not paths.
    pub removed: Vec<String>,
}

/// `prune-images`: the digests (64 lowercase hex digits, without `sha256:`) of the node images
/// removed from the host. Anything else in the list is refused: the driver drops each entry
/// from what it knows to be on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pruned {
    /// The removed images' digests.
    #[serde(deserialize_with = "image_digests")]
    pub removed: Vec<String>,
}

fn image_digests<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    let digests = Vec::<String>::deserialize(deserializer)?;
    if let Some(bad) = digests.iter().find(|d| {
        d.len() != 64
            || !d
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }) {
        return Err(serde::de::Error::custom(format!(
            "`{}` is not an image digest (64 lowercase hex digits)",
            excerpt(bad)
        )));
    }
    Ok(digests)
}

/// `remove-vm`: whether there was anything (VM or directory) to remove.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Purged {
    /// False when neither the VM nor its directory was there.
    pub removed: bool,
}

/// `start-vm`: the VM's state after Start-VM, and its worker process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Started {
    /// Get-VM's `State` as text (`Running`).
    pub state: String,
    /// The VM's vmwp.exe process id; 0 when it was not found.
    pub pid: u32,
}

/// How `stop-vm` stopped the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HowStopped {
    /// It was Off already.
    AlreadyStopped,
    /// The guest shut down before the deadline.
    ShutDown,
    /// The deadline passed and the VM was turned off.
    TurnedOff,
}

/// `stop-vm`'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StopAnswer {
    /// How it stopped.
    pub stopped: HowStopped,
}

/// `status`: a VM as Get-VM sees it; only `exists` when there is no such VM. A VM that exists
/// has a `state` (an answer without one is refused); one that does not has nothing else.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "VmStateWire")]
pub struct VmState {
    /// Whether the VM is there.
    pub exists: bool,
    /// `State` as text (`Running`, `Off`, ...).
    pub state: Option<String>,
    /// `Status` (`Operating normally`).
    pub status: Option<String>,
    /// Seconds since it started: finite and not negative.
    pub uptime: Option<f64>,
    /// The VM's vmwp.exe process id; 0 when it was not found.
    pub pid: Option<u32>,
    /// `Heartbeat` as text (`OkApplicationsHealthy`...), null without the integration service.
    pub heartbeat: Option<String>,
}

/// [`VmState`] as the JSON holds it, before the check that `exists` and `state` agree.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct VmStateWire {
    exists: bool,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default, deserialize_with = "uptime")]
    uptime: Option<f64>,
    #[serde(default)]
    pid: Option<u32>,
    #[serde(default)]
    heartbeat: Option<String>,
}

impl TryFrom<VmStateWire> for VmState {
    type Error = String;

    fn try_from(wire: VmStateWire) -> Result<VmState, String> {
        let others = wire.status.is_some()
            || wire.uptime.is_some()
            || wire.pid.is_some()
            || wire.heartbeat.is_some();
        match (wire.exists, wire.state.is_some()) {
            (true, false) => return Err("a VM that exists has no state".to_owned()),
            (false, true) => return Err("a VM that does not exist has a state".to_owned()),
            (false, false) if others => {
                return Err("a VM that does not exist has status fields".to_owned());
            }
            _ => {}
        }
        Ok(VmState {
            exists: wire.exists,
            state: wire.state,
            status: wire.status,
            uptime: wire.uptime,
            pid: wire.pid,
            heartbeat: wire.heartbeat,
        })
    }
}

fn uptime<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<f64>, D::Error> {
    let value = Option::<f64>::deserialize(deserializer)?;
    match value {
        Some(seconds) if !seconds.is_finite() || seconds < 0.0 => Err(serde::de::Error::custom(
            format!("uptime {seconds} is not a number of seconds"),
        )),
        _ => Ok(value),
    }
}

/// `beacon`: the VM's KVP guest exchange items, each the CIM-XML of one
/// `Msvm_KvpExchangeDataItem` (read with [`kvp_items`] / [`kvp_value`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BeaconAnswer {
    /// Whether the VM is there.
    pub exists: bool,
    /// Whether it runs (no items otherwise).
    pub running: bool,
    /// The items' CIM-XML texts.
    pub items: Vec<String>,
}

/// The `Name` and `Data` of each `Msvm_KvpExchangeDataItem` INSTANCE in `xml` (one or more
/// INSTANCE elements, whitespace around them). The structure is strict: INSTANCE holds only
/// PROPERTY elements, a PROPERTY holds at most one VALUE, a VALUE holds only text; `Name` and
/// `Data` appear once each (`Name` with a VALUE; `Data` without one is empty). Attribute order
/// and whitespace inside tags are free. Entities `&quot; &lt; &gt; &amp; &apos;` and numeric
/// references (`&#NN;`, `&#xHH;`) are decoded; anything else after `&` is refused.
pub fn kvp_items(xml: &str) -> Result<Vec<(String, String)>, AnswerError> {
    let mut reader = Reader { text: xml, at: 0 };
    let mut items = Vec::new();
    reader.skip_space();
    loop {
        items.push(reader.instance()?);
        reader.skip_space();
        if reader.rest().is_empty() {
            return Ok(items);
        }
    }
}

/// The Data of the item named `name` among a beacon answer's `items`; None when no item that
/// reads as a KVP item has that name (an item that does not read is skipped: it is not the one
/// asked for, or the guest has not written it whole).
pub fn kvp_value(items: &[String], name: &str) -> Option<String> {
    items
        .iter()
        .filter_map(|item| kvp_items(item).ok())
        .flatten()
        .find(|(item_name, _)| item_name == name)
        .map(|(_, data)| data)
}

/// A cursor over CIM-XML text.
struct Reader<'t> {
    text: &'t str,
    at: usize,
}

/// A start tag: its name, attributes (decoded), and whether it closed itself (`/>`).
struct Tag {
    name: String,
    attributes: Vec<(String, String)>,
    empty: bool,
}

impl Reader<'_> {
    fn rest(&self) -> &str {
        self.text.get(self.at..).unwrap_or("")
    }

    fn error(&self, what: impl Into<String>) -> AnswerError {
        AnswerError::ReadKvpItem {
            what: what.into(),
            excerpt: excerpt(self.rest()),
        }
    }

    fn skip_space(&mut self) {
        let rest = self.rest();
        self.at += rest.len() - rest.trim_start().len();
    }

    fn eat(&mut self, literal: &str) -> bool {
        if self.rest().starts_with(literal) {
            self.at += literal.len();
            true
        } else {
            false
        }
    }

    fn name(&mut self) -> Result<String, AnswerError> {
        let rest = self.rest();
        let len = rest
            .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')))
            .unwrap_or(rest.len());
        if len == 0 {
            return Err(self.error("a name was expected"));
        }
        let name = rest[..len].to_owned();
        self.at += len;
        Ok(name)
    }

    /// `<NAME attr="v" ...>` or `.../>`.
    fn start_tag(&mut self) -> Result<Tag, AnswerError> {
        if !self.eat("<") || self.rest().starts_with('/') {
            return Err(self.error("a start tag was expected"));
        }
        let name = self.name()?;
        let mut attributes = Vec::new();
        loop {
            let before = self.at;
            self.skip_space();
            if self.eat("/>") {
                return Ok(Tag {
                    name,
                    attributes,
                    empty: true,
                });
            }
            if self.eat(">") {
                return Ok(Tag {
                    name,
                    attributes,
                    empty: false,
                });
            }
            if self.at == before {
                return Err(self.error("space was expected between attributes"));
            }
            let key = self.name()?;
            self.skip_space();
            if !self.eat("=") {
                return Err(self.error("`=` was expected after an attribute name"));
            }
            self.skip_space();
            let quote = if self.eat("\"") {
                '"'
            } else if self.eat("'") {
                '\''
            } else {
                return Err(self.error("a quoted attribute value was expected"));
            };
            let rest = self.rest();
            let Some(len) = rest.find(quote) else {
                return Err(self.error("an attribute value is not closed"));
            };
            let value = unescape(&rest[..len]).map_err(|what| self.error(what))?;
            if attributes.iter().any(|(k, _)| *k == key) {
                return Err(self.error(format!("attribute {key} appears twice")));
            }
            attributes.push((key, value));
            self.at += len + 1;
        }
    }

    fn end_tag(&mut self, name: &str) -> Result<(), AnswerError> {
        let at = self.at;
        if self.eat("</") && self.eat(name) {
            self.skip_space();
            if self.eat(">") {
                return Ok(());
            }
        }
        self.at = at;
        Err(self.error(format!("</{name}> was expected")))
    }

    /// One INSTANCE of [`KVP_CLASS`]: its Name and Data.
    fn instance(&mut self) -> Result<(String, String), AnswerError> {
        let tag = self.start_tag()?;
        if tag.name != "INSTANCE" {
            return Err(self.error(format!("<INSTANCE> was expected, not <{}>", tag.name)));
        }
        if attribute(&tag, "CLASSNAME") != Some(KVP_CLASS) {
            return Err(self.error(format!("the INSTANCE is not of class {KVP_CLASS}")));
        }
        let mut name = None;
        let mut data = None;
        if !tag.empty {
            loop {
                self.skip_space();
                if self.rest().starts_with("</") {
                    self.end_tag("INSTANCE")?;
                    break;
                }
                let (property, value) = self.property()?;
                let slot = match property.as_str() {
                    "Name" => &mut name,
                    "Data" => &mut data,
                    _ => continue,
                };
                if slot.is_some() {
                    return Err(self.error(format!("property {property} appears twice")));
                }
                *slot = Some(value);
            }
        }
        let Some(Some(name)) = name else {
            return Err(self.error("the item has no Name"));
        };
        Ok((name, data.flatten().unwrap_or_default()))
    }

    /// One PROPERTY: its NAME and its VALUE's text (None without a VALUE).
    fn property(&mut self) -> Result<(String, Option<String>), AnswerError> {
        let tag = self.start_tag()?;
        if tag.name != "PROPERTY" {
            return Err(self.error(format!("<PROPERTY> was expected, not <{}>", tag.name)));
        }
        let Some(name) = attribute(&tag, "NAME").map(str::to_owned) else {
            return Err(self.error("a PROPERTY has no NAME"));
        };
        if tag.empty {
            return Ok((name, None));
        }
        self.skip_space();
        if self.rest().starts_with("</") {
            self.end_tag("PROPERTY")?;
            return Ok((name, None));
        }
        let value = self.start_tag()?;
        if value.name != "VALUE" || !value.attributes.is_empty() {
            return Err(self.error(format!("<VALUE> was expected, not <{}>", value.name)));
        }
        let text = if value.empty {
            String::new()
        } else {
            let rest = self.rest();
            let Some(len) = rest.find('<') else {
                return Err(self.error("a VALUE is not closed"));
            };
            let text = unescape(&rest[..len]).map_err(|what| self.error(what))?;
            self.at += len;
            self.end_tag("VALUE")?;
            text
        };
        self.skip_space();
        self.end_tag("PROPERTY")?;
        Ok((name, Some(text)))
    }
}

fn attribute<'t>(tag: &'t Tag, key: &str) -> Option<&'t str> {
    tag.attributes
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Decodes XML's five entities and numeric character references; refuses anything else after
/// `&`, a reference to no character, and a bare `>` is kept (XML allows it in text).
fn unescape(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp + 1..];
        let Some(semi) = rest.find(';').filter(|&i| i <= 10) else {
            return Err("an `&` starts no entity".to_owned());
        };
        let entity = &rest[..semi];
        let c = match entity {
            "quot" => '"',
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse::<u32>().ok()
                } else {
                    None
                };
                // `+` parses in from_str_radix: an entity is digits only.
                let digits = entity.trim_start_matches("#x").trim_start_matches('#');
                match code.filter(|_| digits.chars().all(|c| c.is_ascii_hexdigit())) {
                    Some(0) | None => return Err(format!("`&{entity};` is not an entity")),
                    Some(code) => char::from_u32(code)
                        .ok_or_else(|| format!("`&{entity};` is no character"))?,
                }
            }
        };
        out.push(c);
        rest = &rest[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod parse_tests;
