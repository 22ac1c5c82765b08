//! Parsers of the public preference formats, one JSON record at a time.
//!
//! Each parser turns one record into a [`PreferencePair`], a [`ListwiseRow`] or an
//! [`UnpairedRow`], or says in one line why it cannot (the field and what was wrong with it). Validation of the result (empty
//! completion, chosen == rejected) happens afterwards, the same for every format.

use serde_json::Value;

use crate::row::{Content, ListwiseRow, Message, PreferencePair, Ranking, UnpairedRow};

/// The input formats `burnish convert --from` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputFormat {
    /// TRL: `prompt` / `chosen` / `rejected`, strings or message lists; optional `id`, `margin`.
    /// Without `prompt`, chosen and rejected are whole conversations and their shared leading
    /// messages become the prompt (TRL's "implicit prompt").
    Trl,
    /// Anthropic HH-RLHF: `chosen` / `rejected` full transcripts ("\n\nHuman: ...\n\nAssistant: ...").
    HhRlhf,
    /// LLaMA-Factory ShareGPT style: `conversations` (from/value turns), `chosen`, `rejected`
    /// (the assistant's turns; a human turn there rejects the record), optional `system`.
    ShareGpt,
    /// OpenAI-style message lists: `chosen_messages` / `rejected_messages`, content strings or typed parts.
    OpenAi,
    /// UltraFeedback: `prompt` (or `instruction`) and `completions` with a response and a rating each.
    UltraFeedback,
    /// Rankings: `prompt`, `responses`, `ranks` (0 = best, equal = tie).
    Ranking,
    /// Per-response scores (ratings, Elo): `prompt`, `responses`, `scores` (higher = better).
    Scores,
    /// Unpaired preferences (KTO): TRL's `prompt` / `completion` / `label` (strings or message
    /// lists), or LLaMA-Factory's `messages` (or ShareGPT `conversations`, optional `system`)
    /// whose last turn, an assistant's, is the completion and the earlier turns the prompt, with
    /// `label` (or `kto_tag`). A label is a boolean, or 0/1; anything else rejects the record.
    Kto,
}

impl InputFormat {
    /// All formats with their command-line names.
    pub const ALL: [(&'static str, InputFormat); 8] = [
        ("trl", InputFormat::Trl),
        ("hh-rlhf", InputFormat::HhRlhf),
        ("sharegpt", InputFormat::ShareGpt),
        ("openai", InputFormat::OpenAi),
        ("ultrafeedback", InputFormat::UltraFeedback),
        ("ranking", InputFormat::Ranking),
        ("scores", InputFormat::Scores),
        ("kto", InputFormat::Kto),
    ];

    /// True for formats whose records are listwise (several ranked or scored responses).
    pub fn is_listwise(self) -> bool {
        matches!(
            self,
            InputFormat::UltraFeedback | InputFormat::Ranking | InputFormat::Scores
        )
    }
}

impl std::str::FromStr for InputFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.to_ascii_lowercase();
        let alias = match s.as_str() {
            "hh" | "anthropic" => "hh-rlhf",
            "llamafactory" | "llama-factory" => "sharegpt",
            "elo" => "scores",
            "rankings" => "ranking",
            "unpaired" => "kto",
            other => other,
        };
        InputFormat::ALL
            .iter()
            .find(|(n, _)| *n == alias)
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                let names: Vec<&str> = InputFormat::ALL.iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown format `{s}` (expected one of: {})",
                    names.join(", ")
                )
            })
    }
}

/// One parsed record.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    /// A pairwise row.
    Pair(PreferencePair),
    /// A listwise row.
    List(ListwiseRow),
    /// An unpaired (KTO) row.
    Unpaired(UnpairedRow),
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value, String> {
    let Value::Object(o) = v else {
        return Err(format!(
            "the record is {}, expected an object",
            type_name(v)
        ));
    };
    match o.get(key) {
        None | Some(Value::Null) => Err(format!("missing field `{key}`")),
        Some(x) => Ok(x),
    }
}

fn opt_field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

fn string(v: &Value, what: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        other => Err(format!("{what} is {}, expected a string", type_name(other))),
    }
}

fn number(v: &Value, what: &str) -> Result<f64, String> {
    v.as_f64()
        .ok_or_else(|| format!("{what} is {}, expected a number", type_name(v)))
}

fn id_of(v: &Value) -> Result<Option<String>, String> {
    match opt_field(v, "id") {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(format!(
            "field `id` is {}, expected a string or a number",
            type_name(other)
        )),
    }
}

/// Message text: a string, or a list of typed parts of which only text parts are accepted.
fn message_text(v: &Value, what: &str) -> Result<String, String> {
    match v {
        Value::String(s) => Ok(s.clone()),
        Value::Array(parts) => {
            let mut out = String::new();
            for (i, p) in parts.iter().enumerate() {
                let kind = p.get("type").and_then(Value::as_str).unwrap_or("text");
                if kind != "text" {
                    return Err(format!(
                        "{what} part {i} has type `{kind}`; only text parts are supported"
                    ));
                }
                let text = p
                    .get("text")
                    .or_else(|| p.get("value"))
                    .ok_or_else(|| format!("{what} part {i} has no `text` or `value`"))?;
                out.push_str(&string(text, &format!("{what} part {i}"))?);
            }
            Ok(out)
        }
        other => Err(format!(
            "{what} is {}, expected a string or a list of parts",
            type_name(other)
        )),
    }
}

fn sharegpt_role(from: &str) -> Result<&'static str, String> {
    Ok(match from {
        "human" | "user" => "user",
        "gpt" | "assistant" | "bot" | "model" => "assistant",
        "system" => "system",
        other => {
            return Err(format!(
                "turn role `{other}` is not supported (human, gpt, system)"
            ));
        }
    })
}

/// One message: `{role, content}` or ShareGPT's `{from, value}`.
fn message(v: &Value, what: &str) -> Result<Message, String> {
    if !v.is_object() {
        return Err(format!(
            "{what} is {}, expected a message object",
            type_name(v)
        ));
    }
    if let Some(from) = opt_field(v, "from") {
        let role = sharegpt_role(&string(from, &format!("{what} `from`"))?)?;
        let value = opt_field(v, "value").ok_or_else(|| format!("{what} has no `value`"))?;
        return Ok(Message::new(
            role,
            string(value, &format!("{what} `value`"))?,
        ));
    }
    let role = string(
        field(v, "role").map_err(|e| format!("{what}: {e}"))?,
        &format!("{what} `role`"),
    )?;
    let content = field(v, "content").map_err(|e| format!("{what}: {e}"))?;
    Ok(Message::new(
        role,
        message_text(content, &format!("{what} `content`"))?,
    ))
}

fn messages(v: &Value, what: &str) -> Result<Vec<Message>, String> {
    match v {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, m)| message(m, &format!("{what}[{i}]")))
            .collect(),
        other => Err(format!(
            "`{what}` is {}, expected a list of messages",
            type_name(other)
        )),
    }
}

/// A string (standard) or a message list (conversational).
fn content(v: &Value, what: &str) -> Result<Content, String> {
    match v {
        Value::String(s) => Ok(Content::Text(s.clone())),
        Value::Array(_) => Ok(Content::Messages(messages(v, what)?)),
        other => Err(format!(
            "field `{what}` is {}, expected a string or a list of messages",
            type_name(other)
        )),
    }
}

/// Prompt messages, then the chosen and rejected remainders.
type PromptAndCompletions = (Vec<Message>, Vec<Message>, Vec<Message>);

/// Splits two whole conversations into their shared leading messages and the two remainders.
fn split_shared_prefix(
    chosen: Vec<Message>,
    rejected: Vec<Message>,
) -> Result<PromptAndCompletions, String> {
    let n = chosen
        .iter()
        .zip(&rejected)
        .take_while(|(a, b)| a == b)
        .count();
    if n == 0 {
        return Err("chosen and rejected share no leading message, so there is no prompt".into());
    }
    let prompt = chosen[..n].to_vec();
    Ok((prompt, chosen[n..].to_vec(), rejected[n..].to_vec()))
}

fn trl(v: &Value) -> Result<Parsed, String> {
    let chosen = content(field(v, "chosen")?, "chosen")?;
    let rejected = content(field(v, "rejected")?, "rejected")?;
    let (prompt, chosen, rejected) = match opt_field(v, "prompt") {
        Some(p) => (content(p, "prompt")?, chosen, rejected),
        None => match (chosen, rejected) {
            (Content::Messages(c), Content::Messages(r)) => {
                let (p, c, r) = split_shared_prefix(c, r)?;
                (
                    Content::Messages(p),
                    Content::Messages(c),
                    Content::Messages(r),
                )
            }
            _ => return Err("missing field `prompt`".into()),
        },
    };
    let margin = opt_field(v, "margin")
        .map(|m| number(m, "field `margin`"))
        .transpose()?;
    Ok(Parsed::Pair(PreferencePair {
        id: id_of(v)?,
        prompt,
        chosen,
        rejected,
        margin: margin.map(|m| m as f32),
        ref_chosen_logp: None,
        ref_rejected_logp: None,
    }))
}

/// Splits HH-RLHF transcripts: the prompt is their longest shared prefix, cut back to just after
/// its last "\n\nAssistant:".
pub fn split_hh(chosen: &str, rejected: &str) -> Result<(String, String, String), String> {
    const TAG: &str = "\n\nAssistant:";
    let mut shared = chosen
        .bytes()
        .zip(rejected.bytes())
        .take_while(|(a, b)| a == b)
        .count();
    while !chosen.is_char_boundary(shared) {
        shared -= 1;
    }
    let cut = chosen[..shared]
        .rfind(TAG)
        .ok_or("chosen and rejected share no prefix ending in \"\\n\\nAssistant:\"")?
        + TAG.len();
    Ok((
        chosen[..cut].to_owned(),
        chosen[cut..].to_owned(),
        rejected[cut..].to_owned(),
    ))
}

fn hh(v: &Value) -> Result<Parsed, String> {
    let chosen = string(field(v, "chosen")?, "field `chosen`")?;
    let rejected = string(field(v, "rejected")?, "field `rejected`")?;
    let (prompt, c, r) = split_hh(&chosen, &rejected)?;
    let mut pair = PreferencePair::new(prompt, c, r);
    pair.id = id_of(v)?;
    Ok(Parsed::Pair(pair))
}

/// A ShareGPT answer: one turn object, a list of turns, or a bare string (an assistant turn).
/// Every turn must be the assistant's: a human (or system) turn stored as an answer would teach
/// the model to speak the user's part.
fn sharegpt_answer(v: &Value, what: &str) -> Result<Vec<Message>, String> {
    let turns = match v {
        Value::String(s) => return Ok(vec![Message::new("assistant", s.clone())]),
        Value::Object(_) => vec![message(v, what)?],
        Value::Array(_) => messages(v, what)?,
        other => {
            return Err(format!(
                "field `{what}` is {}, expected a turn",
                type_name(other)
            ));
        }
    };
    if let Some((i, turn)) = turns
        .iter()
        .enumerate()
        .find(|(_, t)| t.role != "assistant")
    {
        let at = if v.is_array() {
            format!("`{what}[{i}]`")
        } else {
            format!("`{what}`")
        };
        return Err(format!(
            "{at} is a `{}` turn; an answer must be the assistant's (from: gpt)",
            turn.role
        ));
    }
    Ok(turns)
}

fn sharegpt(v: &Value) -> Result<Parsed, String> {
    let mut prompt = Vec::new();
    if let Some(system) = opt_field(v, "system") {
        let s = string(system, "field `system`")?;
        if !s.is_empty() {
            prompt.push(Message::new("system", s));
        }
    }
    prompt.extend(messages(field(v, "conversations")?, "conversations")?);
    if prompt.last().is_none_or(|m| m.role == "assistant") {
        return Err("`conversations` must end with a human turn".into());
    }
    let chosen = sharegpt_answer(field(v, "chosen")?, "chosen")?;
    let rejected = sharegpt_answer(field(v, "rejected")?, "rejected")?;
    let mut pair = PreferencePair::new(prompt, chosen, rejected);
    pair.id = id_of(v)?;
    Ok(Parsed::Pair(pair))
}

fn openai(v: &Value) -> Result<Parsed, String> {
    let chosen = messages(field(v, "chosen_messages")?, "chosen_messages")?;
    let rejected = messages(field(v, "rejected_messages")?, "rejected_messages")?;
    let (p, c, r) = split_shared_prefix(chosen, rejected)?;
    let mut pair = PreferencePair::new(p, c, r);
    pair.id = id_of(v)?;
    Ok(Parsed::Pair(pair))
}

fn responses(v: &Value) -> Result<Vec<Content>, String> {
    match field(v, "responses")? {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, r)| content(r, &format!("responses[{i}]")))
            .collect(),
        other => Err(format!(
            "field `responses` is {}, expected a list",
            type_name(other)
        )),
    }
}

fn number_list(v: &Value, key: &str) -> Result<Vec<f64>, String> {
    match field(v, key)? {
        Value::Array(items) => items
            .iter()
            .enumerate()
            .map(|(i, x)| number(x, &format!("{key}[{i}]")))
            .collect(),
        other => Err(format!(
            "field `{key}` is {}, expected a list of numbers",
            type_name(other)
        )),
    }
}

fn ultrafeedback(v: &Value) -> Result<Parsed, String> {
    let prompt = match opt_field(v, "prompt") {
        Some(p) => content(p, "prompt")?,
        None => content(
            field(v, "instruction").map_err(|_| "missing field `prompt` (or `instruction`)")?,
            "instruction",
        )?,
    };
    let (responses, scores) = if opt_field(v, "completions").is_some() {
        let Value::Array(items) = field(v, "completions")? else {
            return Err("field `completions` is not a list".into());
        };
        let mut rs = Vec::new();
        let mut ss = Vec::new();
        for (i, c) in items.iter().enumerate() {
            let what = format!("completions[{i}]");
            let text = ["response", "text", "content"]
                .iter()
                .find_map(|k| opt_field(c, k))
                .ok_or_else(|| format!("{what} has no `response`"))?;
            rs.push(content(text, &what)?);
            let score = ["overall_score", "score", "rating"]
                .iter()
                .find_map(|k| opt_field(c, k))
                .ok_or_else(|| format!("{what} has no `overall_score`"))?;
            ss.push(number(score, &format!("{what} score"))?);
        }
        (rs, ss)
    } else {
        (responses(v)?, number_list(v, "scores")?)
    };
    Ok(Parsed::List(ListwiseRow {
        id: id_of(v)?,
        prompt,
        responses,
        ranking: Ranking::Scores(scores),
        ref_logps: None,
    }))
}

fn ranking(v: &Value) -> Result<Parsed, String> {
    let prompt = content(field(v, "prompt")?, "prompt")?;
    let ranks = number_list(v, "ranks")?;
    let mut ints = Vec::with_capacity(ranks.len());
    for (i, r) in ranks.iter().enumerate() {
        if r.fract() != 0.0 || *r < 0.0 {
            return Err(format!("ranks[{i}] is {r}, expected a whole number >= 0"));
        }
        ints.push(*r as i64);
    }
    Ok(Parsed::List(ListwiseRow {
        id: id_of(v)?,
        prompt,
        responses: responses(v)?,
        ranking: Ranking::Ranks(ints),
        ref_logps: None,
    }))
}

fn scores(v: &Value) -> Result<Parsed, String> {
    let prompt = content(field(v, "prompt")?, "prompt")?;
    let scores = number_list(v, "scores")?;
    Ok(Parsed::List(ListwiseRow {
        id: id_of(v)?,
        prompt,
        responses: responses(v)?,
        ranking: Ranking::Scores(scores),
        ref_logps: None,
    }))
}

/// A KTO label: `label` or LLaMA-Factory's `kto_tag`, a boolean or 0/1.
fn kto_label(v: &Value) -> Result<bool, String> {
    let (key, x) = ["label", "kto_tag"]
        .iter()
        .find_map(|k| opt_field(v, k).map(|x| (*k, x)))
        .ok_or("missing field `label`")?;
    match x {
        Value::Bool(b) => Ok(*b),
        Value::Number(n) if n.as_f64() == Some(1.0) => Ok(true),
        Value::Number(n) if n.as_f64() == Some(0.0) => Ok(false),
        Value::Number(n) => Err(format!(
            "field `{key}` is {n}, expected a boolean (true/false or 0/1)"
        )),
        other => Err(format!(
            "field `{key}` is {}, expected a boolean (true/false or 0/1)",
            type_name(other)
        )),
    }
}

fn kto(v: &Value) -> Result<Parsed, String> {
    let (prompt, completion) = if opt_field(v, "completion").is_some() {
        let completion = content(field(v, "completion")?, "completion")?;
        let prompt = content(field(v, "prompt")?, "prompt")?;
        (prompt, completion)
    } else if let Some((key, turns)) = ["messages", "conversations"]
        .iter()
        .find_map(|k| opt_field(v, k).map(|t| (*k, t)))
    {
        let mut prompt = Vec::new();
        if let Some(system) = opt_field(v, "system") {
            let s = string(system, "field `system`")?;
            if !s.is_empty() {
                prompt.push(Message::new("system", s));
            }
        }
        prompt.extend(messages(turns, key)?);
        let last = prompt.pop().ok_or_else(|| format!("`{key}` is empty"))?;
        if last.role != "assistant" {
            return Err(format!(
                "the last turn of `{key}` is `{}`, expected an assistant turn (the completion)",
                last.role
            ));
        }
        if prompt.iter().all(|m| m.role == "system") {
            return Err(format!(
                "`{key}` has no user turn before the completion, so there is no prompt"
            ));
        }
        (Content::Messages(prompt), Content::Messages(vec![last]))
    } else {
        return Err(
            "missing field `completion` (TRL) or `messages` / `conversations` (LLaMA-Factory)"
                .into(),
        );
    };
    Ok(Parsed::Unpaired(UnpairedRow {
        id: id_of(v)?,
        prompt,
        completion,
        label: kto_label(v)?,
        ref_logp: None,
        ref_kl_logp: None,
    }))
}

/// Parses one record of the given format.
pub fn parse_record(format: InputFormat, v: &Value) -> Result<Parsed, String> {
    match format {
        InputFormat::Trl => trl(v),
        InputFormat::HhRlhf => hh(v),
        InputFormat::ShareGpt => sharegpt(v),
        InputFormat::OpenAi => openai(v),
        InputFormat::UltraFeedback => ultrafeedback(v),
        InputFormat::Ranking => ranking(v),
        InputFormat::Scores => scores(v),
        InputFormat::Kto => kto(v),
    }
}
