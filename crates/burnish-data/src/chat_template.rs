//! Hugging Face chat templates, rendered with minijinja.
//!
//! A tokenizer's `tokenizer_config.json` carries its chat template as Jinja source. Hugging Face
//! renders it with Python's jinja2 (`trim_blocks` and `lstrip_blocks` on) and templates call
//! Python string methods (`startswith`, `split`, `strip`), so the environment here turns on the
//! same whitespace rules and minijinja-contrib's Python compatibility, and defines
//! `raise_exception` as templates expect.
//!
//! Prompt and completion are split as TRL splits them: the prompt is the prompt messages rendered
//! with the generation prompt added; the completion is what rendering prompt + completion
//! messages (without generation prompt) adds after that prompt text.

use std::path::{Path, PathBuf};

use minijinja::{Environment, ErrorKind, context};
use serde_json::Value;

use crate::error::{DataError, EncodeError, Result};
use crate::row::Message;

/// A compiled chat template with the special tokens it may refer to.
pub struct ChatTemplate {
    env: Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

/// A special token in tokenizer_config.json: a string, or an object with a `content` field.
fn special_token(config: &Value, key: &str) -> Option<String> {
    match config.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("content").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

impl ChatTemplate {
    /// Compiles `source` with the given special tokens (exposed as `bos_token` / `eos_token`).
    pub fn new(
        source: &str,
        bos_token: &str,
        eos_token: &str,
    ) -> std::result::Result<Self, String> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_template_owned("chat", source.to_owned())
            .map_err(|e| e.to_string())?;
        Ok(ChatTemplate {
            env,
            bos_token: bos_token.to_owned(),
            eos_token: eos_token.to_owned(),
        })
    }

    /// Reads the template and special tokens from a `tokenizer_config.json`.
    ///
    /// When the config holds several named templates, the one named `default` is used.
    pub fn from_tokenizer_config(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| DataError::io(path, e))?;
        Self::from_tokenizer_config_str(&text, path)
    }

    /// As [`ChatTemplate::from_tokenizer_config`], from the JSON text; `origin` names it in errors.
    pub fn from_tokenizer_config_str(json: &str, origin: impl Into<PathBuf>) -> Result<Self> {
        let origin = origin.into();
        let err = |reason: String| DataError::Template {
            path: origin.clone(),
            reason,
        };
        let config: Value =
            serde_json::from_str(json).map_err(|e| err(format!("invalid JSON: {e}")))?;
        let source = match config.get("chat_template") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(named)) => named
                .iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some("default"))
                .and_then(|t| t.get("template")?.as_str())
                .ok_or_else(|| err("no template named `default` in `chat_template`".into()))?
                .to_owned(),
            _ => return Err(err("no `chat_template` key".into())),
        };
        let bos = special_token(&config, "bos_token").unwrap_or_default();
        let eos = special_token(&config, "eos_token").unwrap_or_default();
        Self::new(&source, &bos, &eos).map_err(err)
    }

    /// The `eos_token` string the template sees.
    pub fn eos_token(&self) -> &str {
        &self.eos_token
    }

    /// The `bos_token` string the template sees.
    pub fn bos_token(&self) -> &str {
        &self.bos_token
    }

    /// Renders a conversation; `add_generation_prompt` appends the opening of an assistant turn.
    pub fn render(
        &self,
        messages: &[Message],
        add_generation_prompt: bool,
    ) -> std::result::Result<String, EncodeError> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| EncodeError::Template(e.to_string()))?;
        tmpl.render(context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos_token,
            eos_token => &self.eos_token,
        })
        .map_err(|e| EncodeError::Template(format!("{e:#}")))
    }

    /// Renders the prompt (with generation prompt) and the completion that follows it.
    ///
    /// Fails when rendering prompt + completion does not start with the rendered prompt (a
    /// template that rewrites earlier turns), since no token boundary would then be right.
    pub fn render_prompt_completion(
        &self,
        prompt: &[Message],
        completion: &[Message],
    ) -> std::result::Result<(String, String), EncodeError> {
        let prompt_text = self.render(prompt, true)?;
        let mut all = Vec::with_capacity(prompt.len() + completion.len());
        all.extend_from_slice(prompt);
        all.extend_from_slice(completion);
        let full = self.render(&all, false)?;
        match full.strip_prefix(&prompt_text) {
            Some(rest) => Ok((prompt_text, rest.to_owned())),
            None => Err(EncodeError::Template(
                "rendering prompt + completion does not start with the rendered prompt".into(),
            )),
        }
    }
}
