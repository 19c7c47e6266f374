//! Prompts (`config_sentence_transformers.json`'s `prompts` and `default_prompt_name`) and
//! the request type that names one.

use std::collections::BTreeMap;

use crate::cache::CacheWeight;
use crate::error::InputError;

/// Which prompt a request is embedded with: a text sentence-transformers prepends to the
/// input before tokenizing it (`"query: "`, `"Represent this sentence for searching
/// relevant passages: "`), as `encode(..., prompt_name=...)` or `encode(..., prompt=...)`
/// does.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Prompt {
    /// The embedder's default: [`EmbedderOptions::prompt_name`], else the model's
    /// `default_prompt_name`, else no prompt — what `encode` does when given neither.
    ///
    /// [`EmbedderOptions::prompt_name`]: crate::models::text::TextOptions::prompt_name
    #[default]
    Default,
    /// One of the model's `prompts`, by name; a name the model does not have is refused
    /// with [`InputError::UnknownPrompt`], which lists the names it has.
    Named(String),
    /// This text, prepended as it is (`""`: no prompt, even when the model has a default).
    Text(String),
}

/// One text to embed and the prompt to embed it with: the input of a
/// [`SentenceEmbedder<EmbedRequest>`](super::SentenceEmbedder) (made by
/// [`SentenceEmbedder::with_requests`](super::SentenceEmbedder::with_requests)).
///
/// A `String` converts into a request with the default prompt, so code that embeds plain
/// texts reads the same. Two requests are the same cache key only when both the text and
/// the prompt are equal.
///
/// ```
/// use modelhost::models::sentence::{EmbedRequest, Prompt};
///
/// let query = EmbedRequest::new("how do cats sleep?").with_prompt_name("query");
/// assert_eq!(query.prompt, Prompt::Named("query".into()));
/// let plain: EmbedRequest = "A cat sleeps on the mat.".into();
/// assert_eq!(plain.prompt, Prompt::Default);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct EmbedRequest {
    /// The text.
    pub text: String,
    /// The prompt prepended to it.
    pub prompt: Prompt,
}

impl EmbedRequest {
    /// A request for `text` with the default prompt.
    pub fn new(text: impl Into<String>) -> Self {
        EmbedRequest {
            text: text.into(),
            prompt: Prompt::Default,
        }
    }

    /// The same request with the model's prompt `name` (sentence-transformers'
    /// `prompt_name`).
    pub fn with_prompt_name(mut self, name: impl Into<String>) -> Self {
        self.prompt = Prompt::Named(name.into());
        self
    }

    /// The same request with `prompt` prepended as it is (sentence-transformers'
    /// `prompt`); `""` embeds the text without any prompt.
    pub fn with_prompt(mut self, prompt: impl Into<String>) -> Self {
        self.prompt = Prompt::Text(prompt.into());
        self
    }
}

impl From<String> for EmbedRequest {
    fn from(text: String) -> Self {
        EmbedRequest::new(text)
    }
}

impl From<&str> for EmbedRequest {
    fn from(text: &str) -> Self {
        EmbedRequest::new(text)
    }
}

/// A request used as a cache key counts its text and its prompt against the cache's
/// byte bound.
impl CacheWeight for EmbedRequest {
    fn cache_weight(&self) -> usize {
        let prompt = match &self.prompt {
            Prompt::Default => 0,
            Prompt::Named(s) | Prompt::Text(s) => s.len(),
        };
        std::mem::size_of::<Self>() + self.text.len() + prompt
    }
}

/// The model's prompts and the one used when a request names none.
#[derive(Debug, Clone, Default)]
pub(super) struct Prompts {
    /// Name → prompt text, from `config_sentence_transformers.json`.
    pub(super) by_name: BTreeMap<String, String>,
    /// The prompt text for [`Prompt::Default`] (empty: none).
    pub(super) default: String,
    /// Its name, when it is one of `by_name`.
    pub(super) default_name: Option<String>,
}

impl Prompts {
    /// The text to prepend for `prompt` (empty: none).
    pub(super) fn resolve<'p>(&'p self, prompt: &'p Prompt) -> Result<&'p str, InputError> {
        match prompt {
            Prompt::Default => Ok(&self.default),
            Prompt::Text(text) => Ok(text),
            Prompt::Named(name) => self.by_name.get(name).map(String::as_str).ok_or_else(|| {
                InputError::UnknownPrompt {
                    name: name.clone(),
                    known: self.names(),
                }
            }),
        }
    }

    /// The prompt names, sorted.
    pub(super) fn names(&self) -> Vec<String> {
        self.by_name.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prompts_resolve_by_name_default_or_text_and_unknown_names_list_the_known() {
        let prompts = Prompts {
            by_name: [("query", "query: "), ("doc", "")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            default: "query: ".into(),
            default_name: Some("query".into()),
        };
        assert_eq!(prompts.resolve(&Prompt::Default), Ok("query: "));
        assert_eq!(prompts.resolve(&Prompt::Named("doc".into())), Ok(""));
        assert_eq!(prompts.resolve(&Prompt::Text("x ".into())), Ok("x "));
        let err = prompts
            .resolve(&Prompt::Named("passage".into()))
            .unwrap_err();
        assert_eq!(
            err,
            InputError::UnknownPrompt {
                name: "passage".into(),
                known: vec!["doc".into(), "query".into()]
            }
        );
        assert!(err.to_string().contains("its prompts are: doc, query"));
    }

    #[test]
    fn requests_differ_as_cache_keys_by_prompt() {
        let a = EmbedRequest::new("t");
        let b = EmbedRequest::new("t").with_prompt_name("query");
        assert_ne!(a, b);
        assert_eq!(a, EmbedRequest::from("t".to_string()));
        assert!(b.cache_weight() > a.cache_weight());
    }
}
